//! Logit parity with the reference (Hugging Face transformers, f32) of every committed fixture, through the real
//! engine in every situation: alone, batched (prefill chunks next to decodes of unequal lengths, so padded), served
//! from the prefix cache (keys and values copied from the holder), and preempted and recomputed. Tolerance: the
//! bundle's `f32` tolerance (max |diff| 1e-4, argmax 100%, greedy continuation equal). Figures are printed
//! (`--nocapture`).

mod common;

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_conformance::check_situations;
use nano_vllm_engine::Runtime;
use nano_vllm_onnx::{OnnxRuntime, StepGrouping};

/// Runs one bundle in every situation with `grouping`; returns the failures.
fn parity(name: &str, grouping: StepGrouping) -> Vec<String> {
    let bundle = open_fixture(name).unwrap();
    bundle.verify().unwrap();
    let reference = bundle.reference().unwrap();
    let options = nano_vllm_onnx::OnnxOptions { grouping, ..common::options() };
    let make = || OnnxRuntime::from_bundle(&bundle, &options).map(|r| Box::new(r) as Box<dyn Runtime>);
    let label = format!("{name} {grouping:?}");
    check_situations(&label, &reference, bundle.config().context_length, &bundle.tolerances().f32, make).failures
}

fn check_bundle(name: &str) {
    if !common::library_available(&format!("parity {name}")) {
        return;
    }
    let failures = parity(name, StepGrouping::Auto);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn committed_bundles_are_the_ones_tested_here() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"]);
}

#[test]
fn parity_tiny_llama() {
    check_bundle("tiny-llama");
}

#[test]
fn parity_tiny_qwen2() {
    check_bundle("tiny-qwen2");
}

#[test]
fn parity_tiny_qwen3() {
    check_bundle("tiny-qwen3");
}

#[test]
fn parity_tiny_gemma3() {
    check_bundle("tiny-gemma3");
}

#[test]
fn parity_tiny_phi3() {
    check_bundle("tiny-phi3");
}

#[test]
fn parity_tiny_gpt2() {
    check_bundle("tiny-gpt2");
}

/// Everything of a step in one padded run (prefill chunks padded to the longest query next to decodes), and no
/// padding at all: both within tolerance, so padding does not move the logits.
#[test]
fn parity_with_every_grouping() {
    if !common::library_available("parity_with_every_grouping") {
        return;
    }
    let mut failures = Vec::new();
    for name in COMMITTED_BUNDLES {
        for grouping in [StepGrouping::OneRun, StepGrouping::PerSequence] {
            failures.extend(parity(name, grouping));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
