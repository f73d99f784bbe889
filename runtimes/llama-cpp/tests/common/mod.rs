//! Helpers of the integration tests: hand-built steps (no engine) and logit comparison.

#![allow(dead_code)]

use nano_vllm_engine::{SeqBatchEntry, SeqId, StepBatch};

/// One sequence's part of a hand-built step.
pub struct Part<'a> {
    pub seq_id: SeqId,
    pub tokens: &'a [u32],
    /// Tokens already computed (the first new token's position).
    pub computed: usize,
    /// Prefix-cache hit tokens of this admission.
    pub cached: usize,
    pub block_table: Vec<u32>,
    /// Logits at every new token (else only at the last).
    pub all_logits: bool,
}

impl<'a> Part<'a> {
    pub fn new(seq_id: SeqId, tokens: &'a [u32], computed: usize) -> Self {
        let blocks = (computed + tokens.len()).div_ceil(16) as u32;
        Self { seq_id, tokens, computed, cached: 0, block_table: (0..blocks).collect(), all_logits: true }
    }
}

/// A packed step of `parts`, in order (block size 16).
pub fn step(parts: &[Part<'_>]) -> StepBatch {
    let mut b = StepBatch { block_size: 16, ..StepBatch::default() };
    for p in parts {
        let (query_start, logits_start) = (b.token_ids.len(), b.logits_indices.len());
        let block_table_start = b.block_tables.len();
        b.token_ids.extend_from_slice(p.tokens);
        b.positions.extend((0..p.tokens.len()).map(|j| (p.computed + j) as u32));
        b.slot_mapping.extend((0..p.tokens.len()).map(|j| (p.computed + j) as u32));
        b.block_tables.extend_from_slice(&p.block_table);
        let wanted = if p.all_logits { 0..p.tokens.len() } else { p.tokens.len() - 1..p.tokens.len() };
        b.logits_indices.extend(wanted.clone().map(|j| (query_start + j) as u32));
        b.seqs.push(SeqBatchEntry {
            seq_id: p.seq_id,
            query_start,
            query_len: p.tokens.len(),
            num_computed_tokens: p.computed,
            num_cached_tokens: p.cached,
            block_table_start,
            block_table_len: p.block_table.len(),
            logits_start,
            num_logits: wanted.len(),
            samples: true,
            is_prefill: p.tokens.len() > 1,
        });
    }
    b
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
