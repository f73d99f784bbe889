//! `LlmEngine`: requests in, tokens out. One step is nano-vllm's three lines — schedule, run the model, postprocess —
//! with sampling in between so every runtime samples identically.

use std::time::{Duration, Instant};

use crate::batch::StepOutput;
use crate::block_manager::HitPolicy;
use crate::config::Config;
use crate::error::{AddRequestError, EngineError};
use crate::input_batch::{BatchCounts, InputBatch};
use crate::runtime::{Capabilities, KvCacheKind, KvCacheSpec, PrefixReuse, Runtime, RuntimeInfo};
use crate::sampling::{LogitsCapture, Sampler, SamplingParams, TokenLogprobs, argmax};
use crate::scheduler::Scheduler;
use crate::sequence::{SeqId, Sequence};

/// What one step did, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// When the step ended (its tokens' timestamp).
    pub time: Instant,
    pub num_seqs: usize,
    pub num_prefill_seqs: usize,
    pub num_tokens: usize,
    pub num_prefill_tokens: usize,
    pub num_decode_tokens: usize,
    pub num_running: usize,
    pub num_waiting: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    /// Prompt tokens served by the prefix cache in this step's admissions.
    pub prefix_hit_tokens: usize,
    /// Prompt tokens of this step's admissions (hits included).
    pub admitted_prompt_tokens: usize,
    pub num_preemptions: usize,
    pub schedule_time: Duration,
    pub runtime_time: Duration,
    /// Sampling and bookkeeping after the runtime returned.
    pub postprocess_time: Duration,
}

/// The outcome of one step.
#[derive(Debug)]
pub struct StepResult {
    /// Each token sampled this step.
    pub new_tokens: Vec<(SeqId, u32)>,
    /// The log-probabilities of this step's tokens, for the requests that asked for them (`SamplingParams::logprobs`).
    pub logprobs: Vec<(SeqId, TokenLogprobs)>,
    /// Sequences that finished this step (blocks freed, runtime released).
    pub finished: Vec<Sequence>,
    /// `None` when there was nothing to do.
    pub stats: Option<StepStats>,
}

/// The engine, driving one runtime.
pub struct LlmEngine {
    config: Config,
    runtime: Box<dyn Runtime>,
    info: RuntimeInfo,
    caps: Capabilities,
    scheduler: Scheduler,
    sampler: Sampler,
    /// The persistent step batch the runtime reads.
    input: InputBatch,
    /// The token sampled for each batch entry (`None`: the entry did not end its pending tokens).
    sampled: Vec<Option<u32>>,
    /// This step's logprobs (moved into the result).
    logprobs: Vec<(SeqId, TokenLogprobs)>,
    /// A logit row with EOS and stop tokens masked (requests below their `min_tokens`).
    masked_row: Vec<f32>,
    num_kv_blocks: usize,
    next_id: SeqId,
}

impl std::fmt::Debug for LlmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmEngine").field("config", &self.config).field("runtime", &self.info.name).finish()
    }
}

