//! Logit parity with the reference (Hugging Face transformers, f32) of every committed fixture, through the real
//! engine in every situation: alone, batched (prefill chunks next to decodes of unequal lengths, so padded), served
//! from the prefix cache (keys and values copied from the holder), and preempted and recomputed. Tolerance: the
//! bundle's `f32` tolerance (max |diff| 1e-4, argmax 100%, greedy continuation equal). Figures are printed
//! (`--nocapture`).

mod common;

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_conformance::{Situation, compare, run_reference};
use nano_vllm_onnx::{OnnxRuntime, StepGrouping};

/// Runs one bundle in every situation with `grouping`; returns the failures.
fn parity(name: &str, grouping: StepGrouping) -> Vec<String> {
    let bundle = open_fixture(name).unwrap();
    bundle.verify().unwrap();
    let reference = bundle.reference().unwrap();
    let tolerance = &bundle.tolerances().f32;
    let mut failures = Vec::new();
    for situation in Situation::ALL {
        let options = nano_vllm_onnx::OnnxOptions { grouping, ..common::options() };
        let runtime = OnnxRuntime::from_bundle(&bundle, &options).unwrap();
        let run = run_reference(Box::new(runtime), &reference, bundle.config().context_length, situation).unwrap();
        let figures = compare(&run.prompts, &reference.prompts);
        eprintln!(
            "{name:<10} {:<13} {:<12} steps {:>3} max batch {:>2} prefix hits {:>3} preemptions {:>2} | {}",
            situation.as_str(),
            format!("{grouping:?}"),
            run.steps,
            run.max_batch,
            run.prefix_hit_tokens,
            run.preemptions,
            figures.summary()
        );
        // The situation did what it is named after.
        let rows: usize = run.prompts.iter().map(|p| p.prompt_len + p.output_tokens.len() - 1 - p.cached_tokens).sum();
        assert_eq!(figures.rows, rows, "{name} {situation:?}: every computed row compared");
        match situation {
            Situation::Alone => assert_eq!(run.max_batch, 1),
            Situation::Batched => assert!(run.max_batch >= 4, "{name}: max batch {}", run.max_batch),
            Situation::PrefixCached => assert_eq!(run.prefix_hit_tokens, 128, "{name}: 2 x 64 shared tokens"),
            Situation::Preempted => assert!(run.preemptions > 0, "{name}: no preemption"),
        }
        if let Err(e) = figures.check(tolerance) {
            failures.push(format!("{name} {}: {e}", situation.as_str()));
        }
    }
    failures
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
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2"]);
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
