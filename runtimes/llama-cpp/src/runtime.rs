//! [`LlamaCppRuntime`]: the engine's [`Runtime`] on one llama.cpp context, with the keys and values in llama.cpp's
//! own KV cache.
//!
//! Each engine sequence in the cache holds a llama.cpp sequence id from a [`SeqIdPool`] (below `n_seq_max`). Each
//! step: check the batch, make sure each sequence's cells are what the engine says was computed (a fresh prompt
//! takes a free id, a prefix-cache hit is copied from a holder ([`crate::prefix`]), anything else must already be
//! held), then put every prefill chunk and decode token of the step into one llama.cpp batch, ordered by llama.cpp
//! sequence id (llama.cpp packs sequences into one micro-batch only when their ids are consecutive), with logits
//! wanted exactly at `batch.logits_indices`; one `llama_decode`; and copy `get_logits_ith(batch index)` into the
//! output rows in `logits_indices` order. `release` removes the sequence's cells and frees its id.

use std::collections::HashMap;
use std::path::Path;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use nano_vllm_bundle::Bundle;
use nano_vllm_engine::{
    BatchError, BatchLimits, Capabilities, KvCacheKind, PrefixReuse, Runtime, RuntimeError, RuntimeInfo, SeqBatchEntry,
    SeqId, StepBatch, StepOutput,
};

use crate::error::{LlamaCppError, LoadError, StepError};
use crate::log;
use crate::options::{LlamaCppOptions, Weights};
use crate::prefix::{Candidate, find_holder};
use crate::seq_ids::SeqIdPool;
use crate::session::{Session, llama_cpp_version, system_info};

/// The `llama-cpp-2` version this crate is built against (pinned in the workspace `Cargo.toml`).
pub const LLAMA_CPP_2_VERSION: &str = "0.1.160";

/// A sequence whose cells are in llama.cpp's cache.
#[derive(Debug, Clone)]
struct Held {
    llama_id: i32,
    /// Tokens whose keys and values are in the cache.
    computed: usize,
    /// Its latest block table (for serving prefix hits).
    table: Vec<u32>,
}

/// llama.cpp driven by the engine. See the module docs.
pub struct LlamaCppRuntime {
    session: Session,
    batch: LlamaBatch<'static>,
    options: LlamaCppOptions,
    ids: SeqIdPool,
    held: HashMap<SeqId, Held>,
    vocab_size: usize,
    n_batch: usize,
    /// KV cells of each sequence (`n_ctx / n_seq_max`).
    per_seq: usize,
    kv_bytes_per_token: usize,
    /// Weight type of the GGUF (`general.file_type`).
    dtype: String,
    /// Scratch: the llama.cpp batch index of each packed token, and the step's entries in llama id order.
    batch_index: Vec<i32>,
    order: Vec<usize>,
}

impl std::fmt::Debug for LlamaCppRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppRuntime")
            .field("session", &self.session)
            .field("options", &self.options)
            .field("held", &self.held.len())
            .finish()
    }
}

impl LlamaCppRuntime {
    /// Loads the GGUF file at `gguf_path` and creates its context with `options` (`options.weights` is not used:
    /// the file is the one given).
    pub fn load(gguf_path: impl AsRef<Path>, options: &LlamaCppOptions) -> Result<Self, LlamaCppError> {
        let session = Session::load(gguf_path.as_ref(), options)?;
        let model = session.model();
        let vocab_size = usize::try_from(model.n_vocab()).unwrap_or(0);
        let (layers, heads, kv_heads) = (model.n_layer() as usize, model.n_head() as usize, model.n_head_kv() as usize);
        let head_dim = usize::try_from(model.n_embd()).unwrap_or(0).checked_div(heads).unwrap_or(0);
        let n_ctx = session.ctx().n_ctx() as usize;
        let n_batch = session.ctx().n_batch() as usize;
        let dtype = file_type_name(session.meta("general.file_type").as_deref());
        Ok(Self {
            batch: LlamaBatch::new(n_batch, 1),
            ids: SeqIdPool::new(options.n_seq_max),
            held: HashMap::new(),
            vocab_size,
            n_batch,
            per_seq: n_ctx / options.n_seq_max,
            kv_bytes_per_token: 2 * layers * kv_heads * head_dim * options.kv_type.bytes(),
            dtype,
            batch_index: Vec::new(),
            order: Vec::new(),
            options: options.clone(),
            session,
        })
    }

