//! Gemma 3 270M, the second real model, as users have it: the Q4_K_M GGUF ci/setup.sh joins from its PyPI chunk
//! packages (fixtures/gemma-3-270m-q4_k_m.gguf, sha256 pinned). Held to transformers' logits of the same file
//! (fixtures/golden/logits-gemma3.json, made by fixtures/golden/make_gguf_logits.py: top 5 of every position of a
//! short prompt and of a 600-token one, longer than the 512-token sliding window), teacher forced through the engine:
//! - the runtimes that dequantize the file to f32 (native:f32, candle) give those logits within an f32 tolerance;
//! - native on the file as stored (its Q4_K / Q5_0 / Q6_K / Q8_0 blocks) and llama.cpp compute the same quantized
//!   model: their distributions agree with each other (KL, top-1) as closely as two implementations of the same
//!   rounding can, and each stays near transformers' f32 model.
//!
//! `#[ignore]`d like every test of a generated fixture; the test command runs them with `--ignored`.

use std::path::PathBuf;

use nano_vllm_bundle::{Logits, PromptKind, Reference, ReferencePrompt};
use nano_vllm_conformance::{PromptRun, compare_runs, run_teacher_forced};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};
use serde_json::Value;

const VOCAB: usize = 262_144;

fn gguf() -> PathBuf {
    let path = nano_vllm_bundle::fixtures_dir().join("gemma-3-270m-q4_k_m.gguf");
    assert!(path.is_file(), "{} is missing: run `bash ci/setup.sh` (it joins the pinned file)", path.display());
    path
}

/// A golden prompt: its ids, and per position the top-5 ids and logits of transformers.
struct Golden {
    name: String,
    ids: Vec<u32>,
    top_ids: Vec<Vec<u32>>,
    top_logits: Vec<Vec<f32>>,
}

fn golden() -> Vec<Golden> {
    let path = nano_vllm_bundle::fixtures_dir().join("golden/logits-gemma3.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    doc["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Golden {
            name: p["name"].as_str().unwrap().to_owned(),
            ids: ids(&p["ids"]),
            top_ids: p["top_ids"].as_array().unwrap().iter().map(ids).collect(),
            top_logits: p["top_logits"].as_array().unwrap().iter().map(floats).collect(),
        })
        .collect()
}

/// The golden prompts as a reference the engine's teacher forcing runs (ids only: the logits are compared here).
fn prompts(golden: &[Golden]) -> Reference {
    let empty = || Logits::new(VOCAB, Vec::new()).unwrap();
    let prompts = golden
        .iter()
        .map(|g| ReferencePrompt {
            name: g.name.clone(),
            kind: PromptKind::Long,
            shared_prefix_len: None,
            prompt_ids: g.ids.clone(),
            prompt_logits: empty(),
            greedy_tokens: Vec::new(),
            greedy_logits: empty(),
        })
        .collect();
    Reference { vocab_size: VOCAB, prompts }
}

fn run(runtime: &str, golden: &[Golden]) -> Vec<PromptRun> {
    let model = ModelSource::open(gguf()).unwrap();
    let settings =
        RuntimeSettings { max_model_len: Some(1024), max_num_batched_tokens: Some(1024), ..Default::default() };
    let rt = registry::build(&runtime.parse().unwrap(), &model, &settings).unwrap_or_else(|e| panic!("{runtime}: {e}"));
    run_teacher_forced(rt, &prompts(golden), 1024).unwrap_or_else(|e| panic!("{runtime}: {e}"))
}

/// Against transformers' top 5 at every position: the largest |diff| over those logits, and the share of positions
/// whose argmax is transformers'.
fn against_golden(runs: &[PromptRun], golden: &[Golden]) -> (f32, f64) {
    let (mut max_diff, mut same, mut rows) = (0.0f32, 0, 0);
    for g in golden {
        let r = runs.iter().find(|r| r.name == g.name).unwrap();
        assert_eq!(r.positions.len(), g.ids.len(), "{}: every position computed", g.name);
        for (k, (ids, logits)) in g.top_ids.iter().zip(&g.top_logits).enumerate() {
            let row = &r.logits[k * r.vocab..(k + 1) * r.vocab];
            for (&id, &want) in ids.iter().zip(logits) {
                max_diff = max_diff.max((row[id as usize] - want).abs());
            }
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            same += usize::from(argmax == ids[0]);
            rows += 1;
        }
    }
    (max_diff, same as f64 / rows as f64)
}

#[test]
#[ignore = "needs fixtures/gemma-3-270m-q4_k_m.gguf (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn the_f32_runtimes_compute_transformers_gemma3_logits() {
    let golden = golden();
    assert_eq!(golden.iter().map(|g| g.ids.len()).collect::<Vec<_>>(), [6, 600]);
    for runtime in ["native:f32", "candle"] {
        let (max_diff, top1) = against_golden(&run(runtime, &golden), &golden);
        eprintln!("{runtime} vs transformers: max |diff| {max_diff:.3e} over the top 5, top-1 agreement {top1:.4}");
        // Measured 3.8e-5 (native:f32), 5.0e-5 (candle) on AMD EPYC (AVX2); the bound leaves room for another
        // summation order, not for another model.
        assert!(max_diff < 2e-4, "{runtime}: max |diff| {max_diff}");
        assert_eq!(top1, 1.0, "{runtime}");
    }
}

#[test]
#[ignore = "needs fixtures/gemma-3-270m-q4_k_m.gguf (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn native_and_llama_cpp_compute_the_same_quantized_gemma3() {
    let golden = golden();
    let native = run("native", &golden);
    let llama = run("llama-cpp", &golden);
    let pair = compare_runs(&native, &llama);
    eprintln!("native vs llama.cpp on the Q4_K_M file: {}", pair.summary());
    for (name, runs) in [("native", &native), ("llama-cpp", &llama)] {
        let (max_diff, top1) = against_golden(runs, &golden);
        eprintln!("{name} vs transformers f32: max |diff| {max_diff:.3} over the top 5, top-1 agreement {top1:.4}");
        // Measured 0.944 (native), 0.947 (llama.cpp): 4-5 bit weights flip the near ties.
        assert!(top1 >= 0.9, "{name}: top-1 agreement with the f32 model {top1}");
    }
    // Measured: mean KL 6.4e-3, top-1 0.936, the same before and after native's K-quant products became ggml's
    // integer sums on Q8_K activations. What is left is what two exact implementations of that rounding differ by:
    // emulated in torch on the whole file (fixtures/gemma3-270m's manifest, nvfix/ggml_activations.py), the order
    // floor (f32 vs f64 summation, or ggml's f16 GELU table alone) is 2.6e-2 on the bundle's prompts, where `nano-vllm
    // parity` measures this pair at 2.74e-2 and holds it to twice the floor.
    assert_eq!(pair.rows, 606);
    assert!(pair.mean_kl < 0.02 && pair.top1_agreement >= 0.9, "{}", pair.summary());
}
