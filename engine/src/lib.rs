//! nano-vllm-engine: the shared engine every runtime is driven by.
//!
//! vLLM-style continuous batching without a model in sight: a [`Scheduler`] (prefill and decode in one step, token
//! and sequence budgets, preemption by recompute, chunked prefill), a paged KV [`BlockManager`] with hash-based
//! prefix caching, [`Sequence`]s with timing events, and seeded [`Sampler`]-based sampling. A model plugs in through
//! the small [`Runtime`] trait; [`MockRuntime`] stands in for one in tests and benchmarks.
//!
//! ```
//! use nano_vllm_engine::{Config, LlmEngine, MockRuntime, SamplingParams};
//!
//! let config = Config::builder().max_model_len(64).num_kv_blocks(16).block_size(8).build()?;
//! let mut engine = LlmEngine::new(config, Box::new(MockRuntime::new(100)))?;
//! let out = engine.generate(vec![vec![1, 2, 3], vec![4, 5]], &SamplingParams::greedy(4))?;
//! assert_eq!(out[0].output_token_ids().len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod batch_check;
mod block_manager;
mod config;
mod engine;
mod error;
mod free_list;
mod input_batch;
mod mock;
mod null;
mod runtime;
mod sampling;
mod scheduler;
mod sequence;

pub use batch::{SeqBatchEntry, StepBatch, StepOutput};
pub use batch_check::{BatchError, BatchLimits};
pub use block_manager::{BlockId, BlockManager, HitPolicy, PrefixHit, block_hash};
pub use config::{Config, ConfigBuilder, KvCacheSize};
pub use engine::{LlmEngine, StepResult, StepStats};
pub use error::{AddRequestError, ConfigError, EngineError, RuntimeError, SamplingError};
pub use mock::{MockError, MockRuntime};
pub use null::NullRuntime;
pub use runtime::{Capabilities, KvCacheKind, KvCacheSpec, PrefixReuse, Runtime, RuntimeInfo};
pub use sampling::{LogitsCapture, MAX_LOGPROBS, Sampler, SamplingParams, TokenLogprobs, argmax};
pub use scheduler::{Scheduled, Scheduler};
pub use sequence::{CapturedLogits, FinishReason, SeqId, Sequence, SequenceStatus, SequenceTiming};
