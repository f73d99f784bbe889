//! Logit parity with the transformers reference of every committed fixture, driven through the engine in every
//! situation it creates (alone, mixed batches with chunked prefill, prefix-cache hits, preemption), within the
//! bundle's f32 tolerance (max |diff| <= 1e-4, every argmax, every greedy continuation).

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_candle::{CandleOptions, CandleRuntime};
use nano_vllm_conformance::check_situations;

fn parity(name: &str) {
    let bundle = open_fixture(name).unwrap();
    let reference = bundle.reference().unwrap();
    let make = || {
        CandleRuntime::from_bundle(&bundle, &CandleOptions::default())
            .map(|r| Box::new(r) as Box<dyn nano_vllm_engine::Runtime>)
    };
    let checks = check_situations(name, &reference, bundle.config().context_length, &bundle.tolerances().f32, make);
    assert!(checks.failures.is_empty(), "{}", checks.failures.join("\n"));
}

#[test]
fn tiny_llama_matches_transformers_in_every_situation() {
    parity("tiny-llama");
}

#[test]
fn tiny_qwen2_matches_transformers_in_every_situation() {
    parity("tiny-qwen2");
}

#[test]
fn tiny_qwen3_matches_transformers_in_every_situation() {
    parity("tiny-qwen3");
}

#[test]
fn tiny_gemma3_matches_transformers_in_every_situation() {
    parity("tiny-gemma3");
}

#[test]
fn tiny_phi3_matches_transformers_in_every_situation() {
    parity("tiny-phi3");
}

#[test]
fn tiny_gpt2_matches_transformers_in_every_situation() {
    parity("tiny-gpt2");
}

#[test]
fn every_committed_bundle_has_a_parity_test() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"]);
}
