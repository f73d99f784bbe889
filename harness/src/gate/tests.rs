use super::*;
use crate::report::{BundleMeta, EngineFigures, EngineMeta, Repeat, RunMetadata, WorkloadMeta};

fn config() -> GateConfig {
    GateConfig::parse(
        r#"
min_repeats = 3
[relative]
metrics = ["output_throughput", "median_tpot_ms"]
max_drop = 0.3
[exact]
fields = ["completed", "total_output_tokens", "preemptions", "prefix_hit_tokens", "output_digest"]
"#,
    )
    .unwrap()
}

/// A run of runtimes with these output throughputs per repeat (TPOT = 1000 / throughput).
fn results(runtimes: &[(&str, &[f64])]) -> Results {
    let run = |name: &str, tput: &[f64]| {
        let repeats: Vec<Repeat> = tput
            .iter()
            .map(|&t| Repeat {
                metrics: [
                    ("output_throughput".to_string(), t),
                    ("median_tpot_ms".to_string(), 1000.0 / t),
                    ("completed".to_string(), 32.0),
                    ("total_output_tokens".to_string(), 700.0),
                ]
                .into(),
                steps: 50,
                preemptions: 3,
                prefix_hit_tokens: 96,
                output_digest: "00ff".into(),
            })
            .collect();
        RuntimeResult {
            runtime: name.into(),
            version: "1".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            settings: Default::default(),
            status: "ok".into(),
            error: None,
            metrics: repeats[0].metrics.clone(),
            engine: EngineFigures {
                steps: 50,
                preemptions: 3,
                prefix_hit_tokens: 96,
                admitted_prompt_tokens: 1000,
                prefix_hit_rate: 0.096,
                peak_kv_blocks: 10,
                num_kv_blocks: 20,
                mean_batch_seqs: 4.0,
                schedule_ms: 1.0,
                runtime_ms: 10.0,
                postprocess_ms: 1.0,
                kv_blocks_timeline: Vec::new(),
            },
            requests_csv: String::new(),
            output_digest: "00ff".into(),
            repeats,
            measured: "in-process".into(),
            failures: Default::default(),
            tool: String::new(),
        }
    };
    Results {
        schema_version: 1,
        created_unix_s: 0,
        metadata: RunMetadata {
            git_commit: None,
            cpu_model: "cpu".into(),
            cores: 2,
            cpu: Some(crate::machine::CpuIdentity::from_cpuinfo("vendor_id : X\ncpu family : 1\nflags : avx2\n")),
            bundle: BundleMeta { name: "b".into(), dir: "b".into(), manifest_sha256: "m".into(), model_sha256: None },
            workload: WorkloadMeta {
                source: "synthetic".into(),
                num_requests: 32,
                warmup: 2,
                sha256: "w".into(),
                seed: Some(0),
                mode: "offline".into(),
                request_rate: None,
                burstiness: None,
                max_concurrency: None,
            },
            engine: EngineMeta {
                max_num_seqs: 16,
                max_num_batched_tokens: 512,
                max_model_len: 256,
                block_size: 16,
                num_kv_blocks: 20,
                prefix_caching: true,
                chunked_prefill: true,
            },
            percentiles: vec![50.0],
            slo: Default::default(),
            provenance: None,
        },
        runs: runtimes.iter().map(|(n, t)| run(n, t)).collect(),
        quality: None,
    }
}

fn baseline() -> Results {
    results(&[("a", &[1000.0, 1100.0, 900.0]), ("b", &[500.0, 550.0, 450.0]), ("c", &[250.0, 260.0, 240.0])])
}

#[test]
fn a_machine_twice_as_slow_or_loaded_is_not_a_regression() {
    // Every runtime at half speed, with noise: the ratios are what is compared.
    let current =
        results(&[("a", &[500.0, 560.0, 440.0]), ("b", &[250.0, 270.0, 230.0]), ("c", &[125.0, 131.0, 119.0])]);
    let r = gate(&baseline(), &current, &config()).unwrap();
    assert!(r.passed(), "{}", r.table());
    // status per runtime, 2 metrics x 3 runtimes, 5 exact fields x 3 runtimes.
    assert_eq!(r.checks.len(), 3 + 6 + 15);
}

