//! The one trait every runtime implements. The engine calls `prepare` once, `execute` each step and `release` when a
//! sequence leaves the running set; capability queries default to the most conservative answer.

use crate::batch::{StepBatch, StepOutput};
use crate::error::RuntimeError;
use crate::sequence::SeqId;

/// Who holds the keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheKind {
    /// The runtime keeps a pool of `num_blocks * block_size` slots and reads and writes it through the engine's block
    /// tables and slot mapping (paged attention): prefix hits and preemption are served by the engine's blocks.
    EnginePaged,
    /// The runtime keeps each sequence's past itself, keyed by sequence id, and frees it on `release`.
    #[default]
    RuntimeOwned,
}

/// How the runtime serves a prefix-cache hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefixReuse {
    /// It cannot: the engine turns prefix caching off and recomputes every prompt.
    #[default]
    Recompute,
    /// Through the engine's shared blocks (engine-paged KV): any cached block, also a freed one, is served.
    SharedBlocks,
    /// By copying the cached prefix's keys and values from running sequences. The engine reports a hit on a block
    /// only while some running sequence holds that block at the same index of its table and has computed it; the
    /// prefix's blocks may be held by different sequences (each copy of a prefix block has the same contents), so
    /// copy block by block where no one sequence holds them all.
    CopyFromHolder,
}

/// What a runtime can do. The defaults are conservative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub kv_cache: KvCacheKind,
    pub prefix_reuse: PrefixReuse,
    /// Most tokens the runtime accepts in one step, if it has a limit below the engine's budget.
    pub max_batch_tokens: Option<usize>,
    /// Most sequences in one step, if limited (e.g. llama.cpp's `n_seq_max`).
    pub max_num_seqs: Option<usize>,
    /// Can return logits at every position (parity mode).
    pub full_position_logits: bool,
    /// Bytes of keys and values per token, to size the cache from a memory budget.
    pub kv_bytes_per_token: Option<usize>,
    /// Token ids must be below this (checked when a request is added).
    pub vocab_size: Option<usize>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            kv_cache: KvCacheKind::RuntimeOwned,
            prefix_reuse: PrefixReuse::Recompute,
            max_batch_tokens: None,
            max_num_seqs: None,
            full_position_logits: false,
            kv_bytes_per_token: None,
            vocab_size: None,
        }
    }
}

/// Describes a runtime for reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeInfo {
    /// Registry name: `native`, `onnx`, `candle`, `llama-cpp`, `mock`.
    pub name: String,
    /// The runtime's own version (library and crate).
    pub version: String,
    /// e.g. `cpu (2 threads)`.
    pub device: String,
    /// Weight / compute dtype, e.g. `f32`.
    pub dtype: String,
    /// Settings that change results or speed, as key/value pairs (KV type, flash attention, threads, ...).
    pub settings: Vec<(String, String)>,
}

/// The KV cache the engine sized for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSpec {
    pub num_blocks: usize,
    pub block_size: usize,
}

/// A model runtime driven by the engine.
pub trait Runtime: Send {
    fn info(&self) -> RuntimeInfo;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Called once, before the first step, with the engine's KV cache geometry (engine-paged runtimes size their pool
    /// from it).
    fn prepare(&mut self, _kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Runs one step: writes the new tokens' keys and values and returns logits at `batch.logits_indices`.
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError>;

    /// The sequence left the running set (finished, aborted or preempted): drop anything kept for it.
    fn release(&mut self, _seq_id: SeqId) {}
}