impl LlmEngine {
    /// Sizes the KV cache (from the config, or from a memory budget and the runtime's bytes per token), applies the
    /// runtime's limits and prepares it.
    pub fn new(config: Config, mut runtime: Box<dyn Runtime>) -> Result<Self, EngineError> {
        let caps = runtime.capabilities();
        let info = runtime.info();
        let num_kv_blocks = config.resolve_num_blocks(caps.kv_bytes_per_token)?;
        let policy = match (config.enable_prefix_caching, caps.prefix_reuse) {
            (false, _) | (_, PrefixReuse::Recompute) => None,
            (true, PrefixReuse::SharedBlocks) if caps.kv_cache == KvCacheKind::EnginePaged => Some(HitPolicy::Any),
            (true, _) => Some(HitPolicy::LiveOnly),
        };
        let mut scheduler = Scheduler::new(&config, num_kv_blocks, policy);
        scheduler.limit(caps.max_num_seqs, caps.max_batch_tokens);
        runtime
            .prepare(&KvCacheSpec { num_blocks: num_kv_blocks, block_size: config.block_size })
            .map_err(|source| EngineError::Runtime { runtime: info.name.clone(), source })?;
        let input = InputBatch::new(config.block_size, config.max_model_len);
        Ok(Self {
            config,
            runtime,
            info,
            caps,
            scheduler,
            sampler: Sampler::default(),
            input,
            sampled: Vec::new(),
            logprobs: Vec::new(),
            masked_row: Vec::new(),
            num_kv_blocks,
            next_id: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn runtime_info(&self) -> &RuntimeInfo {
        &self.info
    }
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    pub fn num_kv_blocks(&self) -> usize {
        self.num_kv_blocks
    }
    /// Whether prefix-cache hits are served (the config asks for it and the runtime can).
    pub fn prefix_caching_active(&self) -> bool {
        self.scheduler.block_manager().prefix_caching().is_some()
    }
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    /// Adds a request arriving now.
    pub fn add_request(&mut self, prompt: Vec<u32>, params: SamplingParams) -> Result<SeqId, AddRequestError> {
        self.add_request_at(prompt, params, Instant::now())
    }

    /// Adds a request that arrived at `arrival` (its scheduled time in a workload, so waiting before it was added
    /// still counts towards its latency). Refuses at once a request that could never run.
    pub fn add_request_at(
        &mut self,
        prompt: Vec<u32>,
        params: SamplingParams,
        arrival: Instant,
    ) -> Result<SeqId, AddRequestError> {
        params.validate()?;
        let (prompt_len, max_tokens) = (prompt.len(), params.max_tokens);
        if prompt_len == 0 {
            return Err(AddRequestError::EmptyPrompt);
        }
        let total = prompt_len.saturating_add(max_tokens);
        if total > self.config.max_model_len {
            return Err(AddRequestError::TooLong {
                prompt_len,
                max_tokens,
                total,
                max_model_len: self.config.max_model_len,
            });
        }
        let needed = total.div_ceil(self.config.block_size);
        if needed > self.num_kv_blocks {
            return Err(AddRequestError::NotEnoughBlocks {
                prompt_len,
                max_tokens,
                needed,
                block_size: self.config.block_size,
                num_blocks: self.num_kv_blocks,
            });
        }
        if let Some(vocab_size) = self.caps.vocab_size {
            if let Some((position, &token)) = prompt.iter().enumerate().find(|(_, t)| **t as usize >= vocab_size) {
                return Err(AddRequestError::TokenOutOfRange { token, position, vocab_size });
            }
            if let Some(&token) = params.stop_token_ids.iter().find(|t| **t as usize >= vocab_size) {
                return Err(AddRequestError::StopTokenOutOfRange { token, vocab_size });
            }
        }
        if params.logits == LogitsCapture::All && !self.caps.full_position_logits {
            return Err(AddRequestError::FullLogitsUnsupported);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.scheduler.add(Sequence::new(id, prompt, params, arrival));
        Ok(id)
    }

    /// Aborts a request, waiting or running; returns it with finish reason `Aborted`.
    pub fn abort(&mut self, id: SeqId) -> Result<Sequence, EngineError> {
        let mut seq = self.scheduler.abort(id, Instant::now()).ok_or(EngineError::UnknownRequest(id))?;
        self.input.release(&mut seq);
        self.runtime.release(id);
        Ok(seq)
    }

    /// One step: schedule, run the runtime, sample, postprocess. After a runtime error the engine's sequences are
    /// as they were before the step, but a runtime-owned cache may not be: drop the engine.
    pub fn step(&mut self) -> Result<StepResult, EngineError> {
        let t0 = Instant::now();
        let num_seqs = self.schedule()?;
        if num_seqs == 0 {
            return Ok(StepResult { new_tokens: Vec::new(), logprobs: Vec::new(), finished: Vec::new(), stats: None });
        }
        let (running, scheduled) = self.scheduler.running_mut_and_scheduled();
        let counts = self.input.build(running, scheduled);
        let t1 = Instant::now();
        let out = self.execute()?;
        let t2 = Instant::now();
        self.capture_logits(&out);
        let new_tokens = self.sample(&out)?;
        let t3 = Instant::now();
        let finished = self.postprocess(t3);
        let stats = self.stats(num_seqs, counts, [t0, t1, t2, t3]);
        let logprobs = std::mem::take(&mut self.logprobs);
        Ok(StepResult { new_tokens, logprobs, finished, stats: Some(stats) })
    }

    /// Chooses the step's sequences; the runtime forgets those the scheduler preempted. Returns how many run.
    fn schedule(&mut self) -> Result<usize, EngineError> {
        let n = self.scheduler.schedule(Instant::now());
        for &id in self.scheduler.preempted() {
            self.runtime.release(id);
        }
        let waiting = self.scheduler.waiting().len();
        if n == 0 && waiting > 0 {
            return Err(EngineError::Stalled { waiting });
        }
        Ok(n)
    }

    /// Runs the step on the runtime and checks that it returned one logit row per requested index.
    fn execute(&mut self) -> Result<StepOutput, EngineError> {
        let batch = self.input.batch();
        let out = self
            .runtime
            .execute(batch)
            .map_err(|source| EngineError::Runtime { runtime: self.info.name.clone(), source })?;
        let rows = batch.num_logit_rows();
        if out.vocab_size == 0 || out.logits.len() != rows * out.vocab_size {
            return Err(EngineError::BadOutput {
                runtime: self.info.name.clone(),
                expected: rows,
                got: out.num_rows(),
                vocab: out.vocab_size,
            });
        }
        Ok(out)
    }

    /// Keeps the logit rows that requests asked for (parity checks).
    fn capture_logits(&mut self, out: &StepOutput) {
        let batch = self.input.batch();
        let running = self.scheduler.running_mut();
        for (entry, &index) in batch.seqs.iter().zip(self.input.entry_index()) {
            let seq = &mut running[index];
            let Some(captured) = seq.logits.as_mut() else { continue };
            let capture_all = seq.params.logits == LogitsCapture::All;
            for (k, pos) in batch.logit_positions(entry).enumerate() {
                if capture_all || (entry.samples && k + 1 == entry.num_logits) {
                    captured.insert(pos, out.row(entry.logits_start + k));
                }
            }
        }
    }

    /// Samples a token for every entry that ended its pending tokens, from its last logit row (EOS and stop tokens
    /// masked while a request is below its `min_tokens`), with its logprobs where asked.
    fn sample(&mut self, out: &StepOutput) -> Result<Vec<(SeqId, u32)>, EngineError> {
        let batch = self.input.batch();
        let running = self.scheduler.running_mut();
        self.sampled.clear();
        self.logprobs.clear();
        let mut new_tokens = Vec::with_capacity(batch.seqs.len());
        for (entry, &index) in batch.seqs.iter().zip(self.input.entry_index()) {
            if !entry.samples {
                self.sampled.push(None);
                continue;
            }
            let seq = &mut running[index];
            let raw = out.row(entry.logits_start + entry.num_logits - 1);
            let row = if seq.num_output_tokens() < seq.params.min_tokens {
                self.masked_row.clear();
                self.masked_row.extend_from_slice(raw);
                for &t in self.config.eos_token_ids.iter().chain(&seq.params.stop_token_ids) {
                    if let Some(x) = self.masked_row.get_mut(t as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
                &self.masked_row[..]
            } else {
                raw
            };
            let token =
                if seq.params.is_greedy() { argmax(row) } else { self.sampler.sample(row, &seq.params, &mut seq.rng) };
            let token = token
                .ok_or_else(|| EngineError::NonFiniteLogits { runtime: self.info.name.clone(), seq_id: seq.id })?;
            if let Some(top_n) = seq.params.logprobs {
                self.logprobs.push((seq.id, TokenLogprobs::from_logits(raw, token, top_n)));
            }
            self.sampled.push(Some(token));
            new_tokens.push((seq.id, token));
        }
        Ok(new_tokens)
    }

    /// Appends the sampled tokens; sequences that finished leave, their blocks, batch rows and runtime state freed.
    fn postprocess(&mut self, now: Instant) -> Vec<Sequence> {
        let mut finished = Vec::new();
        self.scheduler.postprocess(&self.sampled, now, &mut finished);
        for seq in &mut finished {
            self.input.release(seq);
            self.runtime.release(seq.id);
        }
        finished
    }

    /// The step's statistics; `t` are the phase boundaries (start, runtime start, runtime end, sampled).
    fn stats(&self, num_seqs: usize, counts: BatchCounts, t: [Instant; 4]) -> StepStats {
        let (batch, bm) = (self.input.batch(), self.scheduler.block_manager());
        StepStats {
            time: t[3],
            num_seqs,
            num_prefill_seqs: counts.prefill_seqs,
            num_tokens: batch.num_tokens(),
            num_prefill_tokens: counts.prefill_tokens,
            num_decode_tokens: batch.num_tokens() - counts.prefill_tokens,
            num_running: self.scheduler.running().len(),
            num_waiting: self.scheduler.waiting().len(),
            kv_blocks_used: bm.num_used_blocks(),
            kv_blocks_total: bm.num_blocks(),
            prefix_hit_tokens: self.scheduler.prefix_hit_tokens(),
            admitted_prompt_tokens: self.scheduler.admitted_prompt_tokens(),
            num_preemptions: self.scheduler.preempted().len(),
            schedule_time: t[1] - t[0],
            runtime_time: t[2] - t[1],
            postprocess_time: Instant::now() - t[2],
        }
    }

    /// Runs the requests to completion; returns them in the order given.
    pub fn generate(&mut self, prompts: Vec<Vec<u32>>, params: &SamplingParams) -> Result<Vec<Sequence>, EngineError> {
        let mut ids = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            ids.push(self.add_request(prompt, params.clone())?);
        }
        let mut done = Vec::with_capacity(ids.len());
        while self.has_unfinished() {
            done.extend(self.step()?.finished);
        }
        done.sort_by_key(|s| ids.binary_search(&s.id).unwrap_or(usize::MAX));
        Ok(done)
    }

    /// Checks every bookkeeping invariant of the scheduler and block manager (for tests and debugging).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.scheduler.check_invariants()
    }
}
