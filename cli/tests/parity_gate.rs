//! `nano-vllm parity` and `nano-vllm gate` end to end.

mod util;

use std::path::Path;

use util::nano_vllm;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn parity_passes_a_runtime_fails_another_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("parity.json");
    let args =
        ["parity", "--bundle", "fixtures/tiny-llama", "--runtime", "native,mock", "--out", json.to_str().unwrap()];
    let (ok, out, err) = nano_vllm(&args);
    assert!(!ok, "the mock is not the model: {out}");
    assert!(out.contains("| tiny-llama | native | elementwise | ") && out.contains("| pass |"), "{out}");
    assert!(out.contains("| tiny-llama | mock | elementwise |") && out.contains("| FAIL |"), "{out}");
    assert!(out.contains("| tiny-llama | tokenizer: tokenizers (tokenizer.json) |"), "{out}");
    assert!(out.contains("- tiny-llama: mock alone: max |diff|"), "{out}");
    assert!(err.contains("error: parity failed: 1 of 2 runtime checks, 0 of 1 tokenizer checks"), "{err}");
    let report = read_json(&json);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["passed"], false);
    let runtimes = &report["bundles"][0]["runtimes"];
    assert_eq!(runtimes[0]["status"], "pass");
    assert_eq!(runtimes[0]["figures"]["argmax_agreement"], 1.0);
    assert_eq!(runtimes[0]["figures"]["greedy_match"], true);
    assert_eq!(runtimes[0]["situations"].as_array().unwrap().len(), 4);
    assert_eq!(runtimes[0]["situations"][2]["prefix_hit_tokens"], 128);
    assert!(runtimes[0]["situations"][3]["preemptions"].as_u64().unwrap() > 0);
    assert!(runtimes[0]["figures"]["max_abs_diff"].as_f64().unwrap() < 1e-4);
    assert_eq!(runtimes[1]["status"], "fail");
    assert_eq!(report["bundles"][0]["tokenizers"][0]["identical"], 15);
}

#[test]
fn parity_tolerances_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("p.json");
    let base = ["parity", "--bundle", "fixtures/tiny-gpt2", "--runtime", "native", "--out", json.to_str().unwrap()];
    let (ok, out, err) = nano_vllm(&[&base[..], &["--max-abs-diff", "1e-7"]].concat());
    assert!(!ok, "{out}");
    assert!(out.contains("native alone: max |diff| ") && out.contains("> 1.0e-7"), "{out}");
    assert!(err.contains("parity failed"), "{err}");
    assert_eq!(
        read_json(&json)["bundles"][0]["runtimes"][0]["tolerance"]["max_abs_diff"].as_f64().unwrap(),
        1e-7_f32 as f64
    );
    let (ok, _, err) = nano_vllm(&[&base[..], &["--argmax-agreement", "1.5"]].concat());
    assert!(!ok && err.contains("--argmax-agreement must be a fraction in [0, 1]"), "{err}");
}