#[test]
fn a_slowed_runtime_fails_and_only_it() {
    // b at half its speed, the others unchanged.
    let current =
        results(&[("a", &[1000.0, 1100.0, 900.0]), ("b", &[250.0, 275.0, 225.0]), ("c", &[250.0, 260.0, 240.0])]);
    let r = gate(&baseline(), &current, &config()).unwrap();
    assert!(!r.passed());
    let failed: Vec<(&str, &str)> = r.failures().map(|c| (c.runtime.as_str(), c.figure.as_str())).collect();
    assert_eq!(failed, [("b", "output_throughput (relative)"), ("b", "median_tpot_ms (relative)")]);
    let c = r.failures().next().unwrap();
    // b's relative throughput: 500 / sqrt(1000 * 250) = 1.0 before, 250 / 500 = 0.5 now.
    assert_eq!((c.baseline.as_str(), c.current.as_str()), ("1.000", "0.500 (-50%)"));
    assert_eq!(c.limit, ">= 0.700 (-30%)");
}

#[test]
fn a_faster_runtime_passes_with_a_note() {
    let current =
        results(&[("a", &[2000.0, 2200.0, 1800.0]), ("b", &[500.0, 550.0, 450.0]), ("c", &[250.0, 260.0, 240.0])]);
    let r = gate(&baseline(), &current, &config()).unwrap();
    assert!(r.passed(), "{}", r.table());
    assert!(
        r.notes.iter().any(|n| n.starts_with("a: output_throughput relative figure is 100% above")),
        "{:?}",
        r.notes
    );
}

#[test]
fn exact_figures_must_not_move() {
    let mut current = baseline();
    current.runs[2].repeats[1].preemptions = 4;
    current.runs[0].repeats[2].output_digest = "0100".into();
    let r = gate(&baseline(), &current, &config()).unwrap();
    let failed: Vec<String> = r.failures().map(|c| format!("{} {} {}", c.runtime, c.figure, c.current)).collect();
    assert_eq!(failed, ["c preemptions 3 / 4 / 3", "a output_digest 00ff / 0100"]);
}

#[test]
fn too_few_repeats_or_a_failed_runtime_fail() {
    let mut current = baseline();
    current.runs[1].repeats.truncate(2);
    current.runs[2].status = "failed".into();
    let r = gate(&baseline(), &current, &config()).unwrap();
    let failed: Vec<String> = r.failures().map(|c| format!("{} {}", c.runtime, c.current)).collect();
    assert_eq!(failed, ["b ok, 2", "c failed, 3"]);
}

#[test]
fn the_most_typical_run_is_picked() {
    let runs = [
        results(&[("a", &[1000.0; 3]), ("b", &[500.0; 3]), ("c", &[250.0; 3])]),
        results(&[("a", &[1300.0; 3]), ("b", &[500.0; 3]), ("c", &[250.0; 3])]),
        results(&[("a", &[1100.0; 3]), ("b", &[500.0; 3]), ("c", &[250.0; 3])]),
    ];
    assert_eq!(most_typical(&runs, &config()).unwrap(), 2);
    let other = [runs[0].clone(), results(&[("a", &[1.0; 3]), ("c", &[1.0; 3]), ("b", &[1.0; 3])])];
    assert!(most_typical(&other, &config()).is_err());
    // A run with a failed runtime, or too few repeats, is never a baseline.
    let mut failed = runs.clone();
    failed[1].runs[0].status = "failed".into();
    let err = most_typical(&failed, &config()).unwrap_err().to_string();
    assert!(err.contains("run 2: runtime a is failed with 3 repeats"), "{err}");
    let mut short = runs.clone();
    short[2].runs[1].repeats.truncate(2);
    assert!(most_typical(&short, &config()).unwrap_err().to_string().contains("run 3: runtime b is ok with 2"));
    assert!(most_typical(&[], &config()).is_err());
}

