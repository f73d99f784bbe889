//! nano-vllm-candle: the [Candle](https://github.com/huggingface/candle) runtime of nano-vllm.
//!
//! Runs Llama, Mistral, Qwen2 and GPT-2 checkpoints (Hugging Face `config.json` + safetensors, memory-mapped,
//! sharded or not) on the CPU in f32 with candle-core's ops (matmul through the pure-Rust `gemm` crate, no BLAS),
//! driven by the shared engine: each step is packed prefill chunks and decode tokens of several sequences, batched
//! into one forward pass, with keys and values in a paged pool addressed by the engine's block tables
//! ([`KvCacheKind::EnginePaged`](nano_vllm_engine::KvCacheKind), prefix hits served by shared blocks).
//!
//! ```no_run
//! use nano_vllm_candle::{CandleOptions, CandleRuntime};
//! use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
//!
//! let bundle = nano_vllm_bundle::open_fixture("tiny-llama")?;
//! let runtime = CandleRuntime::from_bundle(&bundle, &CandleOptions { threads: Some(2) })?;
//! let config = Config::builder().max_model_len(256).num_kv_blocks(64).block_size(16).build()?;
//! let mut engine = LlmEngine::new(config, Box::new(runtime))?;
//! let out = engine.generate(vec![vec![5, 6, 7]], &SamplingParams::greedy(8))?;
//! println!("{:?}", out[0].output_token_ids());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Files: `runtime.rs` (the [`Runtime`](nano_vllm_engine::Runtime) impl and options), `weights.rs` (safetensors),
//! `llama.rs` and `gpt2.rs` (loaders), `model.rs` (the decoder), `layers.rs` (linear, norms, MLP), `rope.rs`,
//! `plan.rs` (a step's attention groups, masks and checks), `attention.rs` (batched attention), `kv.rs` (the paged
//! pool), `error.rs`.

mod attention;
mod error;
mod gpt2;
mod kv;
mod layers;
mod llama;
mod model;
mod plan;
mod rope;
mod runtime;
mod weights;

pub use error::CandleError;
pub use runtime::{CANDLE_VERSION, CandleOptions, CandleRuntime};
