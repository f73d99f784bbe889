//! GGUF, llama.cpp's model file, read without llama.cpp: [`GgufFile`] parses and memory-maps it with every length
//! and offset checked, [`GgmlType`] knows the block formats and dequantizes the common ones, and [`GgufModel`] presents
//! a Llama, Qwen2 or GPT-2 GGUF as a Hugging Face checkpoint (config and HF-named, HF-layout f32 tensors) for the
//! runtimes that load HF checkpoints.

mod dequantize;
mod error;
mod file;
mod file_type;
mod ggml_type;
mod hf;

pub use dequantize::{IQ4NL_VALUES, dequantize, q3k_scales, scale_min_k4};
pub use error::GgufError;
pub use file::{GGUF_VERSIONS, GgufFile, GgufTensor, GgufValue, MappedBytes};
pub use file_type::file_type_name;
pub use ggml_type::GgmlType;
pub use hf::{GgufModel, StoredTensor};
