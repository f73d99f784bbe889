//! With f32 weights a token's logits do not depend on the step that computes them: every dense product, a tied
//! head's included, is one chain of fused multiply-adds per output (kernels/panels/), attention is computed a token
//! at a time, and the rest is per token. On every committed bundle (tied and untied heads, biases, learned
//! positions, Gemma 3's windowed layers) the same sequence prefilled whole, on 1 or 2 threads, in two chunks, beside
//! another sequence, and ending in decode steps gives the same bits at every position.

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_engine::{KvCacheSpec, Runtime, SeqBatchEntry, StepBatch};
use nano_vllm_native::{NativeOptions, NativeRuntime};

const BLOCK: usize = 16;

/// A sequence's part of a step: its token ids, how many of its tokens are already in the cache, its blocks.
struct Part<'a> {
    tokens: &'a [u32],
    computed: usize,
    blocks: &'a [u32],
}

/// One step of `parts`, every query token's logits asked for.
fn step(parts: &[Part<'_>]) -> StepBatch {
    let mut b = StepBatch {
        block_size: BLOCK,
        seqs: vec![],
        token_ids: vec![],
        positions: vec![],
        slot_mapping: vec![],
        block_tables: vec![],
        logits_indices: vec![],
    };
    for (i, p) in parts.iter().enumerate() {
        let n = p.tokens.len() - p.computed;
        b.seqs.push(SeqBatchEntry {
            seq_id: i as u64,
            query_start: b.token_ids.len(),
            query_len: n,
            num_computed_tokens: p.computed,
            num_cached_tokens: 0,
            block_table_start: b.block_tables.len(),
            block_table_len: p.blocks.len(),
            logits_start: b.logits_indices.len(),
            num_logits: n,
            samples: true,
            is_prefill: true,
        });
        for pos in p.computed..p.tokens.len() {
            b.logits_indices.push(b.token_ids.len() as u32);
            b.token_ids.push(p.tokens[pos]);
            b.positions.push(pos as u32);
            b.slot_mapping.push(p.blocks[pos / BLOCK] * BLOCK as u32 + (pos % BLOCK) as u32);
        }
        b.block_tables.extend_from_slice(p.blocks);
    }
    b
}

/// Each logit row's bits.
fn rows(logits: &[f32], vocab: usize) -> Vec<Vec<u32>> {
    logits.chunks_exact(vocab).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect()
}

#[test]
fn a_tokens_f32_logits_do_not_depend_on_its_step() {
    for name in COMMITTED_BUNDLES {
        let bundle = open_fixture(name).unwrap();
        let vocab = bundle.config().vocab_size;
        // Long enough for several tiles of tokens (and past tiny-gemma3's window of 48).
        let seq: Vec<u32> = (0..60u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
        let other: Vec<u32> = (0..25u32).map(|i| (i * 11 + 3) % vocab as u32).collect();
        let (a_blocks, b_blocks) = ([0u32, 1, 2, 3], [4u32, 5]);
        let run = |threads: usize, steps: &[Vec<Part<'_>>]| {
            let mut rt = NativeRuntime::from_bundle(&bundle, &NativeOptions { threads, ..Default::default() }).unwrap();
            rt.prepare(&KvCacheSpec { num_blocks: 6, block_size: BLOCK }).unwrap();
            steps.iter().map(|parts| rows(&rt.execute(&step(parts)).unwrap().logits, vocab)).collect::<Vec<_>>()
        };
        let whole = &run(1, &[vec![Part { tokens: &seq, computed: 0, blocks: &a_blocks }]])[0];
        assert_eq!(whole.len(), seq.len());
        // Two threads.
        let two = &run(2, &[vec![Part { tokens: &seq, computed: 0, blocks: &a_blocks }]])[0];
        assert!(two == whole, "{name}: 2 threads");
        // In two chunks (7 tokens, then 53 with the first 7 in the cache).
        let chunks = run(
            2,
            &[
                vec![Part { tokens: &seq[..7], computed: 0, blocks: &a_blocks }],
                vec![Part { tokens: &seq, computed: 7, blocks: &a_blocks }],
            ],
        );
        let chunked: Vec<_> = chunks.concat();
        let differ: Vec<usize> = (0..seq.len()).filter(|&i| chunked[i] != whole[i]).collect();
        assert!(differ.is_empty(), "{name}: chunked prefill differs at positions {differ:?}");
        // Beside another sequence, after it in the step; then one token at a time (decode steps) for the last 3.
        let beside = &run(
            2,
            &[vec![
                Part { tokens: &other, computed: 0, blocks: &b_blocks },
                Part { tokens: &seq, computed: 0, blocks: &a_blocks },
            ]],
        )[0];
        assert!(beside[other.len()..] == whole[..], "{name}: beside another sequence");
        let n = seq.len();
        let decode = run(
            2,
            &[
                vec![Part { tokens: &seq[..n - 3], computed: 0, blocks: &a_blocks }],
                vec![Part { tokens: &seq[..n - 2], computed: n - 3, blocks: &a_blocks }],
                vec![Part { tokens: &seq[..n - 1], computed: n - 2, blocks: &a_blocks }],
                vec![Part { tokens: &seq, computed: n - 1, blocks: &a_blocks }],
            ],
        );
        assert!(decode.concat() == *whole, "{name}: decode steps");
    }
}