#[test]
fn nothing_to_compare_is_an_error_and_missing_figures_never_match() {
    let err = gate(&results(&[]), &baseline(), &config()).unwrap_err().to_string();
    assert!(err.contains("the baseline has no runtime to gate"), "{err}");
    let one = results(&[("a", &[1.0; 3])]);
    let err = gate(&one, &one, &config()).unwrap_err().to_string();
    assert!(err.contains("relative figures need at least two runtimes"), "{err}");
    // A baseline written before digests existed: the digest check fails rather than passing on "" == "".
    let mut old = baseline();
    for run in &mut old.runs {
        for r in &mut run.repeats {
            r.output_digest.clear();
        }
    }
    let r = gate(&old, &old, &config()).unwrap();
    let failed: Vec<String> = r.failures().map(|c| format!("{} {} {}", c.runtime, c.figure, c.baseline)).collect();
    assert_eq!(failed, ["a output_digest missing", "b output_digest missing", "c output_digest missing"]);
    // A runtime only in the current run is noted.
    let extra = results(&[("a", &[1.0; 3]), ("b", &[1.0; 3]), ("c", &[1.0; 3]), ("d", &[1.0; 3])]);
    let r = gate(&baseline(), &extra, &config()).unwrap();
    assert!(r.notes.iter().any(|n| n.starts_with("d: in this run but not gated")), "{:?}", r.notes);
}

#[test]
fn relative_figures_are_gated_only_against_a_baseline_of_the_same_cpu() {
    // b at half its speed, measured on another CPU than the baseline's: reported, not gated; exact figures are.
    let mut current =
        results(&[("a", &[1000.0, 1100.0, 900.0]), ("b", &[250.0, 275.0, 225.0]), ("c", &[250.0, 260.0, 240.0])]);
    current.metadata.cpu.as_mut().unwrap().simd.push("avx512f".into());
    current.runs[0].repeats[1].preemptions = 4;
    let r = gate(&baseline(), &current, &config()).unwrap();
    let failed: Vec<String> = r.failures().map(|c| format!("{} {}", c.runtime, c.figure)).collect();
    assert_eq!(failed, ["a preemptions"]);
    let b = r.checks.iter().find(|c| c.runtime == "b" && c.figure == "output_throughput (relative)").unwrap();
    assert_eq!((b.current.as_str(), b.limit.as_str()), ("0.500 (-50%)", "not gated (another CPU): >= 0.700 (-30%)"));
    assert!(r.notes.iter().any(|n| n.starts_with("relative figures are reported, not gated")), "{:?}", r.notes);
    // A baseline without a recorded CPU is another CPU too.
    let mut old = baseline();
    old.metadata.cpu = None;
    assert!(gate(&old, &results(&[("a", &[1.0; 3]), ("b", &[1.0; 3]), ("c", &[1.0; 3])]), &config()).unwrap().passed());
    // Of several baselines, the one of this CPU is picked; without one, the first (for its exact figures).
    let other = current.clone();
    assert_eq!(pick_baseline(&[other.clone(), baseline()], &baseline()), Some((1, true)));
    assert_eq!(pick_baseline(&[other], &baseline()), Some((0, false)));
    assert_eq!(pick_baseline(&[], &baseline()), None);
}

#[test]
fn another_workload_or_a_missing_runtime_is_not_comparable() {
    let mut current = baseline();
    current.metadata.workload.sha256 = "other".into();
    let err = gate(&baseline(), &current, &config()).unwrap_err().to_string();
    assert!(err.contains("the workload differs") && err.contains("ci/refresh-baseline.sh"), "{err}");
    let current = results(&[("a", &[1.0, 1.0, 1.0]), ("b", &[1.0, 1.0, 1.0])]);
    let err = gate(&baseline(), &current, &config()).unwrap_err().to_string();
    assert!(err.contains("runtime 'c' is not in the current run"), "{err}");
    let mut current = baseline();
    current.runs[0].dtype = "q8_0".into();
    let err = gate(&baseline(), &current, &config()).unwrap_err().to_string();
    assert!(err.contains("runtime 'a' ran as f32 on cpu in the baseline, as q8_0 on cpu now"), "{err}");
}
