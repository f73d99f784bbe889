//! A request as the engine sees it: its tokens, its place in the KV cache, its status and its timing.
//!
//! Follows nano-vllm's `sequence.py` and vLLM's `Request`: `num_computed_tokens` counts the tokens whose keys and
//! values are in the cache; the tokens after it are what the next step must process (one for a decode, a chunk of the
//! prompt for a prefill). Preemption by recompute resets it to zero and keeps the generated tokens, so the sequence
//! is prefilled again with prompt and output together.

use std::time::Instant;

use rand_chacha::ChaCha8Rng;

use crate::block_manager::BlockId;
use crate::sampling::SamplingParams;

/// The engine's id of a request.
pub type SeqId = u64;

/// Why a sequence finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// Sampled an EOS token (and `ignore_eos` was off).
    Eos,
    /// Reached `max_tokens` or `max_model_len`.
    Length,
    /// Sampled one of the request's stop tokens.
    Stop,
    /// Aborted by the caller.
    Aborted,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::Length => "length",
            Self::Stop => "stop",
            Self::Aborted => "aborted",
        }
    }
}

/// Where a sequence is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SequenceStatus {
    /// Added, never scheduled.
    Waiting,
    /// Holds KV blocks and is scheduled every step until it finishes.
    Running,
    /// Lost its blocks to a newer-admitted sequence's need; waits to be recomputed.
    Preempted,
    Finished(FinishReason),
}

/// Per-request events on the monotonic clock. The harness derives TTFT, TPOT, ITL and E2EL from these.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceTiming {
    /// When the request arrived: its scheduled arrival in the workload, which may precede `add_request` when the
    /// engine was busy (no coordinated omission).
    pub arrival: Instant,
    /// When it was first admitted to a step.
    pub first_scheduled: Option<Instant>,
    /// When each output token was produced (the end of the step that sampled it).
    pub token_times: Vec<Instant>,
    pub finished: Option<Instant>,
}

impl SequenceTiming {
    pub fn first_token(&self) -> Option<Instant> {
        self.token_times.first().copied()
    }
}

/// Logits kept for parity checks: one row of `vocab_size` per captured position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturedLogits {
    /// The position whose logits each row is (the row predicts the token at `position + 1`).
    pub positions: Vec<u32>,
    pub vocab_size: usize,
    pub values: Vec<f32>,
    /// Rows computed again for a position already held (a sequence preempted and recomputed), in the order they
    /// came: `recomputed_positions[i]`'s row is `recomputed_values[i * vocab_size..]`. Parity checks compare them too.
    pub recomputed_positions: Vec<u32>,
    pub recomputed_values: Vec<f32>,
}

impl CapturedLogits {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.vocab_size..(i + 1) * self.vocab_size]
    }
    /// Keeps the row for a position, in position order; a position already held keeps its first row, and the new
    /// one goes to the recomputed rows (a recompute after preemption must give the same logits, up to rounding).
    pub(crate) fn insert(&mut self, position: u32, row: &[f32]) {
        self.vocab_size = row.len();
        match self.positions.binary_search(&position) {
            Err(i) => {
                self.positions.insert(i, position);
                let at = i * self.vocab_size;
                self.values.splice(at..at, row.iter().copied());
            }
            Ok(_) => {
                self.recomputed_positions.push(position);
                self.recomputed_values.extend_from_slice(row);
            }
        }
    }
    /// The `i`th recomputed row.
    pub fn recomputed_row(&self, i: usize) -> &[f32] {
        &self.recomputed_values[i * self.vocab_size..(i + 1) * self.vocab_size]
    }
    /// The row for a position, if it was captured.
    pub fn at_position(&self, position: u32) -> Option<&[f32]> {
        self.positions.binary_search(&position).ok().map(|i| self.row(i))
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub(crate) id: SeqId,
    pub(crate) status: SequenceStatus,
    pub(crate) token_ids: Vec<u32>,
    pub(crate) num_prompt_tokens: usize,
    pub(crate) num_computed_tokens: usize,
    /// Prefix-cache hit tokens at the last admission.
    pub(crate) num_cached_tokens: usize,
    pub(crate) block_table: Vec<BlockId>,
    /// Chained prefix-cache keys of the full blocks of `token_ids` (computed once; tokens never change).
    pub(crate) block_hashes: Vec<u64>,
    /// Leading blocks of `block_table` already in the prefix cache (hit, or registered after being computed).
    pub(crate) num_registered_blocks: usize,
    pub(crate) params: SamplingParams,
    /// Boxed: it is ~320 bytes, and keeping it out of line keeps the fields every step touches close together.
    pub(crate) rng: Box<ChaCha8Rng>,
    pub(crate) timing: SequenceTiming,
    pub(crate) num_preemptions: u32,
    pub(crate) logits: Option<CapturedLogits>,
    /// Its row of the engine's persistent step batch, from its first admission until it finishes.
    pub(crate) batch_row: Option<u32>,
}

