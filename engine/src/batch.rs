//! What the engine hands a runtime each step, and what it gets back.
//!
//! A step is packed, with no padding: the new tokens of every scheduled sequence one after another (a prefill chunk
//! of several tokens, or a decode token), their positions, and for engine-paged runtimes the KV slot of each token
//! (`block * block_size + offset`). Block tables are the exception: the engine keeps them as persistent rows (one per
//! running sequence, see its input batch), so `block_tables` also holds rows of sequences not in this step; an entry
//! names its own row. Logits are wanted only at the rows listed in
//! `logits_indices` (the last token of a chunk that completes a sequence's pending tokens, or every token in parity
//! mode); the output holds one row of `vocab_size` f32 per such index, in that order.

use crate::sequence::SeqId;

/// One sequence's part of a step. Ranges index the packed arrays of [`StepBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqBatchEntry {
    pub seq_id: SeqId,
    /// This sequence's tokens are `token_ids[query_start..query_start + query_len]`.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens already in the KV cache before this step; the first new token is at this position.
    pub num_computed_tokens: usize,
    /// Prefix-cache hit tokens of this sequence's current admission (`<= num_computed_tokens`); their keys and
    /// values were computed by another sequence.
    pub num_cached_tokens: usize,
    /// Its block table is `block_tables[block_table_start..block_table_start + block_table_len]`.
    pub block_table_start: usize,
    pub block_table_len: usize,
    /// Its logit rows are `logits_start..logits_start + num_logits` of the output.
    pub logits_start: usize,
    pub num_logits: usize,
    /// The step ends this sequence's pending tokens, so its last logit row is sampled.
    pub samples: bool,
    /// A prompt (or a recompute after preemption), or a chunk of one, rather than one decode token.
    pub is_prefill: bool,
}

impl SeqBatchEntry {
    /// Keys and values in the cache once this step has run.
    pub fn context_len(&self) -> usize {
        self.num_computed_tokens + self.query_len
    }
}

/// One engine step, packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepBatch {
    pub block_size: usize,
    pub seqs: Vec<SeqBatchEntry>,
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// The KV slot of each token (engine-paged KV).
    pub slot_mapping: Vec<u32>,
    pub block_tables: Vec<u32>,
    /// Indices into `token_ids` whose logits are wanted, in output-row order.
    pub logits_indices: Vec<u32>,
}

impl StepBatch {
    /// Empties the per-step arrays; `block_tables` persists (see the engine's input batch).
    pub(crate) fn clear(&mut self) {
        self.seqs.clear();
        self.token_ids.clear();
        self.positions.clear();
        self.slot_mapping.clear();
        self.logits_indices.clear();
    }
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }
    pub fn num_logit_rows(&self) -> usize {
        self.logits_indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
    pub fn tokens(&self, e: &SeqBatchEntry) -> &[u32] {
        &self.token_ids[e.query_start..e.query_start + e.query_len]
    }
    pub fn positions_of(&self, e: &SeqBatchEntry) -> &[u32] {
        &self.positions[e.query_start..e.query_start + e.query_len]
    }
    pub fn slots(&self, e: &SeqBatchEntry) -> &[u32] {
        &self.slot_mapping[e.query_start..e.query_start + e.query_len]
    }
    pub fn block_table(&self, e: &SeqBatchEntry) -> &[u32] {
        &self.block_tables[e.block_table_start..e.block_table_start + e.block_table_len]
    }
    /// The positions (within the sequence) whose logits are wanted for this entry.
    pub fn logit_positions<'a>(&'a self, e: &'a SeqBatchEntry) -> impl Iterator<Item = u32> + 'a {
        self.logits_indices[e.logits_start..e.logits_start + e.num_logits].iter().map(|&i| self.positions[i as usize])
    }
}

/// A runtime's answer to a step: `logits` is `[num_logit_rows, vocab_size]`, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    pub vocab_size: usize,
    pub logits: Vec<f32>,
}

impl StepOutput {
    pub fn num_rows(&self) -> usize {
        self.logits.len().checked_div(self.vocab_size).unwrap_or(0)
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.vocab_size..(i + 1) * self.vocab_size]
    }
}
