//! `nano-vllm report` on committed sample files: other tools' results (vllm bench serve, llama-bench, GuideLLM; see
//! tests/data/imports/FORMATS.md for where each came from) imported with their figures mapped to vLLM's names, and
//! two runs of this harness compared A/B with their spread over repeats (tests/data/ab).

use std::path::{Path, PathBuf};
use std::process::Command;

use nano_vllm_harness::report::ab::{self, Verdict};
use nano_vllm_harness::report::import::{self, Format};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(data(name)).unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn nano_vllm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nano-vllm"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn vllm_bench_serve_results_keep_their_names_and_values() {
    let (r, format) = import::read_any(&data("imports/vllm-bench-serve.json")).unwrap();
    assert_eq!(format, Format::VllmBenchServe);
    let raw = json("imports/vllm-bench-serve.json");
    assert_eq!(r.runs.len(), 1);
    let row = &r.runs[0];
    assert_eq!(
        (row.tool.as_str(), row.measured.as_str(), row.runtime.as_str()),
        ("vllm bench serve", "http", "vllm-bench-serve")
    );
    for key in [
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "median_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "median_itl_ms",
        "p90_e2el_ms",
        "duration",
    ] {
        assert!(close(row.metric(key).unwrap(), raw[key].as_f64().unwrap()), "{key}");
    }
    assert_eq!(row.metric("completed"), Some(10.0));
    assert_eq!(row.metric("total_output_tokens"), Some(160.0));
    assert_eq!(r.metadata.percentiles, [50.0, 90.0, 99.0]);
    assert_eq!(r.metadata.bundle.name, "smollm2");
    let w = &r.metadata.workload;
    assert_eq!((w.num_requests, w.max_concurrency, w.request_rate, w.mode.as_str()), (10, Some(2), None, "offline"));
    assert_eq!(row.settings["backend"], "openai");
}

