//! HTTP targets: OpenAI-compatible servers (vLLM, llama.cpp's server, TGI, SGLang, ours) and fleets of them,
//! measured by a client on this machine with the metrics of the in-process runtimes, so a server is a row of the
//! same comparison. Metric definitions are vLLM `bench serve`'s (`../shared/BENCH-CONVENTIONS.md`): TTFT from the
//! request's scheduled send time to its first content chunk, ITL between content chunks, TPOT over the output
//! tokens, output tokens from the server's `usage` or else the model's tokenizer (said per request). Failures
//! (timeouts, HTTP errors, dropped streams, malformed chunks) are counted per kind and never end a run.
//!
//! - [`target`]: `openai:URL` and fleets; [`request`]: request bodies; [`chunk`]: streamed events;
//!   [`client`]: one timed exchange; [`load`]: the open-loop load generator; [`result`]: rows of the report;
//!   [`parity`]: a server's greedy tokens and logprobs against a bundle's reference.

pub mod chunk;
pub mod client;
pub mod load;
pub mod parity;
pub mod request;
pub mod result;
pub mod target;

pub use load::{LoadOptions, LoadResult};
pub use request::{PreparedRequest, PromptFormat, prepare};
pub use target::{Balance, Endpoint, Server, Target, servers};

/// A target that cannot be measured at all (as opposed to requests that fail, which are data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("--target '{spec}': {why}")]
    BadTarget { spec: String, why: String },
    #[error("--fleet: {0}")]
    BadFleet(String),
    #[error("--target needs --served-model (the model name the server serves)")]
    NoServedModel,
    #[error("{targets} --target but {names} names in --served-model (give one name, or one per target)")]
    ServedModelCount { targets: usize, names: usize },
    #[error("--prompt-format ids needs --endpoint completions (a chat message is text)")]
    IdsNeedCompletions,
    #[error("request {request}: cannot decode its prompt to text: {message}")]
    Decode { request: String, message: String },
    #[error("{url}: {message}")]
    Server { url: String, message: String },
    #[error("HTTP client: {0}")]
    Client(String),
}
