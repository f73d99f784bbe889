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
    assert!(!ok && err.contains("fixtures/nope/manifest.json: file is missing"), "{err}");
    let (ok, _, err) = nano_vllm(&["generate", "--max-tokens", "1000"]);
    assert!(!ok && err.contains("exceeds max_model_len (256)"), "{err}");
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