    /// Loads a fixture bundle's GGUF (`model.f32.gguf`, `model.q8_0.gguf` with [`Weights::Q8_0`], the shipped one
    /// with [`Weights::Shipped`]) and checks it against the bundle's manifest (vocabulary, layers, KV heads).
    pub fn from_bundle(bundle: &Bundle, options: &LlamaCppOptions) -> Result<Self, LlamaCppError> {
        let path = match options.weights {
            Weights::F32 => bundle.gguf_f32(),
            Weights::Q8_0 => bundle.gguf_q8_0(),
            Weights::Shipped => bundle.gguf_shipped().ok_or_else(|| LoadError::BundleMismatch {
                path: bundle.dir().to_path_buf(),
                problem: "the bundle has no shipped GGUF (it was not made with fixtures/generate.py --from-gguf)"
                    .into(),
            })?,
            Weights::Quantized(q) => {
                return Err(LoadError::Options(format!(
                    "a bundle holds no {} file: quantize model.f32.gguf (nano_vllm_llama_cpp::quantize) and load that",
                    q.as_str()
                ))
                .into());
            }
        };
        Self::check_bundle_config(bundle, options)?;
        let runtime = Self::load(&path, options)?;
        let model = runtime.session.model();
        let config = bundle.config();
        let gguf = (runtime.vocab_size, model.n_layer() as usize, model.n_head_kv() as usize);
        let manifest = (config.vocab_size, config.num_layers, config.num_kv_heads);
        if gguf != manifest {
            return Err(LoadError::BundleMismatch {
                path,
                problem: format!(
                    "(vocab, layers, KV heads) = {gguf:?} in the GGUF but {manifest:?} in the bundle's manifest"
                ),
            }
            .into());
        }
        Ok(runtime)
    }

    /// Refuses a bundle whose `config.json` asks for what its GGUF files cannot tell llama.cpp, which would
    /// silently compute another model ([`HfConfig::beyond_gguf`]): a sliding window shorter than the context
    /// `options` give each sequence, GPT-2's `scale_attn_weights: false`, Llama-3 RoPE scaling on Qwen2. A config our
    /// runtimes cannot read (an attention variant they do not implement) is no reason to refuse: llama.cpp reads the
    /// GGUF. [`Self::from_bundle`] checks it; a caller loading a GGUF made from a bundle (llama.cpp's quantization of
    /// its f32 file) checks it first.
    pub fn check_bundle_config(bundle: &Bundle, options: &LlamaCppOptions) -> Result<(), LoadError> {
        match bundle.beyond_gguf(options.ctx_per_seq) {
            Some(reason) => Err(LoadError::Unsupported { path: bundle.config_json(), reason }),
            None => Ok(()),
        }
    }

