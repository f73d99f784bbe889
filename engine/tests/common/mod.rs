//! Scenario generation and a recording runtime for the engine's property tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use nano_vllm_engine::{
    Capabilities, Config, KvCacheSpec, LlmEngine, MockRuntime, Runtime, RuntimeError, RuntimeInfo, SamplingParams,
    SeqId, StepBatch, StepOutput,
};
use proptest::prelude::*;

pub const EOS: u32 = 0;

/// One request of a scenario.
#[derive(Debug, Clone)]
pub struct Req {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Add,
    Step,
    /// Abort the k-th added request (modulo the number added), if unfinished.
    Abort(usize),
}

/// Engine settings and requests, all consistent with one another.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub chunked: bool,
    pub prefix_caching: bool,
    pub vocab: usize,
    pub reqs: Vec<Req>,
    pub ops: Vec<Op>,
}

impl Scenario {
    pub fn config(&self) -> Config {
        Config::builder()
            .block_size(self.block_size)
            .num_kv_blocks(self.num_blocks)
            .max_num_seqs(self.max_num_seqs)
            .max_num_batched_tokens(self.max_num_batched_tokens)
            .max_model_len(self.max_model_len)
            .enable_chunked_prefill(self.chunked)
            .enable_prefix_caching(self.prefix_caching)
            .eos_token_ids(vec![EOS])
            .build()
            .expect("scenario configs are valid")
    }

    /// The same requests with as many blocks as they could ever need at once: no preemption.
    pub fn with_ample_kv(&self) -> Self {
        let need: usize = self.reqs.iter().map(|r| (r.prompt.len() + r.max_tokens).div_ceil(self.block_size)).sum();
        Self { num_blocks: need.max(self.num_blocks), ..self.clone() }
    }

    /// The fewest blocks the config allows: one sequence of max_model_len.
    pub fn with_tight_kv(&self) -> Self {
        Self { num_blocks: self.max_model_len.div_ceil(self.block_size), ..self.clone() }
    }
}

prop_compose! {
    fn req_strategy(max_model_len: usize, vocab: usize, prefixes: Vec<Vec<u32>>)
        (which in 0..=prefixes.len(), suffix in prop::collection::vec(1..vocab as u32, 0..20),
         max_tokens in 1usize..12, ignore_eos in any::<bool>())
        -> Req
    {
        let mut prompt = prefixes.get(which).cloned().unwrap_or_default();
        prompt.extend(suffix);
        let max_tokens = max_tokens.min(max_model_len - 1);
        prompt.truncate(max_model_len - max_tokens);
        if prompt.is_empty() {
            prompt.push(1);
        }
        Req { prompt, max_tokens, ignore_eos }
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Add), 6 => Just(Op::Step), 1 => any::<usize>().prop_map(Op::Abort)]
}

prop_compose! {
    fn settings()
        (block_size in prop::sample::select(vec![1usize, 2, 3, 4, 8, 16]),
         max_model_len in 8usize..64,
         extra_blocks in 0usize..24,
         max_num_seqs in 1usize..8,
         chunked in any::<bool>(),
         prefix_caching in any::<bool>(),
         budget_frac in 1usize..=8,
         vocab in 8usize..48)
        -> (usize, usize, usize, usize, usize, bool, bool, usize)
    {
        let num_blocks = max_model_len.div_ceil(block_size) + extra_blocks;
        // Chunked prefill may have a budget far below a prompt; otherwise it must hold max_model_len.
        let budget = if chunked { (max_model_len * budget_frac / 8).max(1) } else { max_model_len + budget_frac };
        (block_size, num_blocks, max_num_seqs, budget, max_model_len, chunked, prefix_caching, vocab)
    }
}

/// A scenario with `n_reqs` requests drawn around a few shared prefixes, and a random sequence of operations.
pub fn scenario(n_reqs: std::ops::Range<usize>, n_ops: usize) -> impl Strategy<Value = Scenario> {
    settings().prop_flat_map(
        move |(block_size, num_blocks, max_num_seqs, budget, max_model_len, chunked, prefix, vocab)| {
            let prefixes = prop::collection::vec(prop::collection::vec(1..vocab as u32, 1..40), 1..4);
            (Just((block_size, num_blocks, max_num_seqs, budget, max_model_len, chunked, prefix, vocab)), prefixes)
                .prop_flat_map({
                    let n_reqs = n_reqs.clone();
                    move |(s, prefixes)| {
                        let reqs = prop::collection::vec(req_strategy(s.4, s.7, prefixes), n_reqs.clone());
                        let ops = prop::collection::vec(op_strategy(), n_ops);
                        (Just(s), reqs, ops)
                    }
                })
                .prop_map(
                    |(
                        (
                            block_size,
                            num_blocks,
                            max_num_seqs,
                            max_num_batched_tokens,
                            max_model_len,
                            chunked,
                            prefix_caching,
                            vocab,
                        ),
                        reqs,
                        ops,
                    )| Scenario {
                        block_size,
                        num_blocks,
                        max_num_seqs,
                        max_num_batched_tokens,
                        max_model_len,
                        chunked,
                        prefix_caching,
                        vocab,
                        reqs,
                        ops,
                    },
                )
        },
    )
}