#[test]
fn llama_bench_tests_are_rows_with_their_samples_as_repeats() {
    for file in ["imports/llama-bench.json", "imports/llama-bench.jsonl"] {
        let (r, format) = import::read_any(&data(file)).unwrap();
        assert_eq!(format, Format::LlamaBench, "{file}");
        let names: Vec<&str> = r.runs.iter().map(|x| x.runtime.as_str()).collect();
        assert_eq!(names, ["llama-bench pp64", "llama-bench tg32", "llama-bench pp64+tg32"], "{file}");
        let raw = json("imports/llama-bench.json");
        for (row, test) in r.runs.iter().zip(raw.as_array().unwrap()) {
            let ns: Vec<f64> = test["samples_ns"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let ts: Vec<f64> = test["samples_ts"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let median = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            assert_eq!(row.repeats.len(), 5);
            assert!(close(row.metric("total_token_throughput").unwrap(), median(&ts)), "{}", row.runtime);
            let (n_prompt, n_gen) = (test["n_prompt"].as_f64().unwrap(), test["n_gen"].as_f64().unwrap());
            assert_eq!(row.metric("total_output_tokens"), Some(5.0 * n_gen));
            assert_eq!(row.metric("total_input_tokens"), Some(5.0 * n_prompt));
            assert!(close(row.metric("duration").unwrap(), ns.iter().sum::<f64>() / 1e9));
            assert_eq!(
                (row.tool.as_str(), row.measured.as_str(), row.dtype.as_str()),
                ("llama-bench", "in-process", "Q4_1")
            );
            assert_eq!(row.settings["n_threads"], "2");
            match row.runtime.as_str() {
                "llama-bench tg32" => {
                    assert!(close(row.metric("output_throughput").unwrap(), median(&ts)));
                    assert!(close(row.metric("median_tpot_ms").unwrap(), median(&ns) / 1e6 / 32.0));
                    assert!(close(row.metric("mean_tpot_ms").unwrap(), test["avg_ns"].as_f64().unwrap() / 1e6 / 32.0));
                    assert!(row.metric("median_ttft_ms").is_none());
                }
                "llama-bench pp64" => {
                    assert!(close(row.metric("median_ttft_ms").unwrap(), median(&ns) / 1e6));
                    assert!(row.metric("output_throughput").is_none() && row.metric("median_tpot_ms").is_none());
                }
                _ => assert!(close(row.metric("median_e2el_ms").unwrap(), median(&ns) / 1e6)),
            }
        }
        assert_eq!(r.metadata.bundle.name, "SmolLM2-135M-Instruct.Q4_1");
    }
}

#[test]
fn guidellm_benchmarks_map_to_vllm_names() {
    let (r, format) = import::read_any(&data("imports/guidellm.json")).unwrap();
    assert_eq!(format, Format::GuideLlm);
    let raw = json("imports/guidellm.json");
    let names: Vec<&str> = r.runs.iter().map(|x| x.runtime.as_str()).collect();
    assert_eq!(names, ["guidellm synchronous", "guidellm concurrent@2"]);
    for (row, b) in r.runs.iter().zip(raw["benchmarks"].as_array().unwrap()) {
        let m = &b["metrics"];
        let s = |name: &str, stat: &str| m[name]["successful"][stat].as_f64().unwrap();
        let duration = b["duration"].as_f64().unwrap();
        let output = s("output_token_count", "total_sum").round();
        assert_eq!(row.metric("completed"), Some(20.0));
        assert_eq!(row.metric("failed"), Some(0.0));
        assert!(close(row.metric("request_throughput").unwrap(), 20.0 / duration));
        assert!(close(row.metric("output_throughput").unwrap(), output / duration));
        assert_eq!(row.metric("total_output_tokens"), Some(output));
        assert!(close(row.metric("median_ttft_ms").unwrap(), s("time_to_first_token_ms", "median")));
        assert!(close(
            row.metric("p99_ttft_ms").unwrap(),
            m["time_to_first_token_ms"]["successful"]["percentiles"]["p99"].as_f64().unwrap()
        ));
        // vLLM's TPOT is GuideLLM's inter-token latency; its time_per_output_token includes the first token.
        assert!(close(row.metric("median_tpot_ms").unwrap(), s("inter_token_latency_ms", "median")));
        assert!(close(row.metric("mean_itl_ms").unwrap(), s("inter_token_latency_ms", "mean")));
        assert!(row.metric("median_itl_ms").is_none());
        // Seconds in the file, milliseconds here.
        assert!(close(row.metric("median_e2el_ms").unwrap(), 1000.0 * s("request_latency", "median")));
        assert_eq!((row.tool.as_str(), row.measured.as_str()), ("guidellm", "http"));
        assert_eq!(row.settings["backend_target"], "http://127.0.0.1:8000");
        assert!(row.version.starts_with("guidellm 0.8.0"), "{}", row.version);
    }
    assert_eq!(r.metadata.bundle.name, "smollm2");
}

#[test]
fn the_report_command_puts_every_format_in_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all");
    let files = ["imports/vllm-bench-serve.json", "imports/llama-bench.json", "imports/guidellm.json", "ab/a"];
    let paths: Vec<String> = files.iter().map(|f| data(f).display().to_string()).collect();
    let mut args = vec!["report"];
    args.extend(paths.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    let (ok, stdout, err) = nano_vllm(&args);
    assert!(ok, "{err}");
    for row in [
        "| vllm-bench-serve | HTTP (vllm bench serve) |",
        "| llama-bench tg32 | in-process (llama-bench) | Q4_1 |",
        "| guidellm concurrent@2 | HTTP (guidellm) |",
    ] {
        assert!(stdout.contains(row), "{row} not in\n{stdout}");
    }
    // Four inputs: no A/B.
    assert!(!stdout.contains("### A/B") && !out.join("ab.md").exists());
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    // 1 + 3 + 2 imported rows and the run's own.
    let ab = import::read_any(&data("ab/a")).unwrap().0;
    assert_eq!(summary.lines().count(), 1 + 1 + 3 + 2 + ab.runs.len());
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("guidellm synchronous"));

    // Not a results file: an error naming it.
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, br#"{"hello": 1}"#).unwrap();
    let (ok, _, err) = nano_vllm(&["report", bogus.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("bogus.json") && err.contains("not a results file this harness reads"), "{err}");
    // A field of the wrong type: named.
    let mut raw = json("imports/vllm-bench-serve.json");
    raw["output_throughput"] = Value::String("fast".into());
    std::fs::write(&bogus, serde_json::to_vec(&raw).unwrap()).unwrap();
    let (ok, _, err) = nano_vllm(&["report", bogus.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("field `output_throughput` is not a number"), "{err}");
}

/// tests/data/ab: the same workload (tiny-llama, 128 measured requests, 5 repeats in rounds) on native and the mock,
/// A with `--threads 1`, B with `--threads 2`, on a 2-core machine (see the files' provenance).
#[test]
fn two_runs_compare_ab_with_their_spread_and_a_noise_verdict() {
    let (a, _) = import::read_any(&data("ab/a")).unwrap();
    let (b, _) = import::read_any(&data("ab/b/results.json")).unwrap();
    let cmp = ab::compare("A", &a, "B", &b);
    // Only the thread count differs: same workload, model, CPU and build.
    assert_eq!(cmp.differences, ["threads: 1 -> 2"]);
    assert!(cmp.comparable && cmp.unmatched.is_empty());
    assert_eq!(cmp.runtimes.iter().map(|r| r.runtime.as_str()).collect::<Vec<_>>(), ["native", "mock:delay-us=200"]);
    for rt in &cmp.runtimes {
        assert_eq!(rt.same_tokens, Some(true), "{}", rt.runtime);
        assert_eq!(rt.metrics.len(), ab::AB_METRICS.len());
        let run_a = a.runs.iter().find(|r| r.runtime == rt.runtime).unwrap();
        for m in &rt.metrics {
            // The spread is the repeats', the ratio that of the medians.
            let mut v: Vec<f64> = run_a.repeats.iter().map(|r| r.metrics[&m.metric]).collect();
            v.sort_by(f64::total_cmp);
            assert_eq!((m.a.n, m.a.min, m.a.median, m.a.max), (5, v[0], v[2], v[4]), "{}", m.metric);
            assert!(close(m.ratio, m.b.median / m.a.median));
            let [lo, hi] = m.interval.unwrap();
            assert!(lo <= m.ratio && m.ratio <= hi, "{m:?}");
        }
    }
    let verdict = |rt: &str, metric: &str| {
        let r = cmp.runtimes.iter().find(|r| r.runtime == rt).unwrap();
        r.metrics.iter().find(|m| m.metric == metric).unwrap().clone()
    };
    // The mock does not use the threads: every metric within noise.
    assert!(cmp.runtimes[1].metrics.iter().all(|m| m.verdict == Verdict::WithinNoise));
    // Native's inter-token latency got worse with a second thread beyond the noise (a 64-wide model pays for the
    // synchronization); its throughput difference is within the noise of these 5 repeats.
    let itl = verdict("native", "median_itl_ms");
    assert_eq!(itl.verdict, Verdict::BWorse, "{itl:?}");
    assert!(itl.interval.unwrap()[0] > 1.0);
    assert_eq!(verdict("native", "output_throughput").verdict, Verdict::WithinNoise);

    // The command: A/B printed and written beside the comparison.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ab");
    let (pa, pb) = (data("ab/a"), data("ab/b"));
    let (ok, stdout, err) =
        nano_vllm(&["report", pa.to_str().unwrap(), pb.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("### A/B: A = ") && stdout.contains("- threads: 1 -> 2"), "{stdout}");
    assert!(stdout.contains("| native | median_itl_ms |") && stdout.contains("| B worse | yes |"), "{stdout}");
    let written: Value = serde_json::from_slice(&std::fs::read(out.join("ab.json")).unwrap()).unwrap();
    assert_eq!(written["runtimes"][0]["metrics"][5]["verdict"], "b_worse");
    assert!(std::fs::read_to_string(out.join("ab.md")).unwrap().contains("within noise"));
}

#[test]
fn ab_says_what_makes_two_runs_incomparable() {
    let (a, _) = import::read_any(&data("ab/a")).unwrap();
    let mut b = a.clone();
    b.metadata.workload.sha256 = "0".repeat(64);
    b.metadata.bundle.manifest_sha256 = "f".repeat(64);
    if let Some(p) = b.metadata.provenance.as_mut() {
        p.rustc = "rustc 9.99.0".into();
        p.git_dirty = Some(false);
    }
    b.runs.truncate(1);
    b.runs[0].repeats.truncate(2);
    let cmp = ab::compare("A", &a, "B", &b);
    assert!(!cmp.comparable);
    let d = cmp.differences.join("\n");
    assert!(d.contains("workload:") && d.contains("ratios are not comparable"), "{d}");
    assert!(
        d.contains("model:") && d.contains("git dirty: Some(true) -> Some(false)") && d.contains("rustc 9.99.0"),
        "{d}"
    );
    assert_eq!(cmp.unmatched, ["A only: mock:delay-us=200"]);
    // Two repeats in B: no verdict.
    assert!(cmp.runtimes[0].metrics.iter().all(|m| m.verdict == Verdict::NoiseUnknown && m.interval.is_none()));
    assert!(cmp.markdown().contains("**Not comparable**"));
}

#[test]
fn guidellm_tpot_is_left_out_when_output_lengths_differ() {
    // GuideLLM's inter-token summary is weighted by each request's tokens: not vLLM's TPOT when lengths differ.
    let mut raw = json("imports/guidellm.json");
    raw["benchmarks"][0]["metrics"]["output_token_count"]["successful"]["min"] = 8.0.into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.json");
    std::fs::write(&path, serde_json::to_vec(&raw).unwrap()).unwrap();
    let (r, _) = import::read_any(&path).unwrap();
    assert!(r.runs[0].metric("median_tpot_ms").is_none() && r.runs[0].metric("mean_itl_ms").is_some());
    assert!(r.runs[1].metric("median_tpot_ms").is_some());
}
