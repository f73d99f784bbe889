//! `CandleRuntime`: the engine's [`Runtime`] on Candle, CPU, f32, with the KV cache paged through the engine's
//! block tables (so prefix-cache hits are the engine's shared blocks and preemption frees real memory).
//!
//! Threads: candle's f32 matmul is the `gemm` crate, which splits each product into
//! `candle_core::utils::get_num_threads()` tasks and runs them on the current rayon pool; candle-nn's softmax,
//! RoPE and norms also use the current rayon pool. Every step runs inside a rayon pool of `CandleOptions::threads`
//! threads, so that is the number of threads doing that work (gemm's task count only caps it from above).
//! Element-wise ops on tensors of 64 Ki elements or more (prefill's activations, residual adds) run instead on
//! candle's own global "barrier pool" of `CANDLE_NUM_THREADS - 1` spinning workers (else `RAYON_NUM_THREADS`, else
//! the physical cores), which this crate cannot size.
//!
//! Two environment variables matter, and a library cannot set them safely once threads run, so `info()` reports
//! them and the bench sets them when absent:
//! - `RAYON_NUM_THREADS`: candle 0.11's `get_num_threads()` reads it on every matmul and, when it is unset, counts
//!   the physical cores by parsing `/proc/cpuinfo` (`num_cpus::get_physical`, not cached), again on every matmul:
//!   measured here, about 30 us per matmul on any model, which made a tiny-llama decode step 8x slower (0.46 ms
//!   instead of 0.058 ms).
//! - `CANDLE_NUM_THREADS=1`: runs the element-wise ops inline instead of on the barrier pool, whose spinning
//!   workers compete with the step's rayon threads for the cores. Measured on the 2-core machine: a 128-token
//!   prefill of the bench model took 89 to 95 ms with it and 130 to 134 ms without (3 runs each).

use std::path::{Path, PathBuf};

use candle_core::DType;
use nano_vllm_bundle::{Bundle, HfArchitecture, HfConfig};
use nano_vllm_engine::{
    Capabilities, KvCacheKind, KvCacheSpec, PrefixReuse, Runtime, RuntimeError, RuntimeInfo, StepBatch, StepOutput,
};

use crate::attention::StepTensors;
use crate::error::CandleError;
use crate::kv::PagedKv;
use crate::model::Transformer;
use crate::plan::{Limits, StepPlan};
use crate::weights::Weights;

/// The candle-core version this crate was built with.
pub const CANDLE_VERSION: &str = env!("NANO_VLLM_CANDLE_CORE_VERSION");

/// An environment variable's value, or `unset`.
fn env_setting(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if v.parse::<usize>().is_ok_and(|n| n > 0) => v,
        _ => "unset".into(),
    }
}

/// How to run the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandleOptions {
    /// Threads of the pool every step runs in; `None`: candle's own count (`candle_core::utils::get_num_threads`).
    pub threads: Option<usize>,
}

/// A Llama, Mistral, Qwen2 or GPT-2 model on Candle (CPU, f32). See the module docs.
#[derive(Debug)]
pub struct CandleRuntime {
    config: HfConfig,
    source: PathBuf,
    model: Transformer,
    kv: Option<PagedKv>,
    pool: rayon::ThreadPool,
    threads: usize,
}

impl CandleRuntime {
    /// Loads a Hugging Face model directory: `config.json` and `model.safetensors` (or the shards of
    /// `model.safetensors.index.json`), memory-mapped; f16 and bf16 weights are converted to f32. Or a GGUF file
    /// (Llama, Qwen2, Qwen3, Gemma 3, GPT-2), its tensors dequantized to f32.
    pub fn load(path: impl AsRef<Path>, options: &CandleOptions) -> Result<Self, CandleError> {
        let dir = path.as_ref();
        let (config_path, config, weights) = if dir.is_file() {
            let (weights, config) = Weights::open_gguf(dir)?;
            (dir.to_path_buf(), config, weights)
        } else {
            let config_path = dir.join("config.json");
            let config = HfConfig::from_file(&config_path)?;
            (config_path, config, Weights::open(dir)?)
        };
        let model = match config.architecture {
            HfArchitecture::Gpt2 => crate::gpt2::load(&config, &weights)?,
            _ => crate::llama::load(&config, &config_path, &weights)?,
        };
        let threads = options.threads.unwrap_or_else(candle_core::utils::get_num_threads);
        if threads == 0 {
            return Err(CandleError::ThreadPool { threads, reason: "at least one thread is needed".into() });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("candle-{i}"))
            .build()
            .map_err(|e| CandleError::ThreadPool { threads, reason: e.to_string() })?;
        Ok(Self { config, source: dir.into(), model, kv: None, pool, threads })
    }

