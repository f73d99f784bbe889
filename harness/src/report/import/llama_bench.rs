//! llama.cpp's `llama-bench -o json` (an array of tests) or `-o jsonl` (a test per line). A test is one row: `pp64`
//! (a 64-token prompt pass, `n_gen` 0), `tg32` (32 tokens generated one at a time, `n_prompt` 0) or `pp64+tg32`
//! (`-pg`: both, one request end to end); each of its repetitions is a repeat (`samples_ns`, `samples_ts`), so two
//! runs compare with their spread.
//!
//! llama-bench drives llama.cpp directly, one sequence, no server and no scheduler, so only some of vLLM's figures
//! exist, and they mean "one request alone":
//! - every test: `total_token_throughput` = `avg_ts` ((n_prompt + n_gen) tokens / s); `duration` = the samples' sum;
//! - `tg`: `output_throughput` = `avg_ts`; `median_tpot_ms` / `mean_tpot_ms` = a sample's time / n_gen (decode time per
//!   token of a lone sequence, from the first token: close to TPOT, without a server's batching or queueing);
//! - `pp`: `median_ttft_ms` / `mean_ttft_ms` = the prompt pass's time (TTFT of a lone request, without sampling,
//!   tokenization or a network);
//! - `pp+tg`: `median_e2el_ms` / `mean_e2el_ms` = a sample's time (a lone request end to end).
//!
//! Times are nanoseconds in the file, milliseconds here.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{Fields, Format, ImportedRun, row, stem};
use crate::report::{Repeat, Results, WorkloadMeta};

/// Parameters that name a row when they differ between the file's tests.
const VARYING: [&str; 8] =
    ["model_filename", "n_threads", "n_batch", "n_ubatch", "type_k", "type_v", "flash_attn", "n_gpu_layers"];

/// Settings of a test kept on its row (what changes llama.cpp's speed, and which build and machine measured it).
const SETTINGS: [&str; 16] = [
    "model_filename",
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_type",
    "n_threads",
    "n_batch",
    "n_ubatch",
    "type_k",
    "type_v",
    "flash_attn",
    "n_gpu_layers",
    "n_depth",
    "test_time",
];

