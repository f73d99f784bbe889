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
    let (ok, _, err) = nano_vllm(&["generate", "--runtime", "tensorrt"]);
    assert!(
        !ok && err.starts_with("error: unknown runtime 'tensorrt'; available: native, onnx, candle, llama-cpp, mock"),
        "{err}"
    );
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
