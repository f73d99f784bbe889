//! nano-vllm-models: the models users have, and the runtimes that run them. What `bench`, `parity`, `generate` and
//! `serve` all need, and nothing of what any one of them does:
//!
//! - [`model`]: a model as a user names it (a GGUF file, a Hugging Face directory, a bundle), with its tokenizer (from
//!   `tokenizer.json` or the GGUF's own vocabulary) and chat template;
//! - [`mix`]: llama.cpp's quantized and half-precision files of a bundle, by option name;
//! - [`runtime_spec`]: runtime names (`native:q8_0`, `llama-cpp:defaults`, ...) parsed once into a typed value;
//! - [`registry`]: building any compiled-in runtime on a model from its spec; the `#[cfg(feature)]` boundary of the
//!   runtimes;
//! - [`parity_check`]: how parity judges each runtime setting;
//! - [`quantized`]: files llama.cpp's quantizer makes from a bundle, cached.

pub mod mix;
pub mod model;
pub mod parity_check;
pub mod quantized;
pub mod registry;
pub mod runtime_spec;
mod runtime_tokenizer;
