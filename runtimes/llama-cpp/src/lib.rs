//! nano-vllm-llama-cpp: llama.cpp (through `llama-cpp-2`) as a runtime of the nano-vllm engine.
//!
//! [`LlamaCppRuntime`] runs a GGUF model on one llama.cpp context for the whole run. Keys and values live in
//! llama.cpp's own KV cache: each engine sequence holds a llama.cpp sequence id from a pool below `n_seq_max`
//! ([`seq_ids`]), and each engine step is one llama.cpp batch with every prefill chunk and decode token, logits read
//! by batch index for exactly the rows the step asks for. Finishing, preemption and abort remove the sequence's
//! cells; a prefix-cache hit is served by copying a running holder's cells ([`prefix`],
//! `PrefixReuse::CopyFromHolder`). The cache is non-unified: each sequence owns `n_ctx / n_seq_max` cells, and
//! `n_ctx` is sized as the model's context length times `n_seq_max`.
//!
//! [`LlamaCppOptions::parity`] (the default: F32 KV cache, flash attention off) is what conformance uses;
//! [`LlamaCppOptions::llama_defaults`] is llama.cpp's own (F16 KV cache, flash attention), about 1e-3 away from an
//! f32 reference. llama.cpp's backend is initialised once per process ([`backend`]); its log is captured and attached
//! to errors ([`log`]). The GGUF's tokenizer is available through [`LlamaCppRuntime::tokenize`].
//!
//! Build cost: llama.cpp is vendored by `llama-cpp-sys-2` and compiled with cmake (needs `cmake` and
//! `libclang-dev`, which `bash ci/setup.sh` installs); 6 to 11 minutes for a cold release build on 2 cores.
//!
//! ```no_run
//! use nano_vllm_llama_cpp::{LlamaCppOptions, LlamaCppRuntime, Weights};
//!
//! let bundle = nano_vllm_bundle::open_fixture("tiny-llama")?;
//! let f32_runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity())?;
//! let q8_runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity().with_weights(Weights::Q8_0))?;
//! let ids = f32_runtime.tokenize("Hello world", false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
mod error;
pub mod gguf;
pub mod log;
mod options;
pub mod prefix;
mod quantize;
mod runtime;
pub mod seq_ids;
mod session;
mod tokenizer;

pub use error::{LlamaCppError, LoadError, StepError};
pub use options::{KvType, LlamaCppOptions, MAX_SEQUENCES, Weights};
pub use quantize::{Quantization, quantize};
pub use runtime::{LLAMA_CPP_2_VERSION, LlamaCppRuntime};
pub use session::{llama_cpp_version, system_info};
pub use tokenizer::MAX_TEXT_BYTES;