impl Sequence {
    /// A waiting sequence. Its sampling generator is seeded with `params.seed`, or, without one, from its id, so
    /// runs are reproducible either way. The engine validates requests before making sequences; this does not.
    pub fn new(id: SeqId, mut prompt: Vec<u32>, params: SamplingParams, arrival: Instant) -> Self {
        let num_prompt_tokens = prompt.len();
        // Room for the outputs up front: no reallocation (and copy) while decoding.
        let expected_outputs = params.max_tokens.min(1 << 16);
        prompt.reserve_exact(expected_outputs);
        let seed = params.seed.unwrap_or_else(|| id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let rng = Box::new(crate::sampling::rng_for(seed));
        let logits = (params.logits != crate::LogitsCapture::None).then(CapturedLogits::default);
        Self {
            id,
            status: SequenceStatus::Waiting,
            token_ids: prompt,
            num_prompt_tokens,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            block_table: Vec::new(),
            block_hashes: Vec::new(),
            num_registered_blocks: 0,
            params,
            rng,
            timing: SequenceTiming {
                arrival,
                first_scheduled: None,
                token_times: Vec::with_capacity(expected_outputs),
                finished: None,
            },
            num_preemptions: 0,
            logits,
            batch_row: None,
        }
    }

    pub fn id(&self) -> SeqId {
        self.id
    }
    pub fn status(&self) -> SequenceStatus {
        self.status
    }
    pub fn finish_reason(&self) -> Option<FinishReason> {
        match self.status {
            SequenceStatus::Finished(r) => Some(r),
            _ => None,
        }
    }
    pub fn is_finished(&self) -> bool {
        matches!(self.status, SequenceStatus::Finished(_))
    }
    /// Prompt and output tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }
    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.token_ids[..self.num_prompt_tokens]
    }
    pub fn output_token_ids(&self) -> &[u32] {
        &self.token_ids[self.num_prompt_tokens..]
    }
    pub fn num_prompt_tokens(&self) -> usize {
        self.num_prompt_tokens
    }
    pub fn num_output_tokens(&self) -> usize {
        self.token_ids.len() - self.num_prompt_tokens
    }
    /// Tokens whose keys and values are in the KV cache.
    pub fn num_computed_tokens(&self) -> usize {
        self.num_computed_tokens
    }
    /// Prompt tokens served by the prefix cache at the last admission.
    pub fn num_cached_tokens(&self) -> usize {
        self.num_cached_tokens
    }
    /// Marks the first `n` tokens computed. The engine's scheduler does this after each step; this is for driving a
    /// [`crate::BlockManager`] on its own.
    pub fn set_num_computed_tokens(&mut self, n: usize) {
        assert!(n <= self.token_ids.len(), "{n} computed tokens of a {}-token sequence", self.token_ids.len());
        self.num_computed_tokens = n;
    }
    pub fn block_table(&self) -> &[BlockId] {
        &self.block_table
    }
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }
    pub fn timing(&self) -> &SequenceTiming {
        &self.timing
    }
    /// How many times this sequence was preempted (and recomputed).
    pub fn num_preemptions(&self) -> u32 {
        self.num_preemptions
    }
    /// Captured logits, when the request asked for them.
    pub fn logits(&self) -> Option<&CapturedLogits> {
        self.logits.as_ref()
    }
    pub fn last_token(&self) -> u32 {
        *self.token_ids.last().expect("a sequence is never empty")
    }
    /// Its length once every requested output token is generated, for reserving room up front (capped, since a
    /// sequence made outside the engine may ask for any number).
    pub(crate) fn max_len(&self) -> usize {
        self.num_prompt_tokens + self.params.max_tokens.min(1 << 16)
    }
    /// The blocks a table of `num_tokens` tokens needs.
    pub(crate) fn blocks_for(num_tokens: usize, block_size: usize) -> usize {
        num_tokens.div_ceil(block_size)
    }
}
