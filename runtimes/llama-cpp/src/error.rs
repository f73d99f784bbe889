//! The crate's error type: one enum per operation (loading, running a step), gathered into [`LlamaCppError`] as
//! llama-cpp-rs does. Every variant names what it is about: the file, the sequence, the token, the limit. Where
//! llama.cpp itself said why (it logs, then returns null or an error code), its messages are attached.

use std::path::PathBuf;

use nano_vllm_engine::SeqId;

/// What went wrong opening a GGUF file or creating llama.cpp's context for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("GGUF file {path} not found")]
    NotFound { path: PathBuf },
    #[error("cannot read GGUF file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// The file does not start with the GGUF magic (`GGUF`) and a supported version.
    #[error("{path} is not a GGUF file: {reason}")]
    NotGguf { path: PathBuf, reason: String },
    /// llama.cpp refused the file (returned null): truncated, unknown architecture, missing tensor or key.
    #[error("llama.cpp cannot load GGUF file {path}{}", llama_said(.llama_log))]
    Model { path: PathBuf, llama_log: Vec<String> },
    /// llama.cpp could not create a context (out of memory, impossible parameters).
    #[error("llama.cpp cannot create a context for {path} (n_ctx {n_ctx}, n_seq_max {n_seq_max}){}", llama_said(.llama_log))]
    Context { path: PathBuf, n_ctx: u32, n_seq_max: u32, llama_log: Vec<String> },
    /// The bundle's `config.json` asks for attention that a GGUF cannot tell llama.cpp (it would compute another
    /// model): named by its field.
    #[error("llama.cpp cannot be given this model: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// The GGUF does not hold the model the bundle's manifest describes.
    #[error("GGUF file {path} does not match its bundle's manifest: {problem}")]
    BundleMismatch { path: PathBuf, problem: String },
    #[error("invalid options: {0}")]
    Options(String),
    /// `llama_backend_init` failed: another library in this process initialised llama.cpp's backend first.
    #[error("cannot initialise the llama.cpp backend: {0}")]
    Backend(String),
}

/// What went wrong running an engine step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The step batch does not fit this model (see `StepBatch::validate`).
    #[error("step batch: {0}")]
    Invalid(#[from] nano_vllm_engine::BatchError),
    /// llama.cpp refused to take a token into its batch.
    #[error("llama.cpp batch: {0}")]
    Batch(String),
    #[error("the step has {tokens} tokens, more than llama.cpp's n_batch {n_batch}")]
    TooManyTokens { tokens: usize, n_batch: usize },
    /// More sequences at once than llama.cpp's `n_seq_max` sequence ids.
    #[error("sequence {seq_id}: all {n_seq_max} llama.cpp sequence ids (n_seq_max) are in use")]
    NoFreeSequence { seq_id: SeqId, n_seq_max: usize },
    /// A sequence would outgrow its share of the (non-unified) KV cache.
    #[error(
        "sequence {seq_id} needs {needed} KV cells, but each llama.cpp sequence holds {per_seq} (n_ctx / n_seq_max); \
         raise LlamaCppOptions::ctx_per_seq"
    )]
    ContextFull { seq_id: SeqId, needed: usize, per_seq: usize },
    /// The engine's idea of a sequence's computed tokens differs from what llama.cpp's cache holds.
    #[error(
        "sequence {seq_id}: the step says {expected} tokens are computed, but llama.cpp's cache holds {held} for it"
    )]
    KvMismatch { seq_id: SeqId, expected: usize, held: usize },
    /// A prefix-cache hit that no running sequence can serve.
    #[error(
        "sequence {seq_id}: {cached_tokens} prefix-cached tokens, but no sequence in llama.cpp's cache has the same \
         block at index {block_index} of its table and has computed them"
    )]
    NoPrefixHolder { seq_id: SeqId, cached_tokens: usize, block_index: usize },
    #[error("llama.cpp KV cache operation on sequence {seq_id} failed: {reason}")]
    Cache { seq_id: SeqId, reason: String },
    #[error("llama_decode failed ({seqs} sequences, {tokens} tokens): {reason}{}", llama_said(.llama_log))]
    Decode { seqs: usize, tokens: usize, reason: String, llama_log: Vec<String> },
}

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlamaCppError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("cannot tokenize: {0}")]
    Tokenize(String),
}

fn llama_said(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!("; llama.cpp said: {}", log.join(" | ")) }
}
