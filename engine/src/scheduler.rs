//! Continuous batching: which sequences run in the next step and how many tokens each processes.
//!
//! Follows vLLM's V1 scheduler (and nano-vllm's `scheduler.py` for the vocabulary). Each step first serves the
//! running sequences, oldest first: a decode token each, or the next chunk of a prompt still being prefilled. A
//! sequence whose table must grow takes free blocks; when none are left, the newest running sequence is preempted
//! (its blocks freed, to be recomputed later from the front of the waiting queue), and so on until the older one
//! fits or was itself the newest. Then, if nothing was preempted, waiting sequences are admitted in arrival order
//! while the step has token budget, sequence slots and blocks: prefix-cache hits are taken, and the rest of the
//! prompt is scheduled whole (chunked prefill off) or as far as the budget goes (on). Admission is first come first
//! served: a head that does not fit blocks the queue.
//!
//! The cost of a step grows with the number of running sequences; finished sequences are handed out by `postprocess`
//! and never visited again.

use std::collections::VecDeque;
use std::time::Instant;

use crate::block_manager::{BlockManager, HitPolicy};
use crate::config::Config;
use crate::sequence::{FinishReason, SeqId, Sequence, SequenceStatus};

/// One scheduled sequence: `running()[index]` processes `num_new_tokens` tokens from its `num_computed_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub index: usize,
    pub num_new_tokens: usize,
    /// Admitted in this step (new, or again after a preemption): its block table was (re)built.
    pub admitted: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    max_num_seqs: usize,
    max_num_batched_tokens: usize,
    max_model_len: usize,
    chunked_prefill: bool,
    eos_token_ids: Vec<u32>,
    block_manager: BlockManager,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    scheduled: Vec<Scheduled>,
    preempted: Vec<SeqId>,
    prefix_hit_tokens: usize,
    admitted_prompt_tokens: usize,
}

impl Scheduler {
    /// A scheduler over `num_blocks` KV blocks; `prefix_caching` is the hit policy, or `None` to turn caching off
    /// (the config's switch is applied by the caller, which also knows what the runtime supports).
    pub fn new(config: &Config, num_blocks: usize, prefix_caching: Option<HitPolicy>) -> Self {
        Self {
            max_num_seqs: config.max_num_seqs,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_model_len: config.max_model_len,
            chunked_prefill: config.enable_chunked_prefill,
            eos_token_ids: config.eos_token_ids.clone(),
            block_manager: BlockManager::new(num_blocks, config.block_size, prefix_caching),
            waiting: VecDeque::new(),
            running: Vec::new(),
            scheduled: Vec::new(),
            preempted: Vec::new(),
            prefix_hit_tokens: 0,
            admitted_prompt_tokens: 0,
        }
    }

    /// Narrows the limits (a runtime's own maxima).
    pub fn limit(&mut self, max_num_seqs: Option<usize>, max_num_batched_tokens: Option<usize>) {
        if let Some(n) = max_num_seqs {
            self.max_num_seqs = self.max_num_seqs.min(n.max(1));
        }
        if let Some(n) = max_num_batched_tokens {
            self.max_num_batched_tokens = self.max_num_batched_tokens.min(n.max(1));
        }
    }