#[test]
fn parity_names_a_corrupt_or_missing_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tiny-llama");
    std::fs::create_dir(&copy).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-llama");
    for entry in std::fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    // Flip one byte of the ONNX model.
    let onnx = copy.join("model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&onnx, bytes).unwrap();
    let json = dir.path().join("p.json");
    let bundles = format!("{},fixtures/nope", copy.display());
    let (ok, out, err) =
        nano_vllm(&["parity", "--bundle", &bundles, "--runtime", "native", "--out", json.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("| tiny-llama | - | - |") && out.contains("model.onnx"), "{out}");
    assert!(out.contains("| nope | - | - |") && out.contains("manifest.json: file is missing"), "{out}");
    assert!(err.contains("2 unreadable bundles"), "{err}");
}

/// Runs the gate's kind of benchmark (small) into `dir`.
fn bench(dir: &Path) {
    let (ok, _, err) = nano_vllm(&[
        "bench",
        "--runtime",
        "native,mock",
        "--threads",
        "1",
        "--requests",
        "12",
        "--warmup",
        "2",
        "--repeat",
        "3",
        "--kv-blocks",
        "24",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
}

fn gate(baseline: &Path, current: &Path, config: &Path) -> (bool, String, String) {
    nano_vllm(&[
        "gate",
        "--baseline",
        baseline.to_str().unwrap(),
        "--current",
        current.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
}

/// Scales one runtime's throughputs by `factor` in every repeat (and its latencies by the inverse).
fn slow_down(results: &mut serde_json::Value, runtime: &str, factor: f64) {
    let run = results["runs"].as_array_mut().unwrap().iter_mut().find(|r| r["runtime"] == runtime).unwrap();
    for repeat in run["repeats"].as_array_mut().unwrap() {
        let metrics = repeat["metrics"].as_object_mut().unwrap();
        for (key, value) in metrics.iter_mut() {
            let v = value.as_f64().unwrap();
            if key.ends_with("throughput") {
                *value = (v * factor).into();
            } else if key.ends_with("_ms") {
                *value = (v / factor).into();
            }
        }
    }
}

#[test]
fn gate_passes_a_rerun_and_fails_a_slowed_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        "min_repeats = 3\n[relative]\nmetrics = [\"output_throughput\", \"median_tpot_ms\"]\nmax_drop = 0.3\n\
         [exact]\nfields = [\"completed\", \"total_output_tokens\", \"steps\", \"preemptions\", \"output_digest\"]\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    bench(&run);
    let results = run.join("results.json");
    let report = read_json(&results);
    assert_eq!(report["runs"][0]["repeats"].as_array().unwrap().len(), 3);
    assert_eq!(report["runs"][0]["output_digest"].as_str().unwrap().len(), 16);

    // Against itself: every check passes.
    let (ok, out, err) = gate(&results, &run, &config);
    assert!(ok, "{out}{err}");
    assert!(out.contains("| native | output_throughput (relative) |") && out.contains("| mock | output_digest |"));
    assert!(out.contains("regression gate passed: 16 checks"), "{out}");

    // The mock at 40% of its speed: it regresses, and the gate says which runtime and figure.
    let mut slowed = report.clone();
    slow_down(&mut slowed, "mock", 0.4);
    let slowed_path = dir.path().join("slowed.json");
    std::fs::write(&slowed_path, serde_json::to_vec(&slowed).unwrap()).unwrap();
    let (ok, out, err) = gate(&results, &slowed_path, &config);
    assert!(!ok, "{out}");
    assert!(
        out.contains("| mock | output_throughput (relative) |")
            && out.contains("(-60%)")
            && out.contains("| REGRESSION |"),
        "{out}"
    );
    assert!(
        err.contains(
            "error: regression gate failed: mock output_throughput (relative); mock median_tpot_ms (relative)"
        ),
        "{err}"
    );

    // Different tokens: an exact figure moved.
    let mut changed = report.clone();
    changed["runs"][0]["repeats"][1]["output_digest"] = "0000000000000000".into();
    std::fs::write(&slowed_path, serde_json::to_vec(&changed).unwrap()).unwrap();
    let (ok, _, err) = gate(&results, &slowed_path, &config);
    assert!(!ok && err.contains("regression gate failed: native output_digest"), "{err}");

    // Another workload is not comparable, whatever its speed.
    let mut other = report.clone();
    other["metadata"]["workload"]["sha256"] = "x".into();
    std::fs::write(&slowed_path, serde_json::to_vec(&other).unwrap()).unwrap();
    let (ok, _, err) = gate(&results, &slowed_path, &config);
    assert!(!ok && err.contains("the baseline is not comparable with this run: the workload differs"), "{err}");

    // The same run made to look measured on another CPU (no AVX-512, other caches): the mock slowed to 40% is then
    // reported but not gated, while a changed digest still fails.
    let mut elsewhere = report.clone();
    elsewhere["metadata"]["cpu"]["simd"] = serde_json::json!(["sse4_2", "avx", "f16c", "fma", "avx2"]);
    elsewhere["metadata"]["cpu"]["model"] = 49.into();
    let elsewhere_path = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere_path, serde_json::to_vec(&elsewhere).unwrap()).unwrap();
    let mut slowed_here = report.clone();
    slow_down(&mut slowed_here, "mock", 0.4);
    std::fs::write(&slowed_path, serde_json::to_vec(&slowed_here).unwrap()).unwrap();
    let (ok, out, err) = gate(&elsewhere_path, &slowed_path, &config);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("not gated (another CPU)") && out.contains("note: relative figures are reported, not gated"),
        "{out}"
    );
    slowed_here["runs"][0]["repeats"][1]["output_digest"] = "0000000000000000".into();
    std::fs::write(&slowed_path, serde_json::to_vec(&slowed_here).unwrap()).unwrap();
    let (ok, _, err) = gate(&elsewhere_path, &slowed_path, &config);
    assert!(!ok && err.contains("regression gate failed: native output_digest (exact figures;"), "{err}");

    // A directory of per-CPU baselines: this CPU's is picked, so the slowed mock fails again.
    let baselines = dir.path().join("baselines");
    std::fs::create_dir(&baselines).unwrap();
    std::fs::copy(&elsewhere_path, baselines.join("a-other-cpu.json")).unwrap();
    std::fs::copy(&results, baselines.join("b-this-cpu.json")).unwrap();
    std::fs::write(&slowed_path, serde_json::to_vec(&slowed).unwrap()).unwrap(); // the mock at 40% again
    let (ok, out, err) = gate(&baselines, &slowed_path, &config);
    assert!(
        !ok && out.contains("| mock | output_throughput (relative) |") && err.contains("mock output_throughput"),
        "{out}{err}"
    );
    assert!(err.contains("regression gate failed"), "{err}");

    // A broken config names its file and the problem.
    std::fs::write(&config, "[relative]\nmetrics = []\nmax_drop = 2\n[exact]\nfields = []\n").unwrap();
    let (ok, _, err) = gate(&results, &run, &config);
    assert!(!ok && err.contains("gate.toml: relative.max_drop must be in (0, 1), got 2"), "{err}");
}

#[test]
fn the_committed_baselines_are_the_gate_benchmark_and_pass_against_themselves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("reports/baselines");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let baseline = entry.unwrap().path();
        let (ok, out, err) = gate(&baseline, &baseline, &root.join("ci/gate.toml"));
        assert!(ok, "{}: {out}{err}", baseline.display());
        let report = read_json(&baseline);
        // Named after the CPU it was measured on.
        let cpu: nano_vllm_harness::machine::CpuIdentity =
            serde_json::from_value(report["metadata"]["cpu"].clone()).expect("a recorded CPU");
        assert_eq!(baseline.file_stem().unwrap().to_str().unwrap(), cpu.fingerprint());
        let runtimes: Vec<&str> =
            report["runs"].as_array().unwrap().iter().map(|r| r["runtime"].as_str().unwrap()).collect();
        assert_eq!(runtimes, ["native", "native:q8_0", "onnx", "candle", "llama-cpp", "llama-cpp:q8_0"]);
        assert!(report["runs"][0]["engine"]["preemptions"].as_u64().unwrap() > 0, "the workload preempts");
        // The model's identity is its files: the committed tiny-llama's, whatever tolerances its manifest gained.
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        assert_eq!(
            report["metadata"]["bundle"]["model_sha256"],
            bundle.model_sha256().as_str(),
            "{}",
            baseline.display()
        );
        count += 1;
    }
    assert!(count >= 1, "no baseline in {}", dir.display());
    let script = std::fs::read_to_string(root.join("ci/gate-bench.sh")).unwrap();
    assert!(
        script.contains("--runtime native,native:q8_0,onnx,candle,llama-cpp,llama-cpp:q8_0"),
        "baselines and script agree"
    );
}