/// What a runtime saw: every batch (cloned) and every release.
#[derive(Debug, Default)]
pub struct Log {
    pub batches: Vec<StepBatch>,
    pub released: Vec<SeqId>,
}

/// Wraps the mock and records what the engine asked of it.
#[derive(Debug)]
pub struct Recorder {
    pub inner: MockRuntime,
    pub log: Arc<Mutex<Log>>,
}

impl Recorder {
    pub fn new(vocab: usize) -> (Self, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        (Self { inner: MockRuntime::new(vocab), log: log.clone() }, log)
    }
}

impl Runtime for Recorder {
    fn info(&self) -> RuntimeInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        self.inner.prepare(kv)
    }
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        self.log.lock().unwrap().batches.push(batch.clone());
        self.inner.execute(batch)
    }
    fn release(&mut self, seq_id: SeqId) {
        self.log.lock().unwrap().released.push(seq_id);
    }
}

pub fn params(req: &Req) -> SamplingParams {
    SamplingParams { ignore_eos: req.ignore_eos, ..SamplingParams::greedy(req.max_tokens) }
}

/// Adds every request, then steps to the end; returns (output tokens, finish reason, preemptions) per request.
pub fn run_all(sc: &Scenario, sampling: impl Fn(&Req) -> SamplingParams) -> (Vec<(Vec<u32>, &'static str)>, usize) {
    let mut engine = LlmEngine::new(sc.config(), Box::new(MockRuntime::new(sc.vocab))).unwrap();
    let ids: Vec<_> = sc.reqs.iter().map(|r| engine.add_request(r.prompt.clone(), sampling(r)).unwrap()).collect();
    let mut out = vec![(Vec::new(), ""); ids.len()];
    let mut preemptions = 0;
    while engine.has_unfinished() {
        let step = engine.step().unwrap();
        preemptions += step.stats.map_or(0, |s| s.num_preemptions);
        for seq in step.finished {
            out[seq.id() as usize] = (seq.output_token_ids().to_vec(), seq.finish_reason().unwrap().as_str());
        }
    }
    (out, preemptions)
}

/// What the mock computes for a request with no engine at all: greedy continuation from the token states.
pub fn reference_greedy(vocab: usize, req: &Req) -> (Vec<u32>, &'static str) {
    let mock = MockRuntime::new(vocab);
    let mut tokens = req.prompt.clone();
    let mut row = vec![0.0; vocab];
    let mut out = Vec::new();
    loop {
        mock.logits_row(MockRuntime::state_of(&tokens), &mut row);
        let t = nano_vllm_engine::argmax(&row).unwrap();
        tokens.push(t);
        out.push(t);
        if t == EOS && !req.ignore_eos {
            return (out, "eos");
        }
        if out.len() == req.max_tokens {
            return (out, "length");
        }
    }
}

/// Claims a runtime-owned cache served by copying from holders, and checks the engine keeps that contract: every
/// block of a prefix-cache hit is, at the same index, in the table of some sequence the runtime still holds, which
/// computed it before this step. Data flows through the paged mock underneath.
#[derive(Debug)]
pub struct HolderChecker {
    pub inner: MockRuntime,
    /// Per held sequence: its block table and how many tokens it has computed.
    held: std::collections::HashMap<SeqId, (Vec<u32>, usize)>,
}

impl HolderChecker {
    pub fn new(vocab: usize) -> Self {
        Self { inner: MockRuntime::new(vocab), held: Default::default() }
    }
}

impl Runtime for HolderChecker {
    fn info(&self) -> RuntimeInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: nano_vllm_engine::KvCacheKind::RuntimeOwned,
            prefix_reuse: nano_vllm_engine::PrefixReuse::CopyFromHolder,
            ..self.inner.capabilities()
        }
    }
    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        self.inner.prepare(kv)
    }
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        let bs = batch.block_size;
        for e in &batch.seqs {
            let table = batch.block_table(e);
            let fresh = !self.held.contains_key(&e.seq_id);
            if fresh && e.num_cached_tokens > 0 {
                // Each cached block: some held sequence has it at the same index and has computed it.
                for i in 0..e.num_cached_tokens / bs {
                    let held = self
                        .held
                        .values()
                        .any(|(t, computed)| t.get(i) == Some(&table[i]) && *computed >= (i + 1) * bs);
                    if !held {
                        return Err(format!(
                            "seq {}: cached block {} (index {i}) of {:?} has no held sequence that computed it",
                            e.seq_id,
                            table[i],
                            &table[..e.num_cached_tokens / bs]
                        )
                        .into());
                    }
                }
            }
            if !fresh && e.num_computed_tokens != self.held[&e.seq_id].1 {
                return Err(format!(
                    "seq {}: engine says {} computed, runtime holds {}",
                    e.seq_id, e.num_computed_tokens, self.held[&e.seq_id].1
                )
                .into());
            }
            if fresh && e.num_computed_tokens != e.num_cached_tokens {
                return Err(format!(
                    "seq {}: first seen with {} computed but {} cached",
                    e.seq_id, e.num_computed_tokens, e.num_cached_tokens
                )
                .into());
            }
        }
        for e in &batch.seqs {
            self.held.insert(e.seq_id, (batch.block_table(e).to_vec(), e.context_len()));
        }
        self.inner.execute(batch)
    }
    fn release(&mut self, seq_id: SeqId) {
        self.held.remove(&seq_id);
    }
}
