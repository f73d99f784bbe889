//! Parity of the native runtime with transformers, through the engine, on every committed fixture: alone, in mixed
//! batches, with prefix-cache hits, and preempted and recomputed. Tolerances come from each bundle's manifest
//! (f32: max |diff| 1e-4, 100% argmax agreement, greedy continuation identical).

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_conformance::{Situation, compare, run_reference};
use nano_vllm_native::{NativeOptions, NativeRuntime};

fn check_bundle(name: &str) {
    let bundle = open_fixture(name).unwrap();
    bundle.verify().unwrap();
    let reference = bundle.reference().unwrap();
    let tol = &bundle.tolerances().f32;
    let mut failures = Vec::new();
    for situation in Situation::ALL {
        let runtime = NativeRuntime::from_bundle(&bundle, &NativeOptions { threads: 2 }).unwrap();
        let run = run_reference(Box::new(runtime), &reference, bundle.config().context_length, situation).unwrap();
        let figures = compare(&run.prompts, &reference.prompts);
        eprintln!("{name:<11} {:<13} {}", situation.as_str(), figures.summary());
        match situation {
            Situation::PrefixCached => assert!(run.prefix_hit_tokens > 0, "no prefix hits"),
            Situation::Preempted => assert!(run.preemptions > 0, "no preemption"),
            Situation::Batched => assert!(run.max_batch > 1),
            Situation::Alone => {}
        }
        if let Err(e) = figures.check(tol) {
            failures.push(format!("{name} {}: {e}", situation.as_str()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tiny_llama_parity() {
    check_bundle("tiny-llama");
}

#[test]
fn tiny_qwen2_parity() {
    check_bundle("tiny-qwen2");
}

#[test]
fn tiny_gpt2_parity() {
    check_bundle("tiny-gpt2");
}

#[test]
fn every_committed_bundle_is_covered() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2"]);
}
