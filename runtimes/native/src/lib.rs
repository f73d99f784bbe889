//! nano-vllm-native: the project's own transformer kernels, driven by the engine with the KV cache paged in the
//! engine's blocks. Keys and values are written at the step's slot mapping and attention reads them through each
//! sequence's block table, so prefix-cache hits, preemption and recompute are served by the engine's bookkeeping.
//!
//! Architectures: Llama, Mistral (sliding window), Qwen2 (q/k/v bias; the window from `max_window_layers` or
//! `layer_types` on, layer by layer) and GPT-2 (with or without `scale_attn_weights`); MHA, GQA and MQA; RoPE with
//! the config's theta and Llama-3 scaling. Weights f32, or stored as f16/bf16 with f32 accumulation
//! ([`NativeOptions::weight_dtype`]), or a GGUF's block types as stored; f32 dense layers packed at load into panels
//! with one product for every batch size (AVX-512, AVX2 or portable, chosen at run time, the same bits from each),
//! half-precision ones on a row kernel up to 8 tokens and packed tiles above; attention and the rest here, on the
//! runtime's threads.

mod error;
mod forward;
pub mod kernels;
mod model;
mod runtime;
mod weights;

pub use error::NativeError;
pub use kernels::linear::WeightDtype;
pub use model::{Embedding, Model};
pub use runtime::{NativeOptions, NativeRuntime};
