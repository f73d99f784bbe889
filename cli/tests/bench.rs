//! `nano-vllm bench` end to end: the reports agree with the run and with each other.

mod util;

use std::path::Path;
use std::process::Command;
use util::nano_vllm;

use nano_vllm_harness::metrics::percentile;
use nano_vllm_harness::report::read_results;

/// Reads a per-request CSV into (output_tokens, ttft_ms, arrival_s, e2el_ms) rows.
fn requests_csv(path: &Path) -> Vec<(usize, f64, f64, f64)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let f = |i: usize| rec[i].parse::<f64>().unwrap_or(f64::NAN);
            (rec[3].parse().unwrap(), f(7), f(6), f(9))
        })
        .collect()
}

fn check_run(dir: &Path, runtimes: &[&str], requests: usize, mode: &str) {
    let results = read_results(&dir.join("results.json")).unwrap();
    assert_eq!(results.metadata.workload.num_requests, requests);
    assert_eq!(results.metadata.workload.mode, mode);
    assert_eq!(results.runs.iter().map(|r| r.runtime.as_str()).collect::<Vec<_>>(), runtimes);
    for run in &results.runs {
        assert_eq!(run.status, "ok", "{}: {:?}", run.runtime, run.error);
        let rows = requests_csv(&dir.join(&run.requests_csv));
        assert_eq!(rows.len(), requests);
        assert_eq!(run.metric("completed"), Some(requests as f64));
        let out_tokens: usize = rows.iter().map(|r| r.0).sum();
        assert_eq!(run.metric("total_output_tokens"), Some(out_tokens as f64));
        // Percentiles in results.json are those of the CSV's values.
        let mut ttft: Vec<f64> = rows.iter().map(|r| r.1).collect();
        ttft.sort_by(f64::total_cmp);
        for p in [50.0, 99.0] {
            let key = if p == 50.0 { "median_ttft_ms".to_string() } else { "p99_ttft_ms".to_string() };
            assert!((run.metric(&key).unwrap() - percentile(&ttft, p)).abs() < 1e-3, "{key}");
        }
        // Each request's first token follows its arrival; its last follows its first.
        for &(_, ttft, arrival, e2el) in &rows {
            assert!(ttft >= 0.0 && e2el >= ttft && arrival >= 0.0);
        }
        let t: Vec<f64> = run.engine.kv_blocks_timeline.iter().map(|p| p[0]).collect();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "timeline not monotonic");
        assert!(run.engine.steps > 0 && run.engine.peak_kv_blocks > 0);
    }
    for f in ["summary.csv", "report.md", "report.html"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 4, "charts missing");
}

#[test]
fn offline_bench_of_two_runtimes_writes_consistent_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (ok, stdout, err) = nano_vllm(&[
        "bench",
        "--runtime",
        "native,mock",
        "--requests",
        "20",
        "--warmup",
        "2",
        "--quiet",
        "--threads",
        "1",
        "--out",
        out,
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("| native | in-process | f32 | ok | 0 |") && stdout.contains("| mock |"), "{stdout}");
    check_run(dir.path(), &["native", "mock"], 18, "offline");
}