    pub fn options(&self) -> &LlamaCppOptions {
        &self.options
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// KV cells each sequence can hold (`n_ctx / n_seq_max`).
    pub fn cells_per_sequence(&self) -> usize {
        self.per_seq
    }

    /// Engine sequences whose cells are in llama.cpp's cache.
    pub fn num_held_sequences(&self) -> usize {
        self.held.len()
    }

    /// Tokens of keys and values held for `seq_id` (0 if none).
    pub fn held_tokens(&self, seq_id: SeqId) -> usize {
        self.held.get(&seq_id).map_or(0, |h| h.computed)
    }

    /// The llama.cpp sequence id `seq_id` holds, if any.
    pub fn llama_seq_id(&self, seq_id: SeqId) -> Option<i32> {
        self.held.get(&seq_id).map(|h| h.llama_id)
    }

    /// Positions llama.cpp's cache holds for `seq_id`'s llama.cpp sequence, as `(min, max)`; `None` when it holds
    /// none (or the sequence is not held).
    pub fn cached_positions(&self, seq_id: SeqId) -> Option<(i32, i32)> {
        let id = self.held.get(&seq_id)?.llama_id;
        let ctx = self.session.ctx();
        let (min, max) = (ctx.kv_cache_seq_pos_min(id), ctx.kv_cache_seq_pos_max(id));
        (min >= 0 && max >= min).then_some((min, max))
    }

    /// Drops every sequence: clears llama.cpp's cache and frees all sequence ids.
    pub fn clear(&mut self) {
        self.session.ctx_mut().clear_kv_cache();
        self.held.clear();
        self.ids = SeqIdPool::new(self.options.n_seq_max);
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// [`Runtime::execute`] with this crate's error type.
    pub fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, LlamaCppError> {
        self.check(batch)?;
        if batch.is_empty() {
            return Ok(StepOutput { vocab_size: self.vocab_size, logits: Vec::new() });
        }
        for e in &batch.seqs {
            if let Some(h) = self.held.get_mut(&e.seq_id) {
                if h.computed != e.num_computed_tokens {
                    return Err(StepError::KvMismatch {
                        seq_id: e.seq_id,
                        expected: e.num_computed_tokens,
                        held: h.computed,
                    }
                    .into());
                }
                h.table.clear();
                h.table.extend_from_slice(batch.block_table(e));
            }
        }
        for e in &batch.seqs {
            if !self.held.contains_key(&e.seq_id) {
                self.admit(batch, e)?;
            }
        }
        self.fill_batch(batch)?;
        self.decode(batch)?;
        let vocab = self.vocab_size;
        let mut logits = vec![0.0; batch.num_logit_rows() * vocab];
        let ctx = self.session.ctx();
        for (out, &k) in logits.chunks_exact_mut(vocab).zip(&batch.logits_indices) {
            // Every index was marked as an output in `fill_batch`, so llama.cpp has its row.
            out.copy_from_slice(ctx.get_logits_ith(self.batch_index[k as usize]));
        }
        Ok(StepOutput { vocab_size: vocab, logits })
    }

    /// Rejects a batch this runtime would misread (see `StepBatch::validate`; llama.cpp's cache is kept per
    /// sequence id), more tokens than `n_batch`, or a sequence outgrowing its cells.
    fn check(&self, batch: &StepBatch) -> Result<(), StepError> {
        let n = batch.num_tokens();
        if n > self.n_batch {
            return Err(StepError::TooManyTokens { tokens: n, n_batch: self.n_batch });
        }
        batch.validate(&BatchLimits { vocab_size: self.vocab_size, max_positions: None, kv_slots: None })?;
        if let Some(e) = batch.seqs.iter().find(|e| e.context_len() > self.per_seq) {
            return Err(StepError::ContextFull { seq_id: e.seq_id, needed: e.context_len(), per_seq: self.per_seq });
        }
        Ok(())
    }

    /// Gives a sequence not in the cache a llama.cpp sequence id: empty for a prompt from its start, or holding a
    /// copy of a holder's first `num_cached_tokens` cells for a prefix-cache hit.
    fn admit(&mut self, batch: &StepBatch, e: &SeqBatchEntry) -> Result<(), StepError> {
        let (seq_id, computed, cached) = (e.seq_id, e.num_computed_tokens, e.num_cached_tokens);
        let holder = if computed == 0 {
            None
        } else if cached == computed {
            if batch.block_size == 0 {
                return Err(StepError::Invalid(BatchError::Malformed {
                    seq_id: e.seq_id,
                    what: "the step's block size is 0, with a prefix-cache hit".into(),
                }));
            }
            // The block holding the last cached token identifies the whole prefix (see `crate::prefix`).
            let last = (cached - 1) / batch.block_size;
            let no_holder = StepError::NoPrefixHolder { seq_id, cached_tokens: cached, block_index: last };
            let &block = batch.block_table(e).get(last).ok_or_else(|| no_holder.clone())?;
            let candidates =
                self.held.values().map(|h| Candidate { id: h.llama_id, table: &h.table, computed: h.computed });
            Some(find_holder(candidates, last, block, cached).ok_or(no_holder)?)
        } else {
            return Err(StepError::KvMismatch { seq_id, expected: computed, held: 0 });
        };
        let n_seq_max = self.ids.capacity();
        let llama_id = self.ids.acquire().ok_or(StepError::NoFreeSequence { seq_id, n_seq_max })?;
        if let Some(src) = holder {
            // Whole-stream copy (the only one a non-unified cache supports), then drop the copy's cells past the hit.
            let ctx = self.session.ctx_mut();
            let copied = ctx
                .kv_cache_seq_cp(src, llama_id, None, None)
                .map_err(|e| e.to_string())
                .and_then(|()| ctx.kv_cache_seq_rm(llama_id, Some(cached as u32), None).map_err(|e| e.to_string()));
            if let Err(reason) = copied {
                let _ = ctx.clear_kv_cache_seq(Some(llama_id as u32), None, None);
                self.ids.release(llama_id);
                return Err(StepError::Cache { seq_id, reason: format!("copying the prefix from {src}: {reason}") });
            }
        }
        self.held.insert(seq_id, Held { llama_id, computed, table: batch.block_table(e).to_vec() });
        Ok(())
    }

    /// Puts every token of the step into the llama.cpp batch, sequences in llama id order, logits wanted exactly at
    /// `logits_indices`; records each packed token's batch index.
    fn fill_batch(&mut self, batch: &StepBatch) -> Result<(), StepError> {
        let Self { held, order, batch_index, batch: llama_batch, .. } = self;
        let llama_id = |e: &SeqBatchEntry| held.get(&e.seq_id).map_or(i32::MAX, |h| h.llama_id);
        order.clear();
        order.extend(0..batch.seqs.len());
        order.sort_by_key(|&i| llama_id(&batch.seqs[i]));
        batch_index.clear();
        batch_index.resize(batch.num_tokens(), -1);
        for &k in &batch.logits_indices {
            batch_index[k as usize] = -2; // marks "wants logits" until the token is added
        }
        llama_batch.clear();
        let mut next = 0;
        for &i in order.iter() {
            let e = &batch.seqs[i];
            let id = llama_id(e);
            let query = e.query_start..e.query_start + e.query_len;
            for ((index, &token), &pos) in
                batch_index[query.clone()].iter_mut().zip(batch.tokens(e)).zip(&batch.positions[query])
            {
                let wants_logits = *index == -2;
                llama_batch
                    .add(LlamaToken(token as i32), pos as i32, &[id], wants_logits)
                    .map_err(|err| StepError::Batch(err.to_string()))?;
                *index = next;
                next += 1;
            }
        }
        Ok(())
    }

    /// One `llama_decode` of the filled batch. On failure the step's new cells are removed again, so the cache
    /// still matches what the engine thinks was computed.
    fn decode(&mut self, batch: &StepBatch) -> Result<(), StepError> {
        log::clear();
        let result = self.session.ctx_mut().decode(&mut self.batch);
        if let Err(err) = result {
            let llama_log = log::take();
            for e in &batch.seqs {
                if let Some(h) = self.held.get(&e.seq_id) {
                    let ctx = self.session.ctx_mut();
                    let _ = ctx.clear_kv_cache_seq(Some(h.llama_id as u32), Some(h.computed as u32), None);
                }
            }
            return Err(StepError::Decode {
                seqs: batch.seqs.len(),
                tokens: batch.num_tokens(),
                reason: err.to_string(),
                llama_log,
            });
        }
        for e in &batch.seqs {
            if let Some(h) = self.held.get_mut(&e.seq_id) {
                h.computed += e.query_len;
            }
        }
        Ok(())
    }
}

/// The weight type of a GGUF from its `general.file_type` (llama.cpp's `llama_ftype`, named as
/// `nano_vllm_bundle::gguf::file_type_name` names it).
fn file_type_name(file_type: Option<&str>) -> String {
    match file_type.map(str::trim) {
        Some(v) => match v.parse().ok().and_then(nano_vllm_bundle::gguf::file_type_name) {
            Some(name) => name.into(),
            None => format!("gguf file_type {v}"),
        },
        None => "unknown (no general.file_type)".into(),
    }
}

impl Runtime for LlamaCppRuntime {
    fn info(&self) -> RuntimeInfo {
        let threads = self.options.resolved_threads();
        let settings = [
            ("kv_type", self.options.kv_type.as_str().to_string()),
            ("flash_attention", if self.options.flash_attention { "on" } else { "off" }.to_string()),
            ("n_seq_max", self.options.n_seq_max.to_string()),
            ("threads", threads.to_string()),
            ("unified_kv_cache", "no".into()),
            ("n_ctx", self.session.ctx().n_ctx().to_string()),
            ("n_ctx_per_seq", self.per_seq.to_string()),
            ("n_batch", self.n_batch.to_string()),
            ("n_ubatch", self.session.ctx().n_ubatch().to_string()),
            ("kv_cache", "runtime-owned: llama.cpp's cache, one llama.cpp sequence per engine sequence".into()),
            ("prefix_reuse", "copy-from-holder (whole-stream seq_cp, then seq_rm past the hit)".into()),
            ("model", self.session.path().display().to_string()),
            ("cpu_features", system_info().to_string()),
        ];
        RuntimeInfo {
            name: "llama-cpp".into(),
            version: format!(
                "nano-vllm-llama-cpp {}, llama-cpp-2 {LLAMA_CPP_2_VERSION}, llama.cpp {}",
                env!("CARGO_PKG_VERSION"),
                llama_cpp_version()
            ),
            device: format!("cpu ({threads} threads)"),
            dtype: self.dtype.clone(),
            settings: settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::RuntimeOwned,
            prefix_reuse: PrefixReuse::CopyFromHolder,
            max_batch_tokens: Some(self.n_batch),
            max_num_seqs: Some(self.options.n_seq_max),
            full_position_logits: true,
            kv_bytes_per_token: Some(self.kv_bytes_per_token),
            vocab_size: Some(self.vocab_size),
        }
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(self.step(batch)?)
    }

    fn release(&mut self, seq_id: SeqId) {
        if let Some(h) = self.held.remove(&seq_id) {
            // Removing a whole sequence cannot fail for a KV cache; if it ever did, the id is not reused.
            if let Ok(true) = self.session.ctx_mut().clear_kv_cache_seq(Some(h.llama_id as u32), None, None) {
                self.ids.release(h.llama_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_gguf_file_types() {
        assert_eq!(file_type_name(Some("0")), "f32");
        assert_eq!(file_type_name(Some("7")), "q8_0");
        assert_eq!(file_type_name(Some("15")), "q4_k_m");
        assert_eq!(file_type_name(Some("99")), "gguf file_type 99");
        assert_eq!(file_type_name(None), "unknown (no general.file_type)");
    }
}