    pub fn max_num_seqs(&self) -> usize {
        self.max_num_seqs
    }
    pub fn max_num_batched_tokens(&self) -> usize {
        self.max_num_batched_tokens
    }
    pub fn block_manager(&self) -> &BlockManager {
        &self.block_manager
    }
    pub fn waiting(&self) -> impl ExactSizeIterator<Item = &Sequence> {
        self.waiting.iter()
    }
    pub fn running(&self) -> &[Sequence] {
        &self.running
    }
    pub(crate) fn running_mut(&mut self) -> &mut [Sequence] {
        &mut self.running
    }
    /// The running sequences, mutable, beside the last `schedule`'s choice.
    pub(crate) fn running_mut_and_scheduled(&mut self) -> (&mut [Sequence], &[Scheduled]) {
        (&mut self.running, &self.scheduled)
    }
    /// The last `schedule`'s choice.
    pub fn scheduled(&self) -> &[Scheduled] {
        &self.scheduled
    }
    /// Sequences the last `schedule` preempted.
    pub fn preempted(&self) -> &[SeqId] {
        &self.preempted
    }
    /// Prompt tokens served by the prefix cache in the last `schedule`'s admissions.
    pub fn prefix_hit_tokens(&self) -> usize {
        self.prefix_hit_tokens
    }
    /// Prompt tokens (hits included) of the last `schedule`'s admissions.
    pub fn admitted_prompt_tokens(&self) -> usize {
        self.admitted_prompt_tokens
    }
    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Queues a new sequence (the engine validated it).
    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq);
    }

    /// Chooses the next step. Returns the number of scheduled sequences; see [`Self::scheduled`].
    pub fn schedule(&mut self, now: Instant) -> usize {
        self.scheduled.clear();
        self.preempted.clear();
        self.prefix_hit_tokens = 0;
        self.admitted_prompt_tokens = 0;
        let mut budget = self.max_num_batched_tokens;

        let bs = self.block_manager.block_size();
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &self.running[i];
            let n = (seq.len() - seq.num_computed_tokens).min(budget);
            let target = seq.num_computed_tokens + n;
            // Most steps stay inside the table's last block (a decode); otherwise free blocks are taken, preempting
            // the newest sequences while there are none.
            if target > seq.block_table.len() * bs {
                while !self.block_manager.can_append(&self.running[i], target) {
                    let victim = self.running.pop().expect("running holds at least seq i");
                    self.preempt(victim);
                    if self.running.len() == i {
                        break;
                    }
                }
                if i == self.running.len() {
                    break;
                }
                self.block_manager.may_append(&mut self.running[i], target);
            }
            self.scheduled.push(Scheduled { index: i, num_new_tokens: n, admitted: false });
            budget -= n;
            i += 1;
        }

        if self.preempted.is_empty() {
            self.admit(&mut budget, now);
        }
        self.scheduled.len()
    }

    fn admit(&mut self, budget: &mut usize, now: Instant) {
        let bs = self.block_manager.block_size();
        while *budget > 0 && self.running.len() < self.max_num_seqs {
            let Some(seq) = self.waiting.front_mut() else {
                break;
            };
            let hit = self.block_manager.lookup_prefix(seq);
            let cached = hit.blocks * bs;
            let pending = seq.len() - cached;
            let n = if self.chunked_prefill {
                pending.min(*budget)
            } else if pending <= *budget {
                pending
            } else {
                break;
            };
            if !self.block_manager.can_allocate(hit, cached + n) {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            self.block_manager.allocate(&mut seq, hit, cached + n);
            seq.status = SequenceStatus::Running;
            seq.timing.first_scheduled.get_or_insert(now);
            self.prefix_hit_tokens += cached;
            self.admitted_prompt_tokens += seq.len();
            self.running.push(seq);
            self.scheduled.push(Scheduled { index: self.running.len() - 1, num_new_tokens: n, admitted: true });
            *budget -= n;
        }
    }

    fn preempt(&mut self, mut seq: Sequence) {
        self.block_manager.deallocate(&mut seq);
        seq.status = SequenceStatus::Preempted;
        seq.num_preemptions += 1;
        self.preempted.push(seq.id);
        self.waiting.push_front(seq);
    }

    /// Applies a step's results: `sampled[k]` is the token sampled for `scheduled()[k]` (`None` when that entry
    /// did not end its pending tokens). Finished sequences (their blocks freed) are moved into `finished`.
    pub fn postprocess(&mut self, sampled: &[Option<u32>], now: Instant, finished: &mut Vec<Sequence>) {
        debug_assert_eq!(sampled.len(), self.scheduled.len());
        let mut any_finished = false;
        for (s, token) in self.scheduled.iter().zip(sampled) {
            let seq = &mut self.running[s.index];
            seq.num_computed_tokens += s.num_new_tokens;
            if self.block_manager.has_unregistered_full_block(seq) {
                self.block_manager.register_computed(seq);
            }
            let Some(&token) = token.as_ref() else {
                continue;
            };
            debug_assert_eq!(seq.num_computed_tokens, seq.len());
            seq.token_ids.push(token);
            seq.timing.token_times.push(now);
            if let Some(reason) = stop_reason(seq, token, &self.eos_token_ids, self.max_model_len) {
                seq.status = SequenceStatus::Finished(reason);
                seq.timing.finished = Some(now);
                self.block_manager.deallocate(seq);
                any_finished = true;
            }
        }
        if any_finished {
            finished.extend(self.running.extract_if(.., |s| s.is_finished()));
        }
        self.scheduled.clear();
    }

    /// Removes a sequence, waiting or running, freeing its blocks; `None` if it is not here.
    pub fn abort(&mut self, id: SeqId, now: Instant) -> Option<Sequence> {
        let mut seq = if let Some(pos) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(pos)?
        } else {
            let pos = self.running.iter().position(|s| s.id == id)?;
            self.running.remove(pos)
        };
        self.scheduled.clear();
        self.block_manager.deallocate(&mut seq);
        seq.status = SequenceStatus::Finished(FinishReason::Aborted);
        seq.timing.finished = Some(now);
        Some(seq)
    }

    /// Checks every bookkeeping invariant; the message names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.running.len() > self.max_num_seqs {
            return Err(format!("{} running sequences exceed max_num_seqs {}", self.running.len(), self.max_num_seqs));
        }
        for seq in &self.waiting {
            if !seq.block_table.is_empty() || seq.num_computed_tokens != 0 {
                return Err(format!("waiting seq {} holds {} blocks", seq.id, seq.block_table.len()));
            }
        }
        for seq in &self.running {
            if seq.status != SequenceStatus::Running || seq.num_computed_tokens >= seq.len() {
                return Err(format!(
                    "running seq {} is {:?} with {} computed tokens",
                    seq.id, seq.status, seq.num_computed_tokens
                ));
            }
            self.block_manager.check_chain(seq)?;
        }
        self.block_manager.check_invariants(self.running.iter().chain(&self.waiting))
    }
}

/// vLLM's order: EOS (unless ignored), then stop tokens (neither before `min_tokens`), then length.
fn stop_reason(seq: &Sequence, token: u32, eos: &[u32], max_model_len: usize) -> Option<FinishReason> {
    let p = &seq.params;
    let may_stop = seq.num_output_tokens() >= p.min_tokens;
    if may_stop && !p.ignore_eos && eos.contains(&token) {
        Some(FinishReason::Eos)
    } else if may_stop && p.stop_token_ids.contains(&token) {
        Some(FinishReason::Stop)
    } else if seq.num_output_tokens() >= p.max_tokens || seq.len() >= max_model_len {
        Some(FinishReason::Length)
    } else {
        None
    }
}
