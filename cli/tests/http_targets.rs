//! HTTP targets against a stub OpenAI server that answers at once and fails on demand (tests/support): rows of
//! the same run as an in-process runtime, fleets, every failure kind counted and never fatal, open-loop clocks,
//! and the CLI end to end. Real servers (vLLM, llama.cpp's server) are checked by ci/interop.sh.

#[path = "../../harness/tests/support/openai_stub.rs"]
mod stub;
mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nano_vllm_engine::{Config, SamplingParams};
use nano_vllm_harness::bench::{self, BenchSettings, BenchWorkload, HttpSettings};
use nano_vllm_harness::http::{Balance, Endpoint, Server, Target};
use nano_vllm_harness::metrics::Slo;
use nano_vllm_harness::replay::{Mode, ResolvedRequest};
use nano_vllm_harness::report::{Results, read_results};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::RuntimeSettings;

fn model() -> ModelSource {
    ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap())
}

fn workload(n: usize, gap_s: f64) -> BenchWorkload {
    let requests = (0..n)
        .map(|i| ResolvedRequest {
            id: Some(format!("r{i}")),
            arrival_s: i as f64 * gap_s,
            prompt: vec![(i % 40) as u32 + 20; 8],
            params: SamplingParams { ignore_eos: true, ..SamplingParams::greedy(16) },
        })
        .collect();
    BenchWorkload { source: "test".into(), requests, seed: Some(0), rate: None, burstiness: None }
}

fn server(s: &stub::Stub, model: &str) -> Server {
    Server::parse(&s.target(), model).unwrap()
}

fn settings(runtimes: &[&str], targets: Vec<Target>, http: HttpSettings) -> BenchSettings {
    BenchSettings {
        runtimes: runtimes.iter().map(|s| s.parse().unwrap()).collect(),
        runtime: RuntimeSettings::default(),
        engine: Config::builder().max_model_len(64).num_kv_blocks(64).build().unwrap(),
        mode: Mode::Offline,
        warmup: 1,
        repeat: 1,
        percentiles: vec![50.0, 99.0],
        slo: Slo::default(),
        targets,
        http,
    }
}

fn run(s: &BenchSettings, w: &BenchWorkload) -> (Results, nano_vllm_harness::report::Records) {
    bench::run(&model(), w, s, &Arc::new(AtomicBool::new(false)), &mut ()).unwrap()
}

#[test]
fn a_server_and_a_fleet_are_rows_beside_an_in_process_runtime() {
    let (a, b) = (stub::start(), stub::start());
    let fleet = Target::fleet("pair", vec![server(&a, "ok"), server(&b, "every-third-fails")], Balance::RoundRobin);
    let targets = vec![Target::single(server(&a, "ok")), fleet.unwrap()];
    let (results, records) = run(&settings(&["mock"], targets, HttpSettings::default()), &workload(13, 0.0));
    let names: Vec<&str> = results.runs.iter().map(|r| r.runtime.as_str()).collect();
    let (ua, ub) = (a.target(), b.target());
    assert_eq!(names, ["mock", ua.as_str(), "pair", &format!("pair@{ua}"), &format!("pair@{ub}")]);
    let row = |name: &str| results.runs.iter().find(|r| r.runtime == name).unwrap();
    assert_eq!(row("mock").measured, "in-process");
    let single = row(&ua);
    assert_eq!((single.measured.as_str(), single.status.as_str()), ("http", "ok"));
    assert_eq!((single.metric("completed"), single.metric("failed")), (Some(12.0), Some(0.0)));
    // Output tokens from the server's usage: 12 requests x 16.
    assert_eq!(single.metric("total_output_tokens"), Some(192.0));
    assert_eq!(single.settings["output_tokens_from"], "usage");
    assert!(single.metric("median_ttft_ms").is_some() && single.metric("p99_itl_ms").is_some());
    // Round robin: 6 requests each; the second server refuses every third request it sees (warm-up included).
    let (fa, fb) = (row(&format!("pair@{ua}")), row(&format!("pair@{ub}")));
    let seen =
        |r: &nano_vllm_harness::report::RuntimeResult| r.metric("completed").unwrap() + r.metric("failed").unwrap();
    assert_eq!((seen(fa), seen(fb)), (6.0, 6.0));
    assert_eq!(fa.metric("failed"), Some(0.0));
    let failed_b = fb.metric("failed").unwrap();
    assert!((1.0..=3.0).contains(&failed_b), "{failed_b}");
    assert_eq!(fb.failures.get("http_503").copied(), Some(failed_b as usize));
    let pair = row("pair");
    assert_eq!(pair.metric("failed"), Some(failed_b));
    assert_eq!(pair.metric("completed"), Some(12.0 - failed_b));
    assert_eq!(pair.settings["balance"], "round-robin");
    // Per-request records of every row, the failed ones with their error and server.
    let (_, pair_records) = records.iter().find(|(n, _)| n == "pair").unwrap();
    assert_eq!(pair_records.len(), 12);
    let failed: Vec<_> = pair_records.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(failed.len(), failed_b as usize);
    assert!(failed.iter().all(|r| r.server.as_deref() == Some(ub.as_str())));
    assert!(failed[0].error.as_deref().unwrap().starts_with("http_503: HTTP 503: overloaded"));
    // The stubs saw the warm-up (once per server) and every measured request.
    assert_eq!(
        a.counters.requests.load(Ordering::Relaxed) + b.counters.requests.load(Ordering::Relaxed),
        1 + 12 + 2 + 12
    );
}

