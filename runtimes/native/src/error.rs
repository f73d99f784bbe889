//! The native runtime's error type; each variant names the file, tensor or value involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// config.json could not be read or describes something unsupported.
    #[error(transparent)]
    Config(#[from] nano_vllm_bundle::BundleError),
    /// A GGUF file could not be read, or holds what this runtime does not implement.
    #[error(transparent)]
    Gguf(#[from] nano_vllm_bundle::gguf::GgufError),
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    #[error("{}: tensor `{name}` is missing", dir.display())]
    MissingTensor { dir: PathBuf, name: String },
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    Shape { path: PathBuf, name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("{}: tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16", path.display())]
    Dtype { path: PathBuf, name: String, dtype: String },
    /// A GGUF matrix this runtime cannot compute on as stored (its type, or rows that are not whole blocks).
    #[error(transparent)]
    Quant(#[from] crate::kernels::quant::QuantError),
    #[error("execute() before prepare(): the KV cache has not been sized")]
    NotPrepared,
    /// A step's block size is not the one the KV cache was prepared with (the keys are stored by block).
    #[error("the step's blocks hold {step} slots, the KV cache was prepared with blocks of {cache}")]
    BlockSize { step: usize, cache: usize },
    /// The step batch does not fit this model or KV pool.
    #[error(transparent)]
    Batch(#[from] nano_vllm_engine::BatchError),
    #[error("cannot build a thread pool of {threads} threads: {reason}")]
    ThreadPool { threads: usize, reason: String },
}