    /// Loads a fixture bundle's Hugging Face files.
    pub fn from_bundle(bundle: &Bundle, options: &CandleOptions) -> Result<Self, CandleError> {
        Self::load(bundle.hf_dir(), options)
    }

    /// The model's parsed `config.json`.
    pub fn config(&self) -> &HfConfig {
        &self.config
    }

    /// The directory the model was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Threads each step runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// [`Runtime::execute`] with this crate's error type.
    pub fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, CandleError> {
        let vocab_size = self.config.vocab_size;
        let kv = self.kv.as_ref().ok_or(CandleError::NotPrepared)?;
        let limits = Limits {
            num_slots: kv.num_slots,
            block_size: kv.block_size,
            vocab_size,
            max_positions: self.config.max_position_embeddings,
            sliding_window: self.config.sliding_window,
            full_attention_layers: !self.config.full_attention_layers.is_empty(),
        };
        let plan = StepPlan::new(batch, &limits)?;
        if plan.num_tokens == 0 {
            return Ok(StepOutput { vocab_size, logits: Vec::new() });
        }
        let model = &self.model;
        let logits = self.pool.install(|| -> Result<Vec<f32>, CandleError> {
            let step = StepTensors::new(&plan, batch, model.heads)?;
            let logits = model.forward(&step, kv)?;
            Ok(logits.flatten_all()?.to_vec1::<f32>()?)
        })?;
        Ok(StepOutput { vocab_size, logits })
    }
}

impl Runtime for CandleRuntime {
    fn info(&self) -> RuntimeInfo {
        let kv = match &self.kv {
            Some(kv) => format!("paged f32, {} slots in blocks of {}", kv.num_slots, kv.block_size),
            None => "paged f32 (not prepared)".into(),
        };
        RuntimeInfo {
            name: "candle".into(),
            version: format!("candle-core {CANDLE_VERSION}, nano-vllm-candle {}", env!("CARGO_PKG_VERSION")),
            device: format!("cpu ({} thread{})", self.threads, if self.threads == 1 { "" } else { "s" }),
            dtype: format!("{:?}", DType::F32).to_lowercase(),
            settings: vec![
                ("architecture".into(), self.config.architecture.as_str().into()),
                ("kv_cache".into(), kv),
                ("threads".into(), self.threads.to_string()),
                ("gemm_tasks".into(), candle_core::utils::get_num_threads().to_string()),
                ("RAYON_NUM_THREADS".into(), env_setting("RAYON_NUM_THREADS")),
                ("CANDLE_NUM_THREADS".into(), env_setting("CANDLE_NUM_THREADS")),
                ("matmul".into(), "gemm (pure Rust), no BLAS".into()),
            ],
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::EnginePaged,
            prefix_reuse: PrefixReuse::SharedBlocks,
            full_position_logits: true,
            kv_bytes_per_token: Some(self.config.kv_bytes_per_token_f32()),
            vocab_size: Some(self.config.vocab_size),
            ..Capabilities::default()
        }
    }

    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        let h = self.model.heads;
        self.kv = None; // free the old pool before allocating a new one
        self.kv = Some(PagedKv::new(kv, self.model.blocks.len(), h.kv_heads, h.head_dim).map_err(CandleError::from)?);
        Ok(())
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(self.step(batch)?)
    }
}
