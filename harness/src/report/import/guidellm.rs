//! GuideLLM's JSON report (`guidellm run ... --output kind=json,path=report.json`, report `metadata.version` 2;
//! GuideLLM 0.5-0.6's version-1 reports have the same per-benchmark layout). Each benchmark (one strategy: synchronous,
//! concurrent with N streams, constant or poisson at a rate, throughput) is a row. Its distributions
//! (`metrics.<name>.successful.{mean, median, std_dev, max, percentiles.pNN}`) map to vLLM's names:
//!
//! | ours | GuideLLM |
//! |---|---|
//! | `completed`, `failed` | `metrics.request_totals.successful`, `.errored` + `.incomplete` |
//! | `duration` (s) | `duration` (the measured window, without warm-up and cool-down) |
//! | `total_input_tokens`, `total_output_tokens` | `prompt_token_count`, `output_token_count`: `successful.total_sum` |
//! | `request_throughput`, `output_throughput`, `total_token_throughput` | the counts above / `duration`, as vLLM |
//! | `*_ttft_ms` | `time_to_first_token_ms` |
//! | `*_tpot_ms` | `inter_token_latency_ms`, when every request made as many tokens (its per request (latency - TTFT) / (tokens - 1) is vLLM's TPOT, but GuideLLM weights its summary by each request's tokens - 1: with unequal output lengths its median and percentiles are not vLLM's, and TPOT is left out) |
//! | `mean_itl_ms` | `inter_token_latency_ms` mean (token-weighted: the mean of every gap); its median and percentiles are over per-request averages, not gaps, so they are not imported |
//! | `*_e2el_ms` | `request_latency` (seconds) x 1000 |
//!
//! GuideLLM's `time_per_output_token_ms` includes the first token and is not vLLM's TPOT: it is not imported. Its
//! percentiles are nearest-rank (vLLM interpolates); `p50`, `p90`, `p95`, `p99` are taken.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{Fields, Format, ImportedRun, row};
use crate::report::{Results, WorkloadMeta};

/// Percentiles taken from GuideLLM's summaries (`pNN` keys).
const PERCENTILES: [(&str, &str); 4] = [("p50", "50"), ("p90", "90"), ("p95", "95"), ("p99", "99")];

