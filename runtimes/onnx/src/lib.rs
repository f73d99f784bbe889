//! nano-vllm-onnx: ONNX Runtime (through `ort`) as a runtime of the nano-vllm engine.
//!
//! [`OnnxRuntime`] runs a causal LM exported to ONNX with KV-cache inputs and outputs (`input_ids`,
//! `attention_mask`, `position_ids`, `past_key_values.N.key/value` -> `logits`, `present.N.key/value`; see
//! [`io`]) on one ONNX Runtime session for the whole run. Keys and values are runtime-owned ([`kv`]): kept per
//! sequence, fed back as the next step's past, dropped on `release`. All single-token sequences of a step decode in
//! one run, padded to the longest past; prompts and prefill chunks are grouped with bounded query padding ([`plan`]).
//! When the same sequences decode again, the previous run's `present` tensors are fed back as the past unchanged
//! (no copy on our side).
//! Prefix-cache hits are served by copying the cached tokens' keys and values from a running sequence holding the
//! same blocks ([`prefix`], `PrefixReuse::CopyFromHolder`).
//!
//! ONNX Runtime itself is not linked: [`library`] finds `libonnxruntime.so` (`ORT_DYLIB_PATH`, or the project venv
//! that `bash ci/setup.sh` fills with the `onnxruntime==1.31.1` wheel) and loads it at run time; when it is absent,
//! constructors return [`OnnxError::LibraryNotInstalled`] saying how to get it.
//!
//! ```no_run
//! use nano_vllm_onnx::{OnnxOptions, OnnxRuntime};
//!
//! let bundle = nano_vllm_bundle::open_fixture("tiny-llama")?;
//! let runtime = OnnxRuntime::from_bundle(&bundle, &OnnxOptions { intra_threads: 1, ..OnnxOptions::default() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod io;
pub mod kv;
pub mod library;
mod options;
pub mod plan;
pub mod prefix;
mod runtime;
mod session;

pub use error::{LIBRARY_FIX, OnnxError};
pub use library::{DYLIB_ENV, ORT_CRATE_VERSION, OrtLibrary, SKIP_ENV};
pub use options::OnnxOptions;
pub use plan::StepGrouping;
pub use runtime::OnnxRuntime;
