//! nano-vllm-models: the models users have, and the runtimes that run them. What `bench`, `parity`, `generate` and
//! `serve` all need, and nothing of what any one of them does:
//!
//! - [`model`]: a model as a user names it (a GGUF file, a Hugging Face directory, a bundle), with its tokenizer (from
//!   `tokenizer.json` or the GGUF's own vocabulary) and chat template;
//! - [`registry`]: runtime names (`native:q8_0`, `llama-cpp:defaults`, ...) and building any compiled-in runtime on a
//!   model; the `#[cfg(feature)]` boundary of the runtimes;
//! - [`quantized`]: files llama.cpp's quantizer makes from a bundle, cached.

pub mod model;
pub mod quantized;
pub mod registry;
