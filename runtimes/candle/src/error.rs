//! The crate's one error type. Loading errors name the file and, where it applies, the tensor; step errors name the
//! sequence, token or slot the engine handed over, so nothing a caller passes in ends in a panic.

use std::path::PathBuf;

/// What can go wrong loading a model or running a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CandleError {
    /// `config.json` is missing, malformed or describes an architecture this runtime does not implement.
    #[error(transparent)]
    Config(#[from] nano_vllm_bundle::BundleError),

    /// `config.json` parsed but cannot be built (e.g. a RoPE architecture without a theta).
    #[error("{}: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },

    /// A weights file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The model directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{}: no weights (neither model.safetensors nor model.safetensors.index.json)", dir.display())]
    NoWeights { dir: PathBuf },

    /// A safetensors file is damaged (truncated, bad header, offsets out of range).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    InvalidSafetensors { path: PathBuf, reason: String },

    /// `model.safetensors.index.json` is malformed.
    #[error("{}: invalid shard index: {reason}", path.display())]
    InvalidIndex { path: PathBuf, reason: String },

    /// A tensor the architecture needs is absent. `path` is the file (or shard index) that should hold it.
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },

    /// A tensor has a shape other than the config implies.
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    WrongShape { path: PathBuf, name: String, expected: Vec<usize>, actual: Vec<usize> },

    /// A tensor is not floating point (f32, f16, bf16 and f64 are read and converted to f32).
    #[error("{}: tensor `{name}` has dtype {dtype}, expected a float dtype (f32, f16, bf16, f64)", path.display())]
    WrongDtype { path: PathBuf, name: String, dtype: String },

    /// The thread pool could not be built.
    #[error("cannot build a thread pool of {threads} threads: {reason}")]
    ThreadPool { threads: usize, reason: String },

    /// `execute` before `prepare`, or a step whose KV geometry differs from the prepared one.
    #[error("execute called before prepare (the paged KV pool is not allocated)")]
    NotPrepared,

    /// The step's block size differs from the one the pool was prepared with.
    #[error("step block size {got} differs from the prepared block size {prepared}")]
    BlockSizeMismatch { prepared: usize, got: usize },

    /// The step batch does not fit this model or KV pool.
    #[error(transparent)]
    Batch(#[from] nano_vllm_engine::BatchError),

    /// The packed arrays of a step are inconsistent (a token no sequence claims).
    #[error("malformed step: {0}")]
    MalformedStep(String),

    /// A GGUF file could not be read, or holds what this runtime does not implement.
    #[error(transparent)]
    Gguf(#[from] nano_vllm_bundle::gguf::GgufError),

    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
