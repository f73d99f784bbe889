//! The runtime driven by hand-built steps (no engine): batching, logit row order, sequence ids, prefix copies,
//! settings.

mod common;

use common::{Part, max_abs_diff, step};
use nano_vllm_bundle::{ReferencePrompt, open_fixture};
use nano_vllm_engine::{KvCacheKind, PrefixReuse, Runtime};
use nano_vllm_llama_cpp::{LLAMA_CPP_2_VERSION, LlamaCppOptions, LlamaCppRuntime, Weights};

fn runtime(options: &LlamaCppOptions) -> LlamaCppRuntime {
    LlamaCppRuntime::from_bundle(&open_fixture("tiny-llama").unwrap(), options).unwrap()
}

fn prompt(name: &str) -> ReferencePrompt {
    open_fixture("tiny-llama").unwrap().reference().unwrap().prompt(name).unwrap().clone()
}

/// Reference rows `from..to` of a prompt's logits, flattened.
fn reference_rows(p: &ReferencePrompt, from: usize, to: usize) -> Vec<f32> {
    (from..to).flat_map(|i| p.prompt_logits.row(i).to_vec()).collect()
}

#[test]
fn a_sequence_computes_the_same_alone_and_chunked_inside_mixed_batches() {
    let long = prompt("long");
    let ids = &long.prompt_ids[..40];
    let mut alone = runtime(&LlamaCppOptions::parity());
    let alone_logits = alone.step(&step(&[Part::new(0, ids, 0)])).unwrap().logits;
    assert!(max_abs_diff(&alone_logits, &reference_rows(&long, 0, 40)) < 1e-4);

    // The same prompt in chunks of 16 / 24 tokens, sharing steps with other sequences' prefills and decodes.
    let short = prompt("short");
    let mut mixed = runtime(&LlamaCppOptions::parity());
    let first = mixed.step(&step(&[Part::new(5, &short.prompt_ids, 0), Part::new(0, &ids[..16], 0)])).unwrap();
    let second = mixed
        .step(&step(&[
            Part::new(0, &ids[16..], 16),
            Part::new(5, &short.greedy_tokens[..1], short.prompt_ids.len()),
            Part::new(7, &[3, 4, 5], 0),
        ]))
        .unwrap();
    let vocab = 512;
    let n_short = short.prompt_ids.len();
    let mut chunked = first.logits[n_short * vocab..].to_vec();
    chunked.extend_from_slice(&second.logits[..24 * vocab]);
    let d = max_abs_diff(&chunked, &alone_logits);
    println!("alone vs chunked in mixed batches: max |diff| {d:.2e}");
    assert!(d < 1e-5, "{d}");
    // The other sequences got their own logits: the short prompt's rows and its first decode step.
    assert!(max_abs_diff(&first.logits[..n_short * vocab], &reference_rows(&short, 0, n_short)) < 1e-4);
    let decode = &second.logits[24 * vocab..25 * vocab];
    assert!(max_abs_diff(decode, short.greedy_logits.row(1)) < 1e-4);
}

#[test]
fn output_rows_follow_logits_indices_whatever_the_llama_sequence_ids() {
    let (a, b) = (prompt("short"), prompt("prefix_a"));
    let mut rt = runtime(&LlamaCppOptions::parity());
    rt.step(&step(&[Part::new(10, &[9], 0), Part::new(11, &a.prompt_ids, 0)])).unwrap();
    assert_eq!((rt.llama_seq_id(10), rt.llama_seq_id(11)), (Some(0), Some(1)));
    rt.release(10);
    // Packed as [11 (llama id 1), 12 (llama id 0)]; llama.cpp's batch holds 12 first.
    let n = a.prompt_ids.len();
    let out =
        rt.step(&step(&[Part::new(11, &a.greedy_tokens[..1], n), Part::new(12, &b.prompt_ids[..20], 0)])).unwrap();
    assert_eq!(rt.llama_seq_id(12), Some(0));
    assert_eq!(out.num_rows(), 21);
    assert!(max_abs_diff(out.row(0), a.greedy_logits.row(1)) < 1e-4);
    assert!(max_abs_diff(&out.logits[512..], &reference_rows(&b, 0, 20)) < 1e-4);
    // Only the asked-for rows come back, in the asked-for order.
    let mut reversed = step(&[Part::new(12, &b.prompt_ids[20..24], 20)]);
    reversed.logits_indices = vec![3, 0];
    reversed.seqs[0].num_logits = 2;
    let out = rt.step(&reversed).unwrap();
    assert_eq!(out.num_rows(), 2);
    assert!(max_abs_diff(out.row(0), b.prompt_logits.row(23)) < 1e-4);
    assert!(max_abs_diff(out.row(1), b.prompt_logits.row(20)) < 1e-4);
}

