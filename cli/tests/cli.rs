//! The `nano-vllm` binary end to end.

mod util;

use util::nano_vllm;

#[test]
fn version_lists_the_compiled_in_runtimes() {
    let (ok, out, _) = nano_vllm(&["--version"]);
    assert!(ok);
    assert!(out.contains("runtimes: native, onnx, candle, llama-cpp, mock"), "{out}");
}

#[test]
fn generate_is_greedy_and_reproducible_on_every_fixture() {
    for bundle in ["fixtures/tiny-llama", "fixtures/tiny-qwen2", "fixtures/tiny-gpt2"] {
        let args =
            ["generate", "--bundle", bundle, "--prompt", "Once upon a time", "--max-tokens", "12", "--threads", "1"];
        let (ok, first, err) = nano_vllm(&args);
        assert!(ok, "{bundle}: {err}");
        assert!(first.starts_with("[1] Once upon a time"), "{first}");
        assert!(err.contains("+ 12 output tokens"), "{err}");
        let (_, second, _) = nano_vllm(&args);
        assert_eq!(first, second, "{bundle}: greedy output must not change between runs");
    }
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    // Runtime names are parsed with the arguments, before any model is read.
    let (ok, _, err) = nano_vllm(&["generate", "--runtime", "tensorrt"]);
    assert!(
        !ok && err.starts_with(
            "error: invalid value 'tensorrt' for '--runtime <RUNTIME>': unknown runtime 'tensorrt'; available: native, \
             onnx, candle, llama-cpp, mock"
        ),
        "{err}"
    );
    let (ok, _, err) = nano_vllm(&["generate", "--runtime", "native:q8_0,q4_0"]);
    assert!(!ok && err.contains("runtime 'native:q8_0,q4_0': option 'q4_0' is not known"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--bundle", "fixtures/nope"]);
    assert!(!ok && err.contains("fixtures/nope: no such file or directory"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--max-tokens", "1000"]);
    assert!(!ok && err.contains("exceeds the model's context (256)"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--prompt", ""]);
    assert!(!ok && err.contains("prompt 1 encodes to no tokens"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn simulate_reports_preemption_under_a_small_cache() {
    let (ok, out, err) = nano_vllm(&["simulate", "--requests", "60", "--kv-blocks", "30"]);
    assert!(ok, "{err}");
    assert!(out.contains("60 requests"), "{out}");
    let preemptions: usize =
        out.lines().find(|l| l.contains("preemptions")).unwrap().split_whitespace().last().unwrap().parse().unwrap();
    assert!(preemptions > 0, "{out}");
}

/// Models as users have them, broken in the ways they break: each error names the file and what is wrong.
#[test]
fn bad_model_files_are_named_with_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = std::fs::read("../fixtures/tiny-llama/model.f32.gguf").unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let generate = |model: &str, runtime: &str| nano_vllm(&["generate", "--model", model, "--runtime", runtime]);

    // The f32 GGUF alone runs on native, candle and llama.cpp, tokenized by its own vocabulary.
    let good = write("tiny.gguf", &gguf);
    for runtime in ["native", "candle", "llama-cpp"] {
        let (ok, out, err) = generate(&good, runtime);
        assert!(ok && out.starts_with("[1] The engine schedules requests"), "{runtime}: {err}");
    }
    let (ok, _, err) = generate(&good, "onnx");
    assert!(!ok && err.contains("runtime 'onnx' needs an ONNX graph") && err.contains("tiny.gguf"), "{err}");

    // An architecture the HF runtimes do not implement: named, with the runtime that might.
    // (Every `llama` of the metadata renamed: the architecture and its keys.)
    let mut mamba = gguf.clone();
    let header = mamba.windows(10).position(|w| w == b"token_embd").unwrap();
    while let Some(at) = mamba[..header].windows(5).position(|w| w == b"llama") {
        mamba[at..at + 5].copy_from_slice(b"mamba");
    }
    let path = write("mamba.gguf", &mamba);
    let (ok, _, err) = generate(&path, "native");
    assert!(!ok && err.contains("mamba.gguf: architecture 'mamba' is not supported"), "{err}");
    assert!(err.contains("such as llama-cpp"), "{err}");

    // Truncated: the tensor that no longer fits is named.
    let path = write("cut.gguf", &gguf[..gguf.len() * 2 / 3]);
    let (ok, _, err) = generate(&path, "native");
    assert!(!ok && err.contains("cut.gguf") && err.contains("lies outside the file"), "{err}");

    // Not a model at all.
    let path = write("notes.txt", b"hello");
    let (ok, _, err) = generate(&path, "native");
    assert!(!ok && err.contains("notes.txt: not a model: expected a GGUF file"), "{err}");

    // An HF directory without tokenizer.json.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(format!("../fixtures/tiny-llama/{f}"), hf.join(f)).unwrap();
    }
    let (ok, _, err) = generate(hf.to_str().unwrap(), "native");
    assert!(!ok && err.contains("hf: no tokenizer: an HF directory needs tokenizer.json"), "{err}");
    std::fs::copy("../fixtures/tiny-llama/tokenizer.json", hf.join("tokenizer.json")).unwrap();
    let (ok, _, err) = generate(hf.to_str().unwrap(), "native");
    assert!(ok, "{err}");
    let (ok, _, err) = generate(hf.to_str().unwrap(), "llama-cpp");
    assert!(!ok && err.contains("runtime 'llama-cpp' needs a GGUF file"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--model", hf.to_str().unwrap(), "--chat"]);
    assert!(!ok && err.contains("has no chat template; drop --chat"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_flag_values_are_named_errors_not_unknown_arguments() {
    let mock = ["bench", "--runtime", "mock", "--requests", "4", "--quiet"];
    let bench = |extra: &[&str]| nano_vllm(&[&mock[..], extra].concat());
    let (ok, _, err) = bench(&["--threads", "1000000"]);
    assert!(!ok && err.contains("--threads") && err.contains("1000000 threads: at most 1024"), "{err}");
    let (ok, _, err) = bench(&["--threads", "-1"]);
    assert!(!ok && err.contains("invalid value '-1' for '--threads"), "{err}");
    for rate in ["-1", "NaN", "0", "-inf"] {
        let (ok, _, err) = bench(&["--mode", "online", "--rate", rate]);
        assert!(!ok && err.contains("request rate must be > 0 (or inf)"), "--rate {rate}: {err}");
    }
    let (ok, _, err) = bench(&["--mode", "online", "--rate", "4", "--burstiness", "-2"]);
    assert!(!ok && err.contains("burstiness must be > 0, got -2"), "{err}");
    for p in ["-5", "NaN", "150", "0"] {
        let (ok, _, err) = bench(&["--percentiles", p]);
        assert!(!ok && err.contains("is not a percentile (0 < p <= 100)"), "--percentiles {p}: {err}");
    }
    let (ok, _, err) = bench(&["--warmup", "-3"]);
    assert!(!ok && err.contains("invalid value '-3' for '--warmup"), "{err}");
    for n in ["-1", "0", "1001"] {
        let (ok, _, err) = bench(&["--repeat", n]);
        assert!(!ok && err.contains(&format!("invalid value '{n}' for '--repeat")), "{err}");
    }
    let (ok, _, err) = nano_vllm(&["parity", "--threads", "5000"]);
    assert!(!ok && err.contains("5000 threads: at most 1024"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--threads", "5000"]);
    assert!(!ok && err.contains("5000 threads: at most 1024"), "{err}");
}

#[test]
fn a_run_directory_is_never_overwritten_and_an_unwritable_one_is_found_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let bench = |out: &str| nano_vllm(&["bench", "--runtime", "mock", "--requests", "4", "--quiet", "--out", out]);
    let (ok, _, err) = bench(out.to_str().unwrap());
    assert!(ok, "{err}");
    let before = std::fs::read(out.join("results.json")).unwrap();
    // A second run into the same directory is refused before it runs; the first run's files stay as they were.
    let (ok, _, err) = bench(out.to_str().unwrap());
    assert!(!ok && err.contains("already holds a run") && err.contains("results.json"), "{err}");
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), before);
    // `report RUN --out RUN` would replace the run's own report (and its latency charts).
    let (ok, _, err) = nano_vllm(&["report", out.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("is the run directory"), "{err}");
    let results_file = out.join("results.json");
    let (ok, _, err) = nano_vllm(&["report", results_file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("is the run directory"), "{err}");
    // A directory that cannot be created (below a file) fails before the benchmark.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, _, err) = bench(file.join("run").to_str().unwrap());
    assert!(!ok && err.contains("cannot create the directory"), "{err}");
    // The new run's results.json records where it came from.
    let results: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let p = &results["metadata"]["provenance"];
    assert!(p["rustc"].as_str().unwrap().starts_with("rustc "), "{p}");
    assert!(p["libraries"]["llama-cpp-2"].is_string() && p["libraries"]["ort"].is_string(), "{p}");
    assert!(p["git_dirty"].is_boolean() && p["kernel"].is_string() && p["cargo_features"].is_array(), "{p}");
}

#[test]
fn bench_verifies_the_bundles_checksums_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("tiny-llama");
    std::fs::create_dir(&bundle).unwrap();
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama"));
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), bundle.join(e.file_name())).unwrap();
        }
    }
    let tokenizer = bundle.join("tokenizer.json");
    let mut bytes = std::fs::read(&tokenizer).unwrap();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b' ' { b'\n' } else { b' ' };
    std::fs::write(&tokenizer, bytes).unwrap();
    let out = dir.path().join("run");
    let (ok, _, err) = nano_vllm(&[
        "bench",
        "--bundle",
        bundle.to_str().unwrap(),
        "--runtime",
        "mock",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("tokenizer.json: sha256 is") && err.contains("but the manifest says"), "{err}");
    assert!(!out.exists(), "nothing is written for a run that did not start");
}

#[test]
fn hostile_traces_end_in_named_errors_and_a_million_lines_replay_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |trace: &std::path::Path, extra: &[&str]| {
        let out = dir.path().join(format!("out-{}", trace.file_name().unwrap().to_string_lossy()));
        let args = ["bench", "--runtime", "mock", "--warmup", "0", "--quiet", "--workload", trace.to_str().unwrap()];
        nano_vllm(&[&args[..], extra, &["--out", out.to_str().unwrap()]].concat())
    };
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // An arrival beyond any run (or a rate in the wrong units) would make the replay wait forever.
    let far = write("far.jsonl", "{\"arrival_s\": 1e300, \"prompt_ids\": [5], \"max_tokens\": 4}\n");
    let (ok, _, err) = bench(&far, &["--mode", "online"]);
    assert!(!ok && err.contains("request #0: arrives at 1.000e300 s, beyond the longest run"), "{err}");
    // Offline ignores arrival times (a trace of epoch timestamps runs).
    let epoch = write("epoch.jsonl", "{\"arrival_s\": 1.8e9, \"prompt_ids\": [5], \"max_tokens\": 4}\n");
    let (ok, _, err) = bench(&epoch, &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = nano_vllm(&["bench", "--runtime", "mock", "--mode", "online", "--rate", "1e-300", "--quiet"]);
    assert!(!ok && err.contains("beyond the longest run this harness replays"), "{err}");
    for (name, line, expected) in [
        ("nan.jsonl", "{\"arrival_s\": NaN, \"prompt_ids\": [5], \"max_tokens\": 4}", "nan.jsonl:1: expected value"),
        (
            "neg.jsonl",
            "{\"arrival_s\": -1, \"prompt_ids\": [5], \"max_tokens\": 4}",
            "`arrival_s` must be a finite number >= 0",
        ),
        (
            "oov.jsonl",
            "{\"prompt_ids\": [999999], \"max_tokens\": 4}",
            "token id 999999 is outside the vocabulary (512)",
        ),
        ("empty.jsonl", "{\"prompt_ids\": [], \"max_tokens\": 4}", "empty.jsonl:1: `prompt_ids` is empty"),
        ("zero.jsonl", "{\"prompt_ids\": [5], \"max_tokens\": 0}", "zero.jsonl:1: max_tokens must be at least 1"),
        ("huge.jsonl", "{\"prompt_ids\": [5], \"max_tokens\": 1000000000}", "exceeds the model's context (256)"),
        (
            "max.jsonl",
            "{\"prompt_ids\": [5], \"max_tokens\": 18446744073709551615}",
            "exceeds the model's context (256)",
        ),
    ] {
        let (ok, _, err) = bench(&write(name, &format!("{line}\n")), &[]);
        assert!(!ok && err.contains(expected), "{name}: {err}");
    }
    // A million requests: the replay is linear in the requests (a per-completion search made this one never finish).
    let mut text = String::with_capacity(40 << 20);
    for i in 0..1_000_000 {
        text.push_str(&format!(
            "{{\"prompt_ids\": [5, 6], \"max_tokens\": 1, \"arrival_s\": {:.6}}}\n",
            i as f64 * 1e-6
        ));
    }
    let million = write("million.jsonl", &text);
    let (ok, stdout, err) = bench(&million, &[]);
    assert!(ok, "{err}");
    assert!(stdout.contains("| mock |"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out-million.jsonl").join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["runs"][0]["metrics"]["completed"], 1_000_000.0);
}

#[test]
fn generate_shows_each_first_token_beside_its_runner_up() {
    let args =
        ["generate", "--prompt", "Once upon a time", "--prompt", "The", "--max-tokens", "4", "--first-token-margin"];
    let (ok, out, err) = nano_vllm(&args);
    assert!(ok, "{err}");
    for k in [1, 2] {
        let line =
            out.lines().find(|l| l.starts_with(&format!("[{k}] first token: "))).unwrap_or_else(|| panic!("{out}"));
        // `"tok" (p 0.xxx), runner-up "tok" (p 0.xxx): logit gap g`, the gap not negative.
        let gap: f32 = line.rsplit("logit gap ").next().unwrap().parse().unwrap();
        assert!(line.contains(", runner-up ") && gap >= 0.0, "{line}");
    }
}
