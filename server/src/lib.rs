//! `nano-vllm serve`: the shared engine, with any compiled-in runtime, behind the OpenAI-compatible API the ecosystem
//! speaks (vLLM's dialect: `ignore_eos`, `min_tokens`, `top_k`, `stop_token_ids`, `return_tokens_as_token_ids`), so
//! that third-party clients (`vllm bench serve`, the `openai` SDK, ...) and our own `bench --target` measure it.
//!
//! - [`engine_loop`]: the engine on its own thread, fed through a bounded channel, each request's events on a
//!   channel of its own; a request nobody listens to is aborted and its blocks freed;
//! - [`api`]: request bodies, checked before they reach the engine; [`response`]: response bodies and stream
//!   chunks; [`detok`]: text as tokens arrive, stop strings; [`error`]: OpenAI-style error bodies;
//! - [`handlers`]: the routes; [`metrics`]: `/metrics` in Prometheus text with vLLM's names; [`tokenize`]: vLLM's
//!   `/tokenize` and `/detokenize`; [`pool`]: the threads that tokenize and render chat templates, off the async
//!   workers.

pub mod api;
pub mod detok;
pub mod engine_loop;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod pool;
pub mod response;
pub mod stream;
pub mod tokenize;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokenizers::Tokenizer;

pub use engine_loop::{EngineHandle, SubmitError};
pub use error::ApiError;
pub use handlers::router;
pub use metrics::ServerMetrics;
pub use pool::TokenizerPool;

use nano_vllm_models::model::chat::ChatTemplate;

/// The model as the API sees it.
#[derive(Debug)]
pub struct ServedModel {
    /// The name clients send in `model`.
    pub name: String,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Tokens that end a chat turn (the template's end-of-turn token), stop tokens of chat requests.
    pub chat_stop_ids: Vec<u32>,
    pub vocab_size: usize,
    /// The engine's `max_model_len`: prompt + output of one request.
    pub max_model_len: usize,
    /// The KV cache, to refuse at once a request that could never fit it.
    pub block_size: usize,
    pub num_kv_blocks: usize,
    /// The runtime serving it, for `/v1/models`.
    pub runtime: String,
}

impl ServedModel {
    /// Tokenizes a prompt.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ApiError::bad_param("prompt", format!("the prompt cannot be tokenized: {e}")))
    }
}

/// How the server runs, beyond the model and the engine.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Requests to `/v1/*` must carry `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Threads that tokenize prompts and render chat templates ([`pool`]).
    pub tokenizer_workers: usize,
    /// A log line (stderr) when each request arrives and when it ends, with its id (vLLM's `--enable-log-requests`).
    pub log_requests: bool,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self { api_key: None, tokenizer_workers: 1, log_requests: false }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub model: ServedModel,
    pub engine: EngineHandle,
    pub metrics: ServerMetrics,
    /// Requests to `/v1/*` must carry `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Set on SIGINT/SIGTERM: new requests are refused (503) while the ones in flight finish.
    pub draining: Arc<AtomicBool>,
    pub pool: TokenizerPool,
    pub log_requests: bool,
}

impl AppState {
    /// The state, with the tokenizer pool's threads started.
    pub fn new(
        model: ServedModel,
        engine: EngineHandle,
        metrics: ServerMetrics,
        settings: ServeSettings,
    ) -> std::io::Result<Self> {
        Ok(Self {
            model,
            engine,
            metrics,
            api_key: settings.api_key,
            draining: Arc::default(),
            pool: TokenizerPool::new(settings.tokenizer_workers)?,
            log_requests: settings.log_requests,
        })
    }
}

/// A fresh request id: 16 hex digits, as vLLM's `random_uuid` (64 bits of a uuid4): the process's random hash keys
/// over a counter and the clock, so ids differ between requests and between runs.
fn random_id() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one((n, nanos)))
}

/// Seconds since the epoch, for `created`.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serves `state` on `listener` until `shutdown` resolves; then new requests are refused (503) and the server waits
/// up to `grace` for the requests in flight to finish before it drops the rest (their engine requests are aborted
/// when their receivers go).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let draining = state.draining.clone();
    let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        draining.store(true, Ordering::Release);
        let _ = fired.send(());
    });
    let deadline = async move {
        if on_fire.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server.into_future() => r,
        () = deadline => Ok(()),
    }
}
