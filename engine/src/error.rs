//! The engine's error types: one enum per operation, gathered into [`EngineError`].

use crate::sequence::SeqId;

/// A boxed error from a runtime. Runtime crates return their own `thiserror` enums; `?` boxes them.
pub type RuntimeError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An impossible engine configuration; each variant names the fields involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "max_num_batched_tokens ({max_num_batched_tokens}) is below max_model_len ({max_model_len}) with chunked \
         prefill off: a long prompt could never be scheduled; raise the budget or enable chunked prefill"
    )]
    BudgetBelowModelLen { max_num_batched_tokens: usize, max_model_len: usize },
    #[error(
        "the KV cache (num_kv_blocks {num_blocks} x block_size {block_size} = {capacity} tokens) cannot hold one \
         sequence of max_model_len ({max_model_len}) tokens"
    )]
    KvCacheTooSmall { num_blocks: usize, block_size: usize, capacity: usize, max_model_len: usize },
    #[error("num_kv_blocks ({num_blocks}) does not fit block ids in 32 bits")]
    TooManyBlocks { num_blocks: usize },
    #[error("max_model_len ({max_model_len}) is too large for 32-bit positions")]
    ModelLenTooLarge { max_model_len: usize },
    #[error(
        "kv_cache_bytes needs the runtime's KV bytes per token, and this runtime does not report them; use num_kv_blocks"
    )]
    MemoryBudgetUnsupported,
}

/// Invalid sampling parameters; each variant names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0 (0 is greedy), got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("max_tokens must be at least 1")]
    MaxTokens,
    #[error("min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")]
    MinTokens { min_tokens: usize, max_tokens: usize },
    #[error("logprobs must be at most {max}, got {got}")]
    Logprobs { got: usize, max: usize },
}

/// Why a request was refused by [`crate::LlmEngine::add_request`]. It is refused at once, never left waiting forever.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AddRequestError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {total} exceeds max_model_len ({max_model_len})"
    )]
    TooLong { prompt_len: usize, max_tokens: usize, total: usize, max_model_len: usize },
    #[error(
        "prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) needs {needed} KV blocks of {block_size} tokens, \
         but the cache has only {num_blocks}"
    )]
    NotEnoughBlocks { prompt_len: usize, max_tokens: usize, needed: usize, block_size: usize, num_blocks: usize },
    #[error("token id {token} at prompt position {position} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { token: u32, position: usize, vocab_size: usize },
    #[error("stop token id {token} is outside the vocabulary (size {vocab_size})")]
    StopTokenOutOfRange { token: u32, vocab_size: usize },
    #[error("this runtime cannot return logits at every position, which the request asks for")]
    FullLogitsUnsupported,
    #[error(transparent)]
    Sampling(#[from] SamplingError),
}

/// An error from an engine step.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("runtime '{runtime}' failed: {source}")]
    Runtime {
        runtime: String,
        #[source]
        source: RuntimeError,
    },
    #[error(
        "runtime '{runtime}' returned {got} logit rows of vocabulary {vocab}, but the step asked for {expected} rows"
    )]
    BadOutput { runtime: String, expected: usize, got: usize, vocab: usize },
    #[error("runtime '{runtime}' returned logits with no finite value for request {seq_id}")]
    NonFiniteLogits { runtime: String, seq_id: SeqId },
    #[error(transparent)]
    AddRequest(#[from] AddRequestError),
    #[error("no request could be scheduled although {waiting} are waiting; the engine would hang (this is a bug)")]
    Stalled { waiting: usize },
    #[error("no request with id {0}")]
    UnknownRequest(SeqId),
}
