//! `MockRuntime`: a model-free runtime whose logits depend on every earlier token, through a paged cache.
//!
//! Its "keys and values" are one u64 per slot: a running hash of the sequence up to that position, mixed from the
//! token and the hash at the previous position, read through the block table. So a wrong slot mapping, a block
//! shared by mistake, a prefix hit on the wrong tokens or a recompute that misses a token all change the logits,
//! and the engine's bookkeeping is tested for real. It checks every step with [`StepBatch::validate`] (each slot where
//! the block table puts it), and can be told to fail or panic at a given step (for tests of fault handling).

use crate::batch::{StepBatch, StepOutput};
use crate::batch_check::{BatchError, BatchLimits};
use crate::error::RuntimeError;
use crate::runtime::{Capabilities, KvCacheKind, KvCacheSpec, PrefixReuse, Runtime, RuntimeInfo};

/// What the mock found wrong with a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    #[error("execute called before prepare")]
    NotPrepared,
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("injected failure at step {0}")]
    Injected(usize),
}

const SEED: u64 = 0x6E61_6E6F_766C_6C6D;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The mock's state at a position: depends on the token, the position and the state before.
fn mix(prev: u64, token: u32, position: usize) -> u64 {
    splitmix64(prev ^ splitmix64(((token as u64) << 32) | position as u64))
}

/// A deterministic model stand-in. See the module docs.
#[derive(Debug, Clone)]
pub struct MockRuntime {
    vocab_size: usize,
    block_size: usize,
    slots: Vec<u64>,
    steps: usize,
    fail_at_step: Option<usize>,
    panic_at_step: Option<usize>,
    step_delay: std::time::Duration,
}

impl MockRuntime {
    pub fn new(vocab_size: usize) -> Self {
        assert!(vocab_size > 0, "vocab_size must be at least 1");
        Self {
            vocab_size,
            block_size: 0,
            slots: Vec::new(),
            steps: 0,
            fail_at_step: None,
            panic_at_step: None,
            step_delay: std::time::Duration::ZERO,
        }
    }

    /// Fails the `step`-th call of `execute` (0-based).
    pub fn fail_at_step(mut self, step: usize) -> Self {
        self.fail_at_step = Some(step);
        self
    }

    /// Panics in the `step`-th call of `execute` (0-based): a runtime with a bug, for tests of what its caller then
    /// does (a server must stop answering healthy).
    pub fn panic_at_step(mut self, step: usize) -> Self {
        self.panic_at_step = Some(step);
        self
    }

    /// Sleeps this long in every `execute` (a stand-in for model time, or a deliberately slowed runtime).
    pub fn step_delay(mut self, delay: std::time::Duration) -> Self {
        self.step_delay = delay;
        self
    }

    /// The logits the mock gives at a position whose state is `state`: uniform in [-1, 1).
    pub fn logits_row(&self, state: u64, out: &mut [f32]) {
        for (v, x) in out.iter_mut().enumerate() {
            let r = splitmix64(state ^ (v as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            *x = (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        }
    }

    /// The state after processing `tokens` from position 0, without a cache (for tests).
    pub fn state_of(tokens: &[u32]) -> u64 {
        tokens.iter().enumerate().fold(SEED, |h, (p, &t)| mix(h, t, p))
    }
}

impl Runtime for MockRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            name: "mock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device: "cpu (1 thread)".into(),
            dtype: "f32".into(),
            settings: vec![("vocab_size".into(), self.vocab_size.to_string())],
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::EnginePaged,
            prefix_reuse: PrefixReuse::SharedBlocks,
            full_position_logits: true,
            kv_bytes_per_token: Some(8),
            vocab_size: Some(self.vocab_size),
            ..Capabilities::default()
        }
    }

    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        self.block_size = kv.block_size;
        self.slots = vec![0; kv.num_blocks * kv.block_size];
        Ok(())
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        let step = self.steps;
        self.steps += 1;
        if self.fail_at_step == Some(step) {
            return Err(MockError::Injected(step).into());
        }
        if self.panic_at_step == Some(step) {
            panic!("mock runtime: injected panic at step {step}");
        }
        if self.slots.is_empty() {
            return Err(MockError::NotPrepared.into());
        }
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        if batch.block_size != self.block_size {
            return Err(MockError::from(BatchError::Malformed {
                seq_id: batch.seqs.first().map_or(0, |e| e.seq_id),
                what: format!("the step's block size {} is not the prepared {}", batch.block_size, self.block_size),
            })
            .into());
        }
        let limits = BatchLimits { vocab_size: self.vocab_size, max_positions: None, kv_slots: Some(self.slots.len()) };
        batch.validate(&limits).map_err(MockError::from)?;
        for e in &batch.seqs {
            // The state before the first new token is in the slot of the previous position (through the table).
            let mut state = match e.num_computed_tokens {
                0 => SEED,
                n => {
                    let p = n - 1;
                    let table = batch.block_table(e);
                    let block = *table.get(p / self.block_size).ok_or_else(|| {
                        MockError::from(BatchError::Malformed {
                            seq_id: e.seq_id,
                            what: format!("position {p} is beyond its block table of {} blocks", table.len()),
                        })
                    })?;
                    self.slots[block as usize * self.block_size + p % self.block_size]
                }
            };
            for (j, (&token, &slot)) in batch.tokens(e).iter().zip(batch.slots(e)).enumerate() {
                state = mix(state, token, e.num_computed_tokens + j);
                self.slots[slot as usize] = state;
            }
        }
        let mut logits = vec![0.0; batch.num_logit_rows() * self.vocab_size];
        for (row, &i) in logits.chunks_exact_mut(self.vocab_size).zip(&batch.logits_indices) {
            self.logits_row(self.slots[batch.slot_mapping[i as usize] as usize], row);
        }
        Ok(StepOutput { vocab_size: self.vocab_size, logits })
    }
}
