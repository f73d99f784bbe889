//! [`OnnxRuntime`]: the engine's [`Runtime`] on one ONNX Runtime session, with runtime-owned keys and values.
//!
//! Each step: remember every scheduled sequence's block table ([`BlockTables`]), make sure each sequence's past is
//! what the engine says was computed (a fresh prompt starts empty, a prefix-cache hit is copied from a holder,
//! anything else must already be held), group the sequences into runs ([`plan_runs`]), and for each run write the
//! rows' pasts into padded past tensors, run the graph, copy the wanted logit rows to their output rows, and append
//! the new tokens' keys and values from `present`. `release` drops a sequence's past and table.
//!
//! Decode carry-over: after a run of single-token rows, its `present` tensors are kept (`Carry`); when the next
//! single-token run has the same sequences in the same order, each one token further, they are exactly that run's
//! left-padded past (`present = concat(past, new)`, every row one token longer), so they are fed back as they are
//! and the copy of every row's past into the input tensors is skipped. Any other run writes the past from the
//! per-sequence buffers, which stay complete either way.

use std::collections::HashMap;
use std::path::Path;

use nano_vllm_bundle::Bundle;
use nano_vllm_engine::{
    BatchError, BatchLimits, Capabilities, KvCacheKind, PrefixReuse, Runtime, RuntimeError, RuntimeInfo, SeqBatchEntry,
    SeqId, StepBatch, StepOutput,
};

use crate::error::OnnxError;
use crate::kv::{KvShape, SeqKv};
use crate::library::{self, ORT_CRATE_VERSION, OrtLibrary};
use crate::options::OnnxOptions;
use crate::plan::{RowSpec, RunInputs, plan_runs};
use crate::prefix::BlockTables;
use crate::session::{OnnxSession, Past};

/// ONNX Runtime driven by the engine. See the module docs.
#[derive(Debug)]
pub struct OnnxRuntime {
    session: OnnxSession,
    library: &'static OrtLibrary,
    options: OnnxOptions,
    shape: KvShape,
    kv: HashMap<SeqId, SeqKv>,
    tables: BlockTables,
    inputs: RunInputs,
    /// Past tensors of the current run, reused between runs.
    past: Vec<Vec<f32>>,
    carry: Option<Carry>,
    /// Runs whose past was carried over from the previous run, and all runs (for tests and reports).
    carried_runs: usize,
    runs: usize,
}

/// The present tensors of the last run of single-token rows, with who its rows are.
#[derive(Debug)]
struct Carry {
    seq_ids: Vec<SeqId>,
    /// Tokens each row's sequence holds after that run.
    lens: Vec<usize>,
    /// Their token length (the next past length).
    total: usize,
    present: Vec<ort::value::DynValue>,
}

impl Carry {
    /// Whether these are the past of a single-token run over `entries` padded to `past` tokens.
    fn fits(&self, entries: &[&SeqBatchEntry], query: usize, past: usize) -> bool {
        query == 1
            && self.total == past
            && self.seq_ids.len() == entries.len()
            && entries
                .iter()
                .zip(&self.seq_ids)
                .zip(&self.lens)
                .all(|((e, &id), &len)| e.seq_id == id && e.num_computed_tokens == len)
    }

    fn holds(&self, seq_id: SeqId) -> bool {
        self.seq_ids.contains(&seq_id)
    }
}

impl OnnxRuntime {
    /// Loads `model_path` (an ONNX causal LM with KV-cache inputs and outputs; see [`crate::io`]).
    pub fn load(model_path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self, OnnxError> {
        let path = model_path.as_ref();
        if !path.is_file() {
            return Err(OnnxError::ModelNotFound { path: path.to_path_buf() });
        }
        let library = library::load(options.library.as_deref())?;
        let session = OnnxSession::load(library, path, options.intra_threads)?;
        let io = session.io();
        let shape = KvShape { layers: io.num_layers(), kv_heads: io.kv_heads, head_dim: io.head_dim };
        Ok(Self {
            past: vec![Vec::new(); shape.tensors()],
            session,
            library,
            options: options.clone(),
            shape,
            kv: HashMap::new(),
            tables: BlockTables::default(),
            inputs: RunInputs::default(),
            carry: None,
            carried_runs: 0,
            runs: 0,
        })
    }

    /// Loads a fixture bundle's `model.onnx` and checks it against the bundle's config (vocabulary, layers, heads).
    pub fn from_bundle(bundle: &Bundle, options: &OnnxOptions) -> Result<Self, OnnxError> {
        let runtime = Self::load(bundle.onnx(), options)?;
        let (io, config) = (runtime.session.io(), bundle.config());
        let graph = (io.vocab_size, io.num_layers(), io.kv_heads, io.head_dim);
        let manifest = (config.vocab_size, config.num_layers, config.num_kv_heads, config.head_dim);
        if graph != manifest {
            return Err(OnnxError::Graph {
                path: bundle.onnx(),
                problem: format!(
                    "(vocab, layers, KV heads, head dim) = {graph:?} in the graph but {manifest:?} in the bundle's \
                     manifest"
                ),
            });
        }
        Ok(runtime)
    }

    /// The library this runtime runs on.
    pub fn library(&self) -> &'static OrtLibrary {
        self.library
    }