#[test]
fn release_removes_the_cells_and_frees_the_llama_sequence_id() {
    let mut rt = runtime(&LlamaCppOptions::parity());
    rt.step(&step(&[Part::new(1, &[5, 6, 7, 8], 0), Part::new(2, &[9, 10], 0)])).unwrap();
    assert_eq!((rt.cached_positions(1), rt.cached_positions(2)), (Some((0, 3)), Some((0, 1))));
    rt.release(1);
    rt.release(1); // twice is harmless
    assert_eq!((rt.num_held_sequences(), rt.cached_positions(1), rt.held_tokens(1)), (1, None, 0));
    // The freed id is reused by the next sequence, which starts from an empty cache.
    rt.step(&step(&[Part::new(3, &[11], 0)])).unwrap();
    assert_eq!((rt.llama_seq_id(3), rt.cached_positions(3)), (Some(0), Some((0, 0))));
    rt.clear();
    assert_eq!(rt.num_held_sequences(), 0);
    rt.step(&step(&[Part::new(4, &[11, 12], 0)])).unwrap();
    assert_eq!((rt.llama_seq_id(4), rt.cached_positions(4)), (Some(0), Some((0, 1))));
}

#[test]
fn a_prefix_hit_is_served_by_copying_the_holders_cells() {
    let (a, b) = (prompt("prefix_a"), prompt("prefix_b"));
    let shared = b.shared_prefix_len.unwrap();
    assert_eq!((shared, &a.prompt_ids[..shared]), (64, &b.prompt_ids[..shared]));
    let mut rt = runtime(&LlamaCppOptions::parity());
    // The holder computes its whole prompt (65 tokens, blocks 0..=4) and one decode step.
    let n_a = a.prompt_ids.len();
    rt.step(&step(&[Part::new(0, &a.prompt_ids, 0)])).unwrap();
    rt.step(&step(&[Part::new(0, &a.greedy_tokens[..1], n_a)])).unwrap();
    // The follower hits the 4 shared blocks; only its own tokens are computed, next to the holder's decode.
    let hit =
        Part { cached: shared, block_table: vec![0, 1, 2, 3, 9], ..Part::new(1, &b.prompt_ids[shared..], shared) };
    let out = rt.step(&step(&[Part::new(0, &a.greedy_tokens[1..2], n_a + 1), hit])).unwrap();
    let n_b = b.prompt_ids.len();
    assert!(max_abs_diff(&out.logits[512..], &reference_rows(&b, shared, n_b)) < 1e-4);
    assert_eq!(rt.cached_positions(1), Some((0, n_b as i32 - 1)));
    // The holder is untouched by the copy and trim.
    assert!(max_abs_diff(out.row(0), a.greedy_logits.row(2)) < 1e-4);
    assert_eq!(rt.cached_positions(0), Some((0, n_a as i32 + 1)));
    // The copy outlives its holder.
    rt.release(0);
    let next = rt.step(&step(&[Part::new(1, &b.greedy_tokens[..1], n_b)])).unwrap();
    assert!(max_abs_diff(next.row(0), b.greedy_logits.row(1)) < 1e-4);
}

/// The engine's contract is per block: a hit's blocks may be held by different sequences (each computed its own
/// copy of the prefix). The holder of the last hit block has the same tokens before it, so it serves the whole hit.
#[test]
fn a_prefix_hit_whose_blocks_have_different_holders_is_served_by_the_last_blocks_holder() {
    let (a, b, c) = (prompt("prefix_a"), prompt("prefix_b"), prompt("prefix_c"));
    let shared = b.shared_prefix_len.unwrap();
    let mut rt = runtime(&LlamaCppOptions::parity());
    // A and C computed the shared prefix separately: A holds blocks 0..=4, C blocks 10..=15.
    let holder_a = Part { block_table: vec![0, 1, 2, 3, 4], ..Part::new(0, &a.prompt_ids, 0) };
    let holder_c = Part { block_table: vec![10, 11, 12, 13, 14, 15], ..Part::new(2, &c.prompt_ids, 0) };
    rt.step(&step(&[holder_a, holder_c])).unwrap();
    // B hits 4 blocks: 0 and 1 (A's), 12 and 13 (C's), so only C holds the last one.
    let hit =
        Part { cached: shared, block_table: vec![0, 1, 12, 13, 20], ..Part::new(1, &b.prompt_ids[shared..], shared) };
    let out = rt.step(&step(&[hit])).unwrap();
    assert!(max_abs_diff(&out.logits, &reference_rows(&b, shared, b.prompt_ids.len())) < 1e-4);
    assert_eq!(rt.cached_positions(1), Some((0, b.prompt_ids.len() as i32 - 1)));
    // A hit whose last block nobody holds at that index is refused.
    let orphan = Part { cached: 32, block_table: vec![0, 12, 21], ..Part::new(3, &b.prompt_ids[32..40], 32) };
    assert!(rt.step(&step(&[orphan])).unwrap_err().to_string().contains("same block at index 1"));
}

