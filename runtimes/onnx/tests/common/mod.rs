//! Helpers shared by the integration tests.

#![allow(dead_code)]

use nano_vllm_onnx::{OnnxOptions, SKIP_ENV, library};

/// Whether the ONNX Runtime library can be found. When it cannot, the test fails with the loader's error (which says
/// how to install it), unless `NANO_VLLM_SKIP_ONNX=1` asks to skip: then the skip is printed and `false` returned.
/// So a test never passes silently because the library is missing.
pub fn library_available(test: &str) -> bool {
    match library::locate(None) {
        Ok(_) => true,
        Err(e) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED {test}: {e} ({SKIP_ENV}=1)");
            false
        }
        Err(e) => panic!("{e}\n(to skip the ONNX Runtime tests locally, set {SKIP_ENV}=1)"),
    }
}

/// One intra-op thread: tests run as parallel threads of one process on a small machine.
pub fn options() -> OnnxOptions {
    OnnxOptions { intra_threads: 1, ..OnnxOptions::default() }
}

use nano_vllm_engine::{SeqBatchEntry, StepBatch};

/// One sequence's part of a hand-built step.
#[derive(Debug, Clone)]
pub struct Part {
    pub id: u64,
    /// Its new tokens this step.
    pub tokens: Vec<u32>,
    /// Tokens computed before this step.
    pub computed: usize,
    /// Prefix-cache hit tokens.
    pub cached: usize,
    pub table: Vec<u32>,
    /// Logits at every new token (else only the last).
    pub all_logits: bool,
}

impl Part {
    pub fn new(id: u64, tokens: &[u32], computed: usize) -> Self {
        let table = (0..(computed + tokens.len()).div_ceil(16) as u32).map(|b| id as u32 * 1000 + b).collect();
        Self { id, tokens: tokens.to_vec(), computed, cached: 0, table, all_logits: true }
    }
}

/// A packed step as the engine builds it (block size 16, no slot mapping: the runtime owns its KV).
pub fn step(parts: &[Part]) -> StepBatch {
    let mut b = StepBatch { block_size: 16, ..StepBatch::default() };
    for p in parts {
        let (query_start, logits_start) = (b.token_ids.len(), b.logits_indices.len());
        b.token_ids.extend(&p.tokens);
        b.positions.extend((0..p.tokens.len()).map(|j| (p.computed + j) as u32));
        let first = if p.all_logits { 0 } else { p.tokens.len() - 1 };
        b.logits_indices.extend((first..p.tokens.len()).map(|j| (query_start + j) as u32));
        let block_table_start = b.block_tables.len();
        b.block_tables.extend(&p.table);
        b.seqs.push(SeqBatchEntry {
            seq_id: p.id,
            query_start,
            query_len: p.tokens.len(),
            num_computed_tokens: p.computed,
            num_cached_tokens: p.cached,
            block_table_start,
            block_table_len: p.table.len(),
            logits_start,
            num_logits: b.logits_indices.len() - logits_start,
            samples: true,
            is_prefill: p.computed == 0 || p.tokens.len() > 1,
        });
    }
    b
}

/// `n` deterministic token ids in 2..vocab.
pub fn tokens(seed: u32, n: usize, vocab: u32) -> Vec<u32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            2 + (x >> 8) % (vocab - 2)
        })
        .collect()
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