    /// Sequences whose keys and values are held.
    pub fn num_held_sequences(&self) -> usize {
        self.kv.len()
    }

    /// Tokens of keys and values held for `seq_id` (0 if none).
    pub fn held_tokens(&self, seq_id: SeqId) -> usize {
        self.kv.get(&seq_id).map_or(0, SeqKv::len)
    }

    /// ONNX Runtime runs so far, and how many of them were fed the previous run's present as their past.
    pub fn run_counts(&self) -> (usize, usize) {
        (self.runs, self.carried_runs)
    }

    /// [`Runtime::execute`] with this crate's error type.
    pub fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, OnnxError> {
        let vocab = self.session.io().vocab_size;
        self.check(batch)?;
        for e in &batch.seqs {
            self.tables.record(e.seq_id, batch.block_table(e));
        }
        for e in &batch.seqs {
            self.ensure_past(batch, e)?;
        }
        let mut logits = vec![0.0; batch.num_logit_rows() * vocab];
        let query_lens: Vec<usize> = batch.seqs.iter().map(|e| e.query_len).collect();
        for run in plan_runs(&query_lens, self.options.grouping) {
            self.run(batch, &run, &mut logits)?;
        }
        Ok(StepOutput { vocab_size: vocab, logits })
    }

    /// Rejects a batch this runtime would misread (see `StepBatch::validate`; the KV cache is this runtime's own,
    /// kept per sequence id).
    fn check(&self, batch: &StepBatch) -> Result<(), OnnxError> {
        let limits = BatchLimits { vocab_size: self.session.io().vocab_size, max_positions: None, kv_slots: None };
        Ok(batch.validate(&limits)?)
    }

    /// Makes the held past of `e`'s sequence exactly its `num_computed_tokens`.
    fn ensure_past(&mut self, batch: &StepBatch, e: &SeqBatchEntry) -> Result<(), OnnxError> {
        let (id, computed, cached) = (e.seq_id, e.num_computed_tokens, e.num_cached_tokens);
        if computed == 0 {
            // A prompt (or a recompute after preemption) from its start: nothing before it.
            self.drop_carry_of(id);
            self.kv.insert(id, SeqKv::default());
            return Ok(());
        }
        let held = self.kv.get(&id).map(SeqKv::len);
        if held == Some(computed) {
            return Ok(());
        }
        if held.unwrap_or(0) == 0 && cached > 0 && cached == computed {
            let no_holder = |blocks| OnnxError::NoPrefixHolder { seq_id: id, cached_tokens: cached, blocks };
            if batch.block_size == 0 {
                return Err(OnnxError::Batch(BatchError::Malformed {
                    seq_id: id,
                    what: "the step's block size is 0, with a prefix-cache hit".into(),
                }));
            }
            let blocks = cached.div_ceil(batch.block_size);
            let table = batch.block_table(e);
            let prefix = table.get(..blocks).ok_or_else(|| no_holder(blocks))?;
            let kv = &self.kv;
            let held = |h: SeqId| kv.get(&h).map_or(0, SeqKv::len);
            let copy = match self.tables.holder(id, prefix, cached, held) {
                Some(holder) => kv[&holder].prefix(&self.shape, cached),
                None => {
                    // Different sequences hold different blocks of the prefix: copy each block from its holder.
                    let bs = batch.block_size;
                    let mut copy = SeqKv::default();
                    for (i, &block) in prefix.iter().enumerate() {
                        let end = ((i + 1) * bs).min(cached);
                        let holder =
                            self.tables.block_holder(id, i, block, end, held).ok_or_else(|| no_holder(blocks))?;
                        copy.extend_from(&self.shape, &kv[&holder], i * bs, end);
                    }
                    copy
                }
            };
            self.drop_carry_of(id);
            self.kv.insert(id, copy);
            return Ok(());
        }
        Err(OnnxError::KvMismatch { seq_id: id, expected: computed, held: held.unwrap_or(0) })
    }

    fn drop_carry_of(&mut self, seq_id: SeqId) {
        if self.carry.as_ref().is_some_and(|c| c.holds(seq_id)) {
            self.carry = None;
        }
    }