#[test]
fn runs_are_bit_identical() {
    let long = prompt("long");
    let run = || runtime(&LlamaCppOptions::parity()).step(&step(&[Part::new(0, &long.prompt_ids, 0)])).unwrap();
    assert_eq!(run().logits, run().logits);
}

#[test]
fn llama_cpp_defaults_are_further_from_the_reference_than_parity_settings() {
    let long = prompt("long");
    let n = long.prompt_ids.len();
    let expected = reference_rows(&long, 0, n);
    let diff = |options: LlamaCppOptions| {
        let logits = runtime(&options).step(&step(&[Part::new(0, &long.prompt_ids, 0)])).unwrap().logits;
        max_abs_diff(&logits, &expected)
    };
    let parity = diff(LlamaCppOptions::parity());
    let f16_kv = diff(LlamaCppOptions { kv_type: nano_vllm_llama_cpp::KvType::F16, ..LlamaCppOptions::parity() });
    let flash = diff(LlamaCppOptions { flash_attention: true, ..LlamaCppOptions::parity() });
    let defaults = diff(LlamaCppOptions::llama_defaults());
    println!(
        "long prompt ({n} tokens), max |diff| vs transformers: parity {parity:.2e}, f16 KV {f16_kv:.2e}, flash \
         attention {flash:.2e}, llama.cpp defaults (f16 KV + flash attention) {defaults:.2e}"
    );
    assert!(parity < 1e-4, "{parity}");
    assert!(defaults > 10.0 * parity && defaults < 1e-1, "{defaults}");
}

#[test]
fn info_and_capabilities_state_the_settings() {
    let rt = runtime(&LlamaCppOptions { threads: 1, ..LlamaCppOptions::parity() });
    let info = rt.info();
    assert_eq!(
        (info.name.as_str(), info.dtype.as_str(), info.device.as_str()),
        ("llama-cpp", "f32", "cpu (1 threads)")
    );
    assert!(info.version.contains(&format!("llama-cpp-2 {LLAMA_CPP_2_VERSION}")), "{}", info.version);
    println!("{}\n{:#?}", info.version, info.settings);
    let get = |k: &str| info.settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("kv_type"), "f32");
    assert_eq!(get("flash_attention"), "off");
    assert_eq!(get("n_seq_max"), "16");
    assert_eq!(get("threads"), "1");
    assert_eq!(get("unified_kv_cache"), "no");
    // Context 256 per sequence x 16 sequences.
    assert_eq!((get("n_ctx"), get("n_ctx_per_seq")), ("4096".to_string(), "256".to_string()));
    let caps = rt.capabilities();
    assert_eq!(caps.kv_cache, KvCacheKind::RuntimeOwned);
    assert_eq!(caps.prefix_reuse, PrefixReuse::CopyFromHolder);
    assert_eq!((caps.max_num_seqs, caps.max_batch_tokens), (Some(16), Some(2048)));
    assert!(caps.full_position_logits);
    assert_eq!(caps.vocab_size, Some(512));
    // 2 layers x (K and V) x 2 KV heads x head dim 16 x 4 bytes.
    assert_eq!(caps.kv_bytes_per_token, Some(2 * 2 * 2 * 16 * 4));

    let q8 = runtime(&LlamaCppOptions::llama_defaults().with_weights(Weights::Q8_0)).info();
    let get = |k: &str| q8.settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!((q8.dtype.as_str(), get("kv_type").as_str(), get("flash_attention").as_str()), ("q8_0", "f16", "on"));
    assert!(get("model").ends_with("model.q8_0.gguf"));
}