#[test]
fn every_failure_kind_is_counted_and_none_ends_the_run() {
    let s = stub::start();
    let models = ["http-500", "drop", "malformed", "slow", "no-usage"];
    let targets = models.iter().map(|m| Target::fleet(m, vec![server(&s, m)], Balance::RoundRobin).unwrap()).collect();
    let http = HttpSettings { request_timeout: Duration::from_millis(400), ..HttpSettings::default() };
    let mut settings = settings(&[], targets, http);
    settings.warmup = 0;
    let (results, _) = run(&settings, &workload(3, 0.0));
    let row = |name: &str| results.runs.iter().find(|r| r.runtime == name).unwrap();
    for (name, kind) in
        [("http-500", "http_500"), ("drop", "dropped_stream"), ("malformed", "malformed_chunk"), ("slow", "timeout")]
    {
        let r = row(name);
        assert_eq!(r.status, "failed", "{name}");
        assert_eq!(r.failures.get(kind).copied(), Some(3), "{name}: {:?}", r.failures);
        assert_eq!((r.metric("completed"), r.metric("failed")), (Some(0.0), Some(3.0)), "{name}");
        assert!(r.error.as_deref().unwrap().starts_with("no request completed ("), "{name}: {:?}", r.error);
    }
    // A server without usage: output tokens counted with the model's tokenizer (" tok" x 16).
    let tokenizer = model().tokenizer().unwrap();
    let per_request = tokenizer.encode(" tok".repeat(16).as_str(), false).unwrap().len();
    let r = row("no-usage");
    assert_eq!(r.status, "ok");
    assert_eq!(r.settings["output_tokens_from"], "tokenizer");
    assert_eq!(r.metric("total_output_tokens"), Some((3 * per_request) as f64));
}

#[test]
fn a_server_that_is_down_or_serves_another_model_fails_its_row_only() {
    let s = stub::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // bound, then dropped
    let down = Server::parse(&format!("openai:http://{closed}/v1"), "ok").unwrap();
    let targets = vec![Target::single(down), Target::single(server(&s, "gpt-9"))];
    let (results, _) = run(&settings(&["mock"], targets, HttpSettings::default()), &workload(3, 0.0));
    let errors: Vec<(&str, String)> =
        results.runs.iter().map(|r| (r.status.as_str(), r.error.clone().unwrap_or_default())).collect();
    assert_eq!(errors[0], ("ok", String::new()));
    assert_eq!(errors[1].0, "failed");
    assert!(errors[1].1.contains("cannot connect"), "{}", errors[1].1);
    assert!(errors[2].1.contains("does not serve model 'gpt-9' (it lists ok, no-usage"), "{}", errors[2].1);
}

#[test]
fn open_loop_clocks_start_at_the_schedule_and_a_concurrency_cap_gates_arrivals() {
    let s = stub::start();
    let mut online = settings(&[], vec![Target::single(server(&s, "ok"))], HttpSettings::default());
    online.mode = Mode::Online;
    let (_, records) = run(&online, &workload(6, 0.05));
    let recs = &records[0].1;
    for (i, r) in recs.iter().enumerate() {
        // t0 is the scheduled arrival (request i + 1 of the workload, the first being warm-up), not the send.
        assert!((r.arrival_s - (i + 1) as f64 * 0.05).abs() < 1e-6, "{i}: {}", r.arrival_s);
        assert!(r.token_times_s[0] >= r.arrival_s && r.completed());
        assert_eq!((r.output_tokens, r.token_times_s.len(), r.count_source), (16, 16, "usage"));
    }
    // One request in flight at a time: each is released when the one before it has finished.
    let http = HttpSettings { max_concurrency: Some(1), ..HttpSettings::default() };
    let (results, records) = run(&settings(&[], vec![Target::single(server(&s, "ok"))], http), &workload(6, 0.0));
    let mut recs = records[0].1.clone();
    recs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    for w in recs.windows(2) {
        assert!(w[1].arrival_s >= w[0].completion_s().unwrap(), "{} < {:?}", w[1].arrival_s, w[0].completion_s());
    }
    assert_eq!(results.runs[0].metric("max_concurrent_requests"), Some(1.0));
    assert_eq!(results.runs[0].settings["max_concurrency"], "1 (arrivals gated by the client)");
}