    /// One ONNX Runtime run over the sequences `run` (indices into `batch.seqs`).
    fn run(&mut self, batch: &StepBatch, run: &[usize], logits_out: &mut [f32]) -> Result<(), OnnxError> {
        let Self { session, shape, kv, inputs, past, carry, .. } = self;
        let entries: Vec<&SeqBatchEntry> = run.iter().map(|&i| &batch.seqs[i]).collect();
        let rows: Vec<RowSpec<'_>> = entries
            .iter()
            .map(|e| RowSpec {
                past_len: e.num_computed_tokens,
                tokens: batch.tokens(e),
                positions: batch.positions_of(e),
            })
            .collect();
        inputs.fill(&rows);
        let (s, p) = (inputs.query, inputs.past);
        // Taken only when it fits: a prefill run between two decode runs leaves it for the next decode run.
        let carried = if carry.as_ref().is_some_and(|c| c.fits(&entries, s, p)) { carry.take() } else { None };
        if carried.is_none() {
            for buf in past.iter_mut() {
                buf.resize(entries.len() * shape.kv_heads * p * shape.head_dim, 0.0);
            }
            for (row, e) in entries.iter().enumerate() {
                let held = kv.get(&e.seq_id).ok_or(OnnxError::KvMismatch {
                    seq_id: e.seq_id,
                    expected: e.num_computed_tokens,
                    held: 0,
                })?;
                held.write_past(shape, past, row, p);
            }
        }
        let past_input = match &carried {
            Some(c) => Past::Carried(&c.present),
            None => Past::Buffers(past),
        };

        let outputs = session.run(inputs, past_input)?;
        let logits = outputs.logits()?;
        let vocab = outputs.vocab_size();
        for (row, e) in entries.iter().enumerate() {
            for r in e.logits_start..e.logits_start + e.num_logits {
                let j = batch.logits_indices[r] as usize - e.query_start;
                let from = (row * s + j) * vocab;
                logits_out[r * vocab..(r + 1) * vocab].copy_from_slice(&logits[from..from + vocab]);
            }
        }
        let present = outputs.present()?;
        for (row, e) in entries.iter().enumerate() {
            let held = kv.get_mut(&e.seq_id).ok_or(OnnxError::KvMismatch {
                seq_id: e.seq_id,
                expected: e.num_computed_tokens,
                held: 0,
            })?;
            held.append_present(shape, &present, row, p + s, p, e.query_len);
        }
        drop(present);
        self.runs += 1;
        self.carried_runs += usize::from(carried.is_some());
        drop(carried);
        if s == 1 {
            self.carry = Some(Carry {
                seq_ids: entries.iter().map(|e| e.seq_id).collect(),
                lens: entries.iter().map(|e| e.num_computed_tokens + 1).collect(),
                total: p + 1,
                present: outputs.into_present()?,
            });
        }
        Ok(())
    }
}

impl Runtime for OnnxRuntime {
    fn info(&self) -> RuntimeInfo {
        let io = self.session.io();
        let threads = match self.options.intra_threads {
            0 => "ONNX Runtime default".to_string(),
            n => n.to_string(),
        };
        let settings = [
            ("execution_provider", "cpu".to_string()),
            ("intra_op_threads", threads.clone()),
            ("inter_op_threads", "1".into()),
            ("graph_optimization", "all (ONNX Runtime default)".into()),
            ("kv_cache", "runtime-owned, f32, one buffer per sequence".into()),
            ("prefix_reuse", "copy-from-holder".into()),
            ("step_grouping", self.options.grouping.as_str().into()),
            ("padding", "past left, query right, attention_mask 0 on padding".into()),
            ("decode_carry_over", "present of a single-token run fed back as the next one's past".into()),
            ("layers", io.num_layers().to_string()),
            ("kv_heads", io.kv_heads.to_string()),
            ("head_dim", io.head_dim.to_string()),
            ("vocab_size", io.vocab_size.to_string()),
            ("model", self.session.path().display().to_string()),
            ("library", self.library.path().display().to_string()),
        ];
        RuntimeInfo {
            name: "onnx".into(),
            version: format!("ort {ORT_CRATE_VERSION}, ONNX Runtime {}", self.library.version()),
            device: format!("cpu ({threads} intra-op threads)"),
            dtype: "f32".into(),
            settings: settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        let io = self.session.io();
        Capabilities {
            kv_cache: KvCacheKind::RuntimeOwned,
            prefix_reuse: PrefixReuse::CopyFromHolder,
            max_batch_tokens: None,
            max_num_seqs: None,
            full_position_logits: true,
            kv_bytes_per_token: Some(io.kv_bytes_per_token()),
            vocab_size: Some(io.vocab_size),
        }
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(self.step(batch)?)
    }

    fn release(&mut self, seq_id: SeqId) {
        self.drop_carry_of(seq_id);
        self.kv.remove(&seq_id);
        self.tables.forget(seq_id);
    }
}