pub(super) fn read(v: &Value, file: &Path) -> Result<Results, String> {
    let one;
    let tests = match v {
        Value::Array(tests) => tests,
        // `-o jsonl` with a single test.
        Value::Object(_) => {
            one = vec![v.clone()];
            &one
        }
        _ => return Err("expected an array of llama-bench tests".into()),
    };
    if tests.is_empty() {
        return Err("no llama-bench tests in the file".into());
    }
    // Parameters that differ between the tests (several -m models, -t thread counts, ...) name the rows apart.
    let varying: Vec<&str> = VARYING
        .iter()
        .copied()
        .filter(|k| {
            let first = tests[0].get(*k);
            tests.iter().any(|t| t.get(*k) != first)
        })
        .collect();
    let mut rows = Vec::new();
    let mut model = String::new();
    for (i, t) in tests.iter().enumerate() {
        let f = Fields::new(t, format!("[{i}]"));
        let n_prompt = count(&f, "n_prompt")?;
        let n_gen = count(&f, "n_gen")?;
        if n_prompt + n_gen == 0 {
            return Err(format!("test [{i}]: n_prompt and n_gen are both 0"));
        }
        let avg_ns = f.f64("avg_ns")?;
        let avg_ts = f.f64("avg_ts")?;
        let samples_ns = numbers(&f, "samples_ns")?;
        let samples_ts = numbers(&f, "samples_ts")?;
        if samples_ns.len() != samples_ts.len() {
            return Err(format!("test [{i}]: {} samples_ns but {} samples_ts", samples_ns.len(), samples_ts.len()));
        }
        let name = match (n_prompt, n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        let depth = f.opt_f64("n_depth")?.unwrap_or(0.0);
        let mut name = if depth > 0.0 { format!("{name} @ d{depth}") } else { name };
        for key in &varying {
            let value = f.text(key).unwrap_or_default();
            let value = if *key == "model_filename" { stem(Path::new(&value)) } else { value };
            name.push_str(&format!(" {key}={value}"));
        }
        let figures = |ns: f64, ts: f64| -> BTreeMap<String, f64> {
            let ms = ns / 1e6;
            let mut m = BTreeMap::from([("total_token_throughput".to_owned(), ts)]);
            if n_prompt == 0 {
                m.insert("output_throughput".into(), ts);
                m.insert("median_tpot_ms".into(), ms / n_gen as f64);
            } else if n_gen == 0 {
                m.insert("median_ttft_ms".into(), ms);
            } else {
                m.insert("median_e2el_ms".into(), ms);
            }
            m
        };
        let repeats: Vec<Repeat> = samples_ns
            .iter()
            .zip(&samples_ts)
            .map(|(&ns, &ts)| Repeat {
                metrics: figures(ns, ts),
                steps: 0,
                preemptions: 0,
                prefix_hit_tokens: 0,
                output_digest: String::new(),
            })
            .collect();
        let mut metrics = figures(avg_ns, avg_ts);
        // Medians over the samples where there are samples (the file's avg_* are means).
        for key in metrics.clone().keys() {
            let mut v: Vec<f64> = repeats.iter().filter_map(|r| r.metrics.get(key).copied()).collect();
            if !v.is_empty() {
                v.sort_by(f64::total_cmp);
                metrics.insert(key.clone(), crate::metrics::percentile(&v, 50.0));
            }
        }
        for (median, mean) in
            [("median_tpot_ms", "mean_tpot_ms"), ("median_ttft_ms", "mean_ttft_ms"), ("median_e2el_ms", "mean_e2el_ms")]
        {
            if metrics.contains_key(median) {
                let per = if median == "median_tpot_ms" { n_gen as f64 } else { 1.0 };
                metrics.insert(mean.into(), avg_ns / 1e6 / per);
            }
        }
        let reps = samples_ns.len().max(1) as f64;
        metrics.insert("completed".into(), reps);
        metrics.insert("failed".into(), 0.0);
        metrics.insert("total_input_tokens".into(), n_prompt as f64 * reps);
        metrics.insert("total_output_tokens".into(), n_gen as f64 * reps);
        metrics.insert(
            "duration".into(),
            if samples_ns.is_empty() { avg_ns / 1e9 } else { samples_ns.iter().sum::<f64>() / 1e9 },
        );
        let mut settings: BTreeMap<String, String> =
            SETTINGS.iter().filter_map(|k| f.text(k).map(|v| ((*k).to_owned(), v))).collect();
        settings.insert("file".into(), file.display().to_string());
        let version = format!(
            "llama.cpp build {} ({})",
            f.text("build_number").unwrap_or_else(|| "?".into()),
            f.opt_str("build_commit")?.unwrap_or("?")
        );
        if model.is_empty() {
            model = f.opt_str("model_filename")?.map_or_else(|| stem(file), |m| stem(Path::new(m)));
        }
        let mut r = row(Format::LlamaBench, format!("llama-bench {name}"), version, "in-process", settings, metrics);
        r.dtype = f.opt_str("model_type")?.and_then(|t| t.split_whitespace().last()).unwrap_or("").to_owned();
        r.device = f.opt_str("backends")?.unwrap_or("").to_owned();
        r.repeats = if repeats.len() > 1 { repeats } else { Vec::new() };
        rows.push(r);
    }
    // Tests that still share a name (they differ in a setting not named, or repeat one): numbered.
    let names: Vec<String> = rows.iter().map(|r| r.runtime.clone()).collect();
    for (i, r) in rows.iter_mut().enumerate() {
        if names.iter().filter(|n| **n == names[i]).count() > 1 {
            r.runtime = format!("{} #{}", names[i], i + 1);
        }
    }
    let workload = WorkloadMeta {
        source: format!("llama-bench ({})", file.display()),
        num_requests: rows.len(),
        warmup: 0,
        sha256: String::new(),
        seed: None,
        mode: "offline".into(),
        request_rate: None,
        burstiness: None,
        max_concurrency: Some(1),
    };
    Ok(ImportedRun {
        file,
        format: Format::LlamaBench,
        created_unix_s: 0,
        model,
        workload,
        percentiles: vec![50.0],
        rows,
    }
    .into_results())
}

/// A non-negative whole number of tokens.
fn count(f: &Fields<'_>, key: &str) -> Result<usize, String> {
    let v = f.f64(key)?;
    if !(v >= 0.0 && v.fract() == 0.0 && v < 1e12) {
        return Err(format!("field `{}` is not a token count: {v}", f.name(key)));
    }
    Ok(v as usize)
}

/// An array of numbers (empty when absent).
fn numbers(f: &Fields<'_>, key: &str) -> Result<Vec<f64>, String> {
    match f.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| x.as_f64().ok_or_else(|| format!("field `{}[{i}]` is not a number: {x}", f.name(key))))
            .collect(),
        Some(other) => Err(format!("field `{}` is not an array: {other}", f.name(key))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_test_alone_and_tests_that_differ_in_threads_are_named_apart() {
        let test = |threads: u32, model: &str| {
            serde_json::json!({"model_filename": model, "n_threads": threads, "n_prompt": 0, "n_gen": 16,
                "avg_ns": 2e8, "avg_ts": 80.0, "samples_ns": [2e8], "samples_ts": [80.0]})
        };
        let one = read(&test(2, "m.gguf"), Path::new("one.jsonl")).unwrap();
        assert_eq!(one.runs[0].runtime, "llama-bench tg16");
        let two = read(&serde_json::json!([test(2, "a/m.gguf"), test(4, "a/m.gguf")]), Path::new("t.json")).unwrap();
        let names: Vec<&str> = two.runs.iter().map(|r| r.runtime.as_str()).collect();
        assert_eq!(names, ["llama-bench tg16 n_threads=2", "llama-bench tg16 n_threads=4"]);
        let models = read(&serde_json::json!([test(2, "a/x.gguf"), test(2, "a/y.gguf")]), Path::new("t.json")).unwrap();
        assert_eq!(models.runs[1].runtime, "llama-bench tg16 model_filename=y");
        assert_eq!(models.runs[1].settings["model_filename"], "a/y.gguf");
    }

    #[test]
    fn bad_tests_name_the_field() {
        let read_str = |s: &str| read(&serde_json::from_str(s).unwrap(), Path::new("lb.json")).unwrap_err();
        assert_eq!(read_str("[]"), "no llama-bench tests in the file");
        assert_eq!(read_str("3"), "expected an array of llama-bench tests");
        assert_eq!(
            read_str(r#"[{"n_prompt": 0, "n_gen": 0, "avg_ns": 1, "avg_ts": 1}]"#),
            "test [0]: n_prompt and n_gen are both 0"
        );
        assert_eq!(
            read_str(r#"[{"n_prompt": -3, "n_gen": 1, "avg_ns": 1, "avg_ts": 1}]"#),
            "field `[0].n_prompt` is not a token count: -3"
        );
        assert_eq!(
            read_str(r#"[{"n_prompt": 1, "n_gen": 0, "avg_ns": 1, "avg_ts": 1, "samples_ns": [1, "x"]}]"#),
            "field `[0].samples_ns[1]` is not a number: \"x\""
        );
    }
}
