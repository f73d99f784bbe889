//! Logit parity with the transformers reference of every committed fixture, driven through the engine in every
//! situation it creates (alone, mixed batches with chunked prefill, prefix-cache hits, preemption), within the
//! bundle's f32 tolerance (max |diff| <= 1e-4, every argmax, every greedy continuation).

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_candle::{CandleOptions, CandleRuntime};
use nano_vllm_conformance::{Situation, compare, run_reference};

fn parity(name: &str) {
    let bundle = open_fixture(name).unwrap();
    let reference = bundle.reference().unwrap();
    let tolerance = &bundle.tolerances().f32;
    let mut failures = Vec::new();
    for situation in Situation::ALL {
        let runtime = CandleRuntime::from_bundle(&bundle, &CandleOptions::default()).unwrap();
        let run = run_reference(Box::new(runtime), &reference, bundle.config().context_length, situation).unwrap();
        let figures = compare(&run.prompts, &reference.prompts);
        println!(
            "{name} {:<13} {} | steps {} max_batch {} prefix_hit_tokens {} preemptions {}",
            situation.as_str(),
            figures.summary(),
            run.steps,
            run.max_batch,
            run.prefix_hit_tokens,
            run.preemptions
        );
        // The situation really happened.
        match situation {
            Situation::Alone => assert_eq!(run.max_batch, 1, "{name}"),
            Situation::Batched => assert!(run.max_batch > 1, "{name}: no step batched several sequences"),
            Situation::PrefixCached => assert!(run.prefix_hit_tokens >= 64, "{name}: no prefix hit"),
            Situation::Preempted => assert!(run.preemptions > 0, "{name}: nothing was preempted"),
        }
        // Every reference row was compared (prefix-cached positions are not recomputed).
        let expected_rows: usize = reference
            .prompts
            .iter()
            .zip(&run.prompts)
            .map(|(p, r)| p.prompt_ids.len() + p.greedy_tokens.len() - 1 - r.cached_tokens)
            .sum();
        assert_eq!(figures.rows, expected_rows, "{name} {}", situation.as_str());
        if let Err(e) = figures.check(tolerance) {
            failures.push(format!("{name} {}: {e}", situation.as_str()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
fn tiny_gpt2_matches_transformers_in_every_situation() {
    parity("tiny-gpt2");
}

#[test]
fn every_committed_bundle_has_a_parity_test() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2"]);
}