pub(super) fn read(v: &Value, file: &Path) -> Result<Results, String> {
    let top = Fields::new(v, "");
    let Some(Value::Array(benchmarks)) = top.get("benchmarks") else {
        return Err("field `benchmarks` is not an array".into());
    };
    if benchmarks.is_empty() {
        return Err("no benchmarks in the GuideLLM report".into());
    }
    let version = match top.child("metadata") {
        Ok(m) => m.text("guidellm_version").map_or("guidellm".to_owned(), |v| format!("guidellm {v}")),
        Err(_) => "guidellm".to_owned(),
    };
    let mut rows = Vec::new();
    let mut model = String::new();
    let mut strategies = Vec::new();
    let mut created = 0u64;
    for (i, b) in benchmarks.iter().enumerate() {
        let b = Fields::new(b, format!("benchmarks[{i}]"));
        let config = b.child("config")?;
        let strategy = config.child("strategy")?;
        let kind =
            strategy.opt_str("type_")?.ok_or_else(|| format!("field `{}` is missing", strategy.name("type_")))?;
        let label = match (strategy.opt_f64("streams")?, strategy.opt_f64("rate")?) {
            (Some(s), _) => format!("{kind}@{s}"),
            (None, Some(r)) => format!("{kind}@{r}/s"),
            (None, None) => kind.to_owned(),
        };
        strategies.push(label.clone());
        let backend = config.child("backend").ok();
        if model.is_empty() {
            model = backend.as_ref().and_then(|be| be.text("model")).unwrap_or_else(|| "unknown model".into());
        }
        if created == 0 {
            created = b.opt_f64("start_time")?.filter(|t| t.is_finite() && *t > 0.0).map_or(0, |t| t as u64);
        }
        let duration = b.f64("duration")?;
        if !(duration.is_finite() && duration > 0.0) {
            return Err(format!("field `{}` is not a positive duration: {duration}", b.name("duration")));
        }
        let metrics_f = b.child("metrics")?;
        let totals = metrics_f.child("request_totals")?;
        let completed = totals.f64("successful")?;
        let failed = totals.opt_f64("errored")?.unwrap_or(0.0) + totals.opt_f64("incomplete")?.unwrap_or(0.0);
        let sum = |name: &str| -> Result<f64, String> { metrics_f.child(name)?.child("successful")?.f64("total_sum") };
        let (input, output) = (sum("prompt_token_count")?.round(), sum("output_token_count")?.round());
        let mut metrics = BTreeMap::from([
            ("completed".to_owned(), completed),
            ("failed".to_owned(), failed),
            ("duration".to_owned(), duration),
            ("total_input_tokens".to_owned(), input),
            ("total_output_tokens".to_owned(), output),
            ("request_throughput".to_owned(), completed / duration),
            ("output_throughput".to_owned(), output / duration),
            ("total_token_throughput".to_owned(), (input + output) / duration),
        ]);
        // GuideLLM's inter-token summary is token-weighted: it is vLLM's TPOT distribution only when every request
        // made the same number of tokens.
        let output_counts = metrics_f.child("output_token_count")?.child("successful")?;
        let equal_outputs = output_counts.opt_f64("min")? == output_counts.opt_f64("max")?;
        for (ours, theirs, scale, all) in [
            ("ttft", "time_to_first_token_ms", 1.0, true),
            ("tpot", "inter_token_latency_ms", 1.0, true),
            ("itl", "inter_token_latency_ms", 1.0, false),
            ("e2el", "request_latency", 1000.0, true),
        ] {
            if ours == "tpot" && !equal_outputs {
                continue;
            }
            let Ok(dist) = metrics_f.child(theirs) else { continue };
            let s = dist.child("successful")?;
            if s.opt_f64("count")?.unwrap_or(0.0) == 0.0 {
                continue;
            }
            metrics.insert(format!("mean_{ours}_ms"), s.f64("mean")? * scale);
            if !all {
                continue;
            }
            metrics.insert(format!("median_{ours}_ms"), s.f64("median")? * scale);
            metrics.insert(format!("std_{ours}_ms"), s.f64("std_dev")? * scale);
            metrics.insert(format!("max_{ours}_ms"), s.f64("max")? * scale);
            if let Ok(p) = s.child("percentiles") {
                for (theirs, n) in PERCENTILES {
                    if let Some(x) = p.opt_f64(theirs)? {
                        metrics.insert(format!("p{n}_{ours}_ms"), x * scale);
                    }
                }
            }
        }
        let mut settings =
            BTreeMap::from([("strategy".to_owned(), label.clone()), ("file".to_owned(), file.display().to_string())]);
        if let Some(be) = &backend {
            for key in ["target", "model", "request_format", "kind"] {
                if let Some(v) = be.text(key) {
                    settings.insert(format!("backend_{key}"), v);
                }
            }
        }
        let mut r = row(Format::GuideLlm, format!("guidellm {label}"), version.clone(), "http", settings, metrics);
        for (kind, key) in [("errored", "errored"), ("incomplete", "incomplete")] {
            let n = totals.opt_f64(key)?.unwrap_or(0.0);
            if n > 0.0 {
                r.failures.insert(kind.into(), n as usize);
            }
        }
        rows.push(r);
    }
    let workload = WorkloadMeta {
        source: format!("guidellm ({}): {}", file.display(), strategies.join(", ")),
        num_requests: rows.iter().filter_map(|r| r.metric("completed")).map(|c| c as usize).max().unwrap_or(0),
        warmup: 0,
        sha256: String::new(),
        seed: None,
        mode: "online".into(),
        request_rate: None,
        burstiness: None,
        max_concurrency: None,
    };
    Ok(ImportedRun {
        file,
        format: Format::GuideLlm,
        created_unix_s: created,
        model,
        workload,
        percentiles: PERCENTILES.iter().map(|(_, n)| n.parse().expect("number")).collect(),
        rows,
    }
    .into_results())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_report_names_the_field() {
        let read_str = |s: &str| read(&serde_json::from_str(s).unwrap(), Path::new("g.json")).unwrap_err();
        assert_eq!(read_str(r#"{"benchmarks": {}}"#), "field `benchmarks` is not an array");
        assert_eq!(read_str(r#"{"benchmarks": []}"#), "no benchmarks in the GuideLLM report");
        assert_eq!(read_str(r#"{"benchmarks": [{}]}"#), "field `benchmarks[0].config` is missing");
        assert_eq!(
            read_str(r#"{"benchmarks": [{"config": {"strategy": {"type_": "synchronous"}}, "duration": 0}]}"#),
            "field `benchmarks[0].duration` is not a positive duration: 0"
        );
    }
}