#[test]
fn online_bench_from_a_trace_respects_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let (ok, _, err) =
        nano_vllm(&["workload", "--out", trace.to_str().unwrap(), "--requests", "12", "--rate", "100", "--seed", "3"]);
    assert!(ok, "{err}");
    let out = dir.path().join("run");
    let args = [
        "bench",
        "--runtime",
        "native,mock",
        "--workload",
        trace.to_str().unwrap(),
        "--mode",
        "online",
        "--warmup",
        "1",
    ];
    let (ok, _, err) = nano_vllm(&[&args[..], &["--quiet", "--threads", "1", "--out", out.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    check_run(&out, &["native", "mock"], 11, "online");
    let rows = requests_csv(&out.join("requests_native.csv"));
    assert!(rows.windows(2).all(|w| w[0].2 <= w[1].2) && rows.last().unwrap().2 > 0.0, "arrivals from the trace");
}

#[test]
fn a_failing_runtime_is_reported_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (ok, stdout, err) = nano_vllm(&[
        "bench",
        "--runtime",
        "mock:fail-at=5,mock",
        "--requests",
        "10",
        "--warmup",
        "0",
        "--quiet",
        "--out",
        out,
    ]);
    assert!(!ok, "a failed runtime makes the exit status non-zero");
    assert!(err.contains("injected failure at step 5"), "{err}");
    let results = read_results(&dir.path().join("results.json")).unwrap();
    assert_eq!(results.runs[0].status, "failed");
    assert!(results.runs[0].error.as_deref().unwrap().contains("injected failure"));
    assert_eq!(results.runs[1].status, "ok");
    assert_eq!(results.runs[0].runtime, "mock:fail-at=5");
    assert!(dir.path().join("requests_mock_fail-at_5.csv").exists() && dir.path().join("requests_mock.csv").exists());
    assert!(stdout.contains("failed: runtime 'mock' failed: injected failure at step 5"), "{stdout}");
}

#[test]
fn bad_workloads_are_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.jsonl");
    std::fs::write(
        &trace,
        "{\"prompt_ids\": [5, 6], \"max_tokens\": 4}\n{\"prompt_ids\": [5], \"max_tokens\": \"many\"}\n",
    )
    .unwrap();
    let (ok, _, err) = nano_vllm(&["bench", "--runtime", "mock", "--workload", trace.to_str().unwrap(), "--quiet"]);
    assert!(!ok && err.contains("bad.jsonl:2:"), "{err}");
    std::fs::write(
        &trace,
        format!("{{\"id\": \"big\", \"prompt_ids\": [{}], \"max_tokens\": 10}}\n", vec!["5"; 250].join(",")),
    )
    .unwrap();
    let (ok, _, err) =
        nano_vllm(&["bench", "--runtime", "mock", "--workload", trace.to_str().unwrap(), "--quiet", "--warmup", "0"]);
    assert!(
        !ok && err.contains("request big: prompt (250 tokens) + max_tokens (10) exceeds the model's context (256)"),
        "{err}"
    );
    let (ok, _, err) = nano_vllm(&["bench", "--runtime", "mock", "--input-len", "uniform:0:3", "--quiet"]);
    assert!(!ok && err.contains("uniform:0:3"), "{err}");
    let (ok, _, err) = nano_vllm(&["bench", "--runtime", "mock", "--slo", "ttft=fast", "--quiet"]);
    assert!(!ok && err.contains("not a positive duration"), "{err}");
}

#[test]
fn report_compares_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (d, rt) in [(&a, "mock"), (&b, "mock:delay-us=300")] {
        let (ok, _, err) =
            nano_vllm(&["bench", "--runtime", rt, "--requests", "8", "--quiet", "--out", d.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let out = dir.path().join("cmp");
    let (ok, stdout, err) =
        nano_vllm(&["report", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(stdout.matches("### synthetic on tiny-llama").count(), 2);
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3);
}

#[test]
fn ctrl_c_writes_the_partial_results() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // 40 requests on a mock that takes 20 ms a step: several seconds of work.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nano-vllm"))
        .args(["bench", "--runtime", "mock:delay-us=20000", "--requests", "40", "--out", run_dir.to_str().unwrap()])
        .args(["--max-num-seqs", "2", "--warmup", "0"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr, line by line, on a thread (the run says when it starts measuring: stderr is not a terminal).
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Interrupt once the runtime is being measured: a deadline on that line, not a guess of how long start-up takes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("bench never said it started measuring");
        if line.starts_with("mock:delay-us=20000: measuring 40 requests") {
            break;
        }
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = reader.join().unwrap();
    assert!(!out.status.success() && err.contains("interrupted: partial results written"), "{err}");
    let results = read_results(&run_dir.join("results.json")).unwrap();
    assert_eq!(results.runs[0].status, "interrupted");
    // Some or none finished before the signal (the machine may be slow), never all: the run was cut short.
    let done = results.runs[0].metric("completed").unwrap_or(0.0);
    assert!(done < 40.0, "{done} requests completed");
    assert_eq!(requests_csv(&run_dir.join(&results.runs[0].requests_csv)).len(), 40);
}