/// A K-quant mix is judged by the bundle's tolerance of that mix only if llama.cpp's file holds the tensor types that
/// tolerance was measured on (the generator's emulation of llama.cpp's choice): a differing type is an error naming
/// the tensor, and a manifest with no tolerance for the mix is an error naming the mix, not a pass by another bound.
#[test]
fn a_mix_is_refused_when_its_file_is_not_the_emulated_one_or_has_no_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("tiny-llama");
    std::fs::create_dir(&bundle).unwrap();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
    }
    let manifest_path = bundle.join("manifest.json");
    let original = read_json(&manifest_path);
    let run = |manifest: &serde_json::Value| {
        std::fs::write(&manifest_path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
        let json = dir.path().join("p.json");
        let args = ["parity", "--bundle", bundle.to_str().unwrap(), "--runtime", "native:q4_k_m"];
        let (ok, out, err) = nano_vllm(&[&args[..], &["--out", json.to_str().unwrap()]].concat());
        assert!(!ok, "{out}");
        (read_json(&json)["bundles"][0]["runtimes"][0].clone(), err)
    };

    let mut changed = original.clone();
    let types = &mut changed["tolerances"]["mixes"]["q4_k_m"]["tensor_types"];
    let stored = types["blk.0.attn_v.weight"].as_str().unwrap().to_owned();
    // Two layers: use_more_bits(0, 2) is false, so the first attention values are Q4_K, which on 64-wide rows falls
    // back to Q5_0 (the second layer's are Q6_K, falling back to Q8_0).
    assert_eq!(stored, "Q5_0");
    types["blk.0.attn_v.weight"] = "Q6_K".into();
    let (runtime, err) = run(&changed);
    assert_eq!(runtime["status"], "error", "{runtime}");
    let failure = runtime["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("1 tensor differs in type from the bundle's emulation of llama.cpp's q4_k_m"),
        "{failure}"
    );
    assert!(failure.contains("blk.0.attn_v.weight: Q5_0 in the file, Q6_K in the emulation"), "{failure}");
    assert!(err.contains("parity failed"), "{err}");

    let mut without = original.clone();
    without["tolerances"].as_object_mut().unwrap().remove("mixes");
    let (runtime, _) = run(&without);
    assert_eq!(runtime["status"], "error", "{runtime}");
    assert!(runtime["failures"][0].as_str().unwrap().contains("has no q4_k_m tolerance"), "{runtime}");
}
