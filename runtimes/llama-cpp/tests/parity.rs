//! Logit parity of llama.cpp with the transformers reference of every committed fixture, driven through the engine.
//!
//! F32 GGUF, parity settings (F32 KV cache, flash attention off, non-unified cache): in every situation the engine
//! creates (alone, mixed batches with chunked prefill, prefix-cache hits, preemption), within the bundle's
//! `llama_cpp_f32` tolerance (1e-4 and every argmax for Llama and Qwen2; GPT-2 carries a documented override for
//! ggml's f16 GELU table). Q8_0 GGUF: teacher forced on the reference tokens, mean KL divergence and top-1 agreement
//! within the bundle's `q8_0` tolerance.

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_conformance::{
    Situation, check_situations, compare, compare_teacher_forced, run_reference, run_teacher_forced,
};
use nano_vllm_engine::Runtime;
use nano_vllm_llama_cpp::{LlamaCppOptions, LlamaCppRuntime, Weights};

fn settings(runtime: &LlamaCppRuntime) -> String {
    let info = runtime.info();
    let get = |k: &str| info.settings.iter().find(|(key, _)| key == k).map_or("?", |(_, v)| v.as_str()).to_string();
    format!(
        "{} weights, kv {}, flash attention {}, unified cache {}, n_seq_max {}, threads {}",
        info.dtype,
        get("kv_type"),
        get("flash_attention"),
        get("unified_kv_cache"),
        get("n_seq_max"),
        get("threads")
    )
}

fn f32_parity(name: &str) {
    let bundle = open_fixture(name).unwrap();
    let reference = bundle.reference().unwrap();
    let tolerance = bundle.tolerances().llama_cpp_f32();
    let options = LlamaCppOptions::parity();
    let probe = LlamaCppRuntime::from_bundle(&bundle, &options).unwrap();
    println!("{name}: {} (tolerance max|d| {:.0e})", settings(&probe), tolerance.max_abs_diff);
    drop(probe);
    let make = || LlamaCppRuntime::from_bundle(&bundle, &options).map(|r| Box::new(r) as Box<dyn Runtime>);
    let checks = check_situations(&format!("{name} f32"), &reference, bundle.config().context_length, tolerance, make);
    assert!(checks.failures.is_empty(), "{}", checks.failures.join("\n"));
}

fn q8_0_teacher_forced(name: &str) {
    let bundle = open_fixture(name).unwrap();
    let reference = bundle.reference().unwrap();
    let tolerance = &bundle.tolerances().q8_0;
    let runtime =
        LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity().with_weights(Weights::Q8_0)).unwrap();
    println!("{name}: {}", settings(&runtime));
    assert_eq!(runtime.info().dtype, "q8_0");
    let runs = run_teacher_forced(Box::new(runtime), &reference, bundle.config().context_length).unwrap();
    let figures = compare_teacher_forced(&runs, &reference.prompts);
    println!(
        "{name} q8_0 teacher-forced {} | tolerance mean KL <= {}, top-1 >= {}",
        figures.summary(),
        tolerance.max_mean_kl,
        tolerance.min_top1_agreement
    );
    let all_rows: usize = reference.prompts.iter().map(|p| p.all_logits().rows()).sum();
    assert_eq!((figures.rows, figures.missing_rows), (all_rows, 0), "{name}");
    // Quantized weights really change the logits (the q8_0 file was loaded, not the f32 one).
    assert!(figures.mean_kl > 0.0 && figures.max_abs_diff > 1e-4, "{name}: {}", figures.summary());
    figures.check(tolerance).unwrap_or_else(|e| panic!("{name} q8_0: {e}"));
}

#[test]
fn tiny_llama_f32_matches_transformers_in_every_situation() {
    f32_parity("tiny-llama");
}

#[test]
fn tiny_qwen2_f32_matches_transformers_in_every_situation() {
    f32_parity("tiny-qwen2");
}

#[test]
fn tiny_gpt2_f32_matches_transformers_in_every_situation() {
    f32_parity("tiny-gpt2");
}

#[test]
fn tiny_llama_q8_0_teacher_forced_within_kl_and_top1_tolerance() {
    q8_0_teacher_forced("tiny-llama");
}

#[test]
fn tiny_qwen2_q8_0_teacher_forced_within_kl_and_top1_tolerance() {
    q8_0_teacher_forced("tiny-qwen2");
}

#[test]
fn tiny_gpt2_q8_0_teacher_forced_within_kl_and_top1_tolerance() {
    q8_0_teacher_forced("tiny-gpt2");
}

#[test]
fn every_committed_bundle_has_a_parity_test() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2"]);
}

/// The 42M-parameter bench model, when generated (`fixtures/bench` is git-ignored): f32 alone and batched, q8_0
/// teacher forced. It holds only the `single` and `short` prompts (no shared prefix, nothing to preempt).
#[test]
fn bench_model_when_generated() {
    let Ok(bundle) = nano_vllm_bundle::open_fixture("bench") else {
        println!(
            "fixtures/bench is absent: skipped (make it with `.venv/bin/python fixtures/generate.py --preset bench`)"
        );
        return;
    };
    let reference = bundle.reference().unwrap();
    // 0: the longest prompt + continuation. `run_reference`'s Batched situation sizes the cache for the prompts only,
    // which the model's 1024-token context would exceed.
    let context = 0;
    for situation in [Situation::Alone, Situation::Batched] {
        let runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity()).unwrap();
        let run = run_reference(Box::new(runtime), &reference, context, situation).unwrap();
        let figures = compare(&run.prompts, &reference.prompts);
        println!("bench f32 {:<13} {}", situation.as_str(), figures.summary());
        figures.check(bundle.tolerances().llama_cpp_f32()).unwrap_or_else(|e| panic!("bench f32: {e}"));
    }
    let options = LlamaCppOptions::parity().with_weights(Weights::Q8_0);
    let runs =
        run_teacher_forced(Box::new(LlamaCppRuntime::from_bundle(&bundle, &options).unwrap()), &reference, context)
            .unwrap();
    let figures = compare_teacher_forced(&runs, &reference.prompts);
    println!("bench q8_0 teacher-forced {}", figures.summary());
    figures.check(&bundle.tolerances().q8_0).unwrap_or_else(|e| panic!("bench q8_0: {e}"));
}