#[test]
fn chat_streams_count_content_chunks_not_the_role_chunk() {
    let s = stub::start();
    let http = HttpSettings { endpoint: Endpoint::Chat, ..HttpSettings::default() };
    let (results, records) = run(&settings(&[], vec![Target::single(server(&s, "ok"))], http), &workload(3, 0.0));
    assert_eq!(results.runs[0].settings["endpoint"], "/v1/chat/completions");
    assert!(records[0].1.iter().all(|r| r.token_times_s.len() == 16 && r.output_tokens == 16));
}

#[test]
fn a_cancel_ends_requests_in_flight_and_keeps_the_run() {
    let s = stub::start();
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.store(true, Ordering::Relaxed);
        })
    };
    let mut s = settings(&[], vec![Target::single(server(&s, "slow"))], HttpSettings::default());
    s.warmup = 0;
    let started = std::time::Instant::now();
    let (results, records) = bench::run(&model(), &workload(4, 0.0), &s, &cancel, &mut ()).unwrap();
    setter.join().unwrap();
    // The stub waits 5 s per request: the cancel did not wait for them.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(results.runs[0].status, "interrupted");
    assert_eq!(records[0].1.len(), 4);
}

/// `nano-vllm bench ARGS` on 6 short requests into `out`.
fn bench_cli(args: &[&str], out: &std::path::Path) -> (bool, String, String) {
    let common = ["--requests", "6", "--input-len", "8", "--output-len", "4", "--quiet", "--out"];
    util::nano_vllm(&[&["bench"], args, &common[..], &[out.to_str().unwrap()]].concat())
}

/// An offline run of more requests than the client may open connections for (a low open-files limit): every request
/// completes, the surplus waited for a connection (counted in its latency), and the cap is recorded; the client's
/// limit never shows as the server's failures.
#[test]
fn an_open_files_limit_caps_the_clients_connections_instead_of_failing_requests() {
    let s = stub::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let target = s.target();
    let args = ["bench", "--target", &target, "--served-model", "ok", "--requests", "150", "--input-len", "8"];
    let rest = ["--output-len", "4", "--warmup", "0", "--quiet", "--out", out.to_str().unwrap()];
    let status = std::process::Command::new("sh")
        .args(["-c", r#"ulimit -n 96 && exec "$0" "$@""#, env!("CARGO_BIN_EXE_nano-vllm")])
        .args(args)
        .args(rest)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let results = read_results(&out.join("results.json")).unwrap();
    let run = &results.runs[0];
    assert_eq!(run.metric("completed"), Some(150.0), "{:?}", run.settings);
    assert_eq!(run.settings["client_connection_cap"], "32 (this process's open-files limit)");
}

#[test]
fn the_cli_writes_one_comparison_with_runtime_server_and_fleet_rows() {
    let (a, b) = (stub::start(), stub::start());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (ua, ub) = (a.target(), b.target());
    let (ok, stdout, stderr) =
        bench_cli(&["--runtime", "mock", "--target", &ua, "--target", &ub, "--served-model", "ok"], &out);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("| {ua} | HTTP | server | ok | 0 |")), "{stdout}");
    assert!(stdout.contains("| mock | in-process |"), "{stdout}");
    let results = read_results(&out.join("results.json")).unwrap();
    assert_eq!(results.runs.len(), 3);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains(&ub) && html.contains("<td>HTTP</td>"));
    let csv = std::fs::read_to_string(out.join(&results.runs[1].requests_csv)).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("output_tokens_from,server,error"));
    assert!(csv.lines().nth(1).unwrap().contains(",usage,"), "{csv}");

    // A fleet of both, least outstanding; a bad spec is refused up front with the reason.
    let fleet = ["--target", &ua, "--target", &ub, "--served-model", "ok,ok", "--fleet", "edge"];
    let (ok, stdout, stderr) =
        bench_cli(&[&fleet[..], &["--balance", "least-outstanding"]].concat(), &dir.path().join("fleet"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| edge | HTTP |") && stdout.contains(&format!("| edge@{ub} | HTTP |")), "{stdout}");
    let (ok, _, stderr) = util::nano_vllm(&["bench", "--target", "http://x/v1", "--served-model", "m"]);
    assert!(!ok && stderr.contains("expected openai:http://HOST:PORT/v1"), "{stderr}");
    let (ok, _, stderr) = util::nano_vllm(&["bench", "--target", &ua]);
    assert!(!ok && stderr.contains("--target needs --served-model"), "{stderr}");
}
