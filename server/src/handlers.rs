//! The routes: `POST /v1/completions`, `POST /v1/chat/completions` (whole or streamed as server-sent events),
//! `GET /v1/models`, `POST /tokenize`, `POST /detokenize`, `GET /health`, `GET /metrics`; `/v1/*` behind the API key
//! when one is set (as vLLM guards only `/v1`). A request is checked
//! ([`super::api`], on the tokenizer pool: [`super::pool`]) before it reaches the engine as one engine request per
//! choice; its response holds each choice's place in the server (a [`super::engine_loop::Permit`]) and its event
//! receiver, so a client that goes away frees both. Every response carries its request id (`X-Request-Id`: the
//! client's header, else the body's `request_id`, else a random one), which is also the `id` of the body after its
//! `cmpl-` or `chatcmpl-` prefix, and, with `--enable-log-requests`, of the log lines of the request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nano_vllm_engine::FinishReason;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{self, Api, GenerateRequest};
use super::engine_loop::{Event, Permit, SubmitError};
use super::error::ApiError;
use super::metrics::ServerMetrics;
use super::response::{self, Delta, Generation, Header};
use super::{AppState, random_id, unix_now};

/// The server's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(v1)
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn authorize(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            s.metrics.reject("unauthorized");
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> Response {
    ApiError::not_found(format!("no route {} {}", request.method(), request.uri().path()), None).into_response()
}

/// 200 while the server takes requests; 503 once the engine is gone (a runtime error or a panic) or while it drains
/// on shutdown, so a load balancer stops sending it work.
async fn health(State(s): State<Arc<AppState>>) -> StatusCode {
    if s.engine.is_alive() && !s.draining.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let m = &s.model;
    axum::Json(json!({ "object": "list", "data": [{
        "id": m.name, "object": "model", "created": unix_now(), "owned_by": "nano-vllm", "root": m.name,
        "max_model_len": m.max_model_len, "runtime": m.runtime,
    }]}))
    .into_response()
}

/// vLLM's `/tokenize` ([`super::tokenize`]), on the tokenizer pool.
async fn tokenize(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let state = s.clone();
    match s.pool.run(move || super::tokenize::tokenize(&body, &state.model)).await.and_then(|r| r) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// vLLM's `/detokenize` ([`super::tokenize`]), on the tokenizer pool.
async fn detokenize(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let state = s.clone();
    match s.pool.run(move || super::tokenize::detokenize(&body, &state.model)).await.and_then(|r| r) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, Api::Completions, &headers, body).await
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, Api::Chat, &headers, body).await
}

/// One engine request of a response: a prompt's choice. When it is dropped (its response done, or its client gone)
/// it counts how it ended, exactly once: `request_success{finished_reason}` "stop" or "length" as the response said
/// (a stop string included, which only the handler sees) with its end-to-end latency, or "abort" when it ended before
/// its finish (a client that left, an engine that failed or shut down). A choice the engine refused is not counted.
pub(crate) struct Choice {
    pub(crate) events: UnboundedReceiver<Event>,
    #[allow(dead_code)]
    permit: Permit,
    pub(crate) generation: Generation,
    metrics: ServerMetrics,
    arrival: Instant,
    /// The engine refused it (never ran), or it was never the client's (its request failed to start).
    refused: bool,
    /// Text bytes streamed so far (`text_offset` of completions logprobs).
    pub(crate) offset: usize,
}

impl Drop for Choice {
    fn drop(&mut self) {
        if self.refused {
            return;
        }
        // A client that left after the engine finished, before its handler read the finish: still a finished request.
        let finish = self.generation.finish.or_else(|| {
            std::iter::from_fn(|| self.events.try_recv().ok()).find_map(|e| match e {
                Event::Finished { reason, .. } => Some(if reason == FinishReason::Length { "length" } else { "stop" }),
                _ => None,
            })
        });
        match finish {
            Some(label) => {
                self.metrics.request_success.with_label_values(&[label]).inc();
                self.metrics.e2e.observe(self.arrival.elapsed().as_secs_f64());
            }
            None => self.metrics.request_success.with_label_values(&["abort"]).inc(),
        }
    }
}

/// A request that reached the engine: its choices in the response's order.
pub(crate) struct Started {
    pub(crate) request: GenerateRequest,
    pub(crate) header: Header,
    pub(crate) choices: Vec<Choice>,
    arrival: Instant,
    /// `--enable-log-requests`: a line when it ends.
    log: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.log {
            let reasons: Vec<&str> = self.choices.iter().map(|c| c.generation.finish.unwrap_or("abort")).collect();
            let tokens: usize = self.choices.iter().map(|c| c.generation.completion_tokens).sum();
            eprintln!(
                "request {}: ended after {:.3} s, finish {}, {tokens} output tokens",
                self.header.id.escape_debug(),
                self.arrival.elapsed().as_secs_f64(),
                reasons.join(",")
            );
        }
    }
}

/// The request id a client gave (`X-Request-Id`, as vLLM reads it), when it is one a header can carry back.
fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned)
}

async fn generate(s: Arc<AppState>, api: Api, headers: &HeaderMap, body: Bytes) -> Response {
    let arrival = Instant::now();
    let mut response = match start(&s, api, headers, body, arrival).await {
        Ok(started) => {
            let id = started.header.id.clone();
            let mut response = if started.request.stream {
                Sse::new(super::stream::sse_stream(s, started)).into_response()
            } else {
                whole(&s, started).await.unwrap_or_else(IntoResponse::into_response)
            };
            let base = id.split_once('-').map_or(id.as_str(), |(_, b)| b);
            if let Ok(v) = HeaderValue::from_str(base) {
                response.headers_mut().insert("x-request-id", v);
            }
            return response;
        }
        Err(e) => {
            s.metrics.reject(match e.status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::TOO_MANY_REQUESTS => "queue_full",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                _ => "invalid",
            });
            e.into_response()
        }
    };
    if let Some(v) = header_request_id(headers).and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn start(
    s: &Arc<AppState>,
    api: Api,
    headers: &HeaderMap,
    body: Bytes,
    arrival: Instant,
) -> Result<Started, ApiError> {
    if s.draining.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let state = s.clone();
    let request = s.pool.run(move || api::parse(api, &body, &state.model)).await??;
    let max_pending = s.engine.max_pending();
    let total = request.prompts.len().checked_mul(request.n).filter(|&t| t <= max_pending).ok_or_else(|| {
        let field = if request.n > 1 { "n" } else { "prompt" };
        ApiError::bad_param(
            field,
            format!(
                "this request asks for {} prompt(s) x n {} sequences, more than the {max_pending} requests this server \
                 holds at once (--max-pending)",
                request.prompts.len(),
                request.n
            ),
        )
    })?;
    // The id: the client's header, else the body's request_id, else a random one (vLLM's order).
    let base = header_request_id(headers).or_else(|| request.request_id.clone()).unwrap_or_else(random_id);
    let prefix = if api == Api::Chat { "chatcmpl" } else { "cmpl" };
    let header = Header { id: format!("{prefix}-{base}"), created: unix_now(), api, model: s.model.name.clone() };
    let log = s.log_requests;
    if log {
        let lens: Vec<String> = request.prompts.iter().map(|p| p.len().to_string()).collect();
        eprintln!(
            "request {}: received, prompt tokens [{}], n {}, max_tokens {}, temperature {}, stream {}",
            header.id.escape_debug(),
            lens.join(","),
            request.n,
            request.params.max_tokens,
            request.params.temperature,
            request.stream
        );
    }
    let mut choices: Vec<Choice> = Vec::with_capacity(total);
    for (index, (prompt, params)) in request.choices().enumerate() {
        match s.engine.submit(prompt.to_vec(), params, arrival) {
            Ok((events, permit)) => choices.push(Choice {
                events,
                permit,
                generation: Generation::new(index, prompt.len(), &request),
                metrics: s.metrics.clone(),
                arrival,
                refused: false,
                offset: 0,
            }),
            Err(e) => {
                // The choices submitted already are dropped with it (their engine requests aborted), uncounted.
                for c in &mut choices {
                    c.refused = true;
                }
                return Err(match e {
                    SubmitError::QueueFull { max_pending } => ApiError::too_many(format!(
                        "the server holds {max_pending} requests already (--max-pending); retry later"
                    )),
                    SubmitError::Unavailable => ApiError::unavailable("the engine has stopped"),
                });
            }
        }
    }
    Ok(Started { request, header, choices, arrival, log })
}

/// Applies one engine event to a choice: the text (and logprobs) it adds, or the error the engine reported. The
/// choice is over once `generation.finish` is set (finished by the engine, or ended by a stop string).
pub(crate) fn apply(s: &AppState, c: &mut Choice, event: Option<Event>) -> Result<Delta, ApiError> {
    let g = &mut c.generation;
    match event {
        Some(Event::Token { token, logprobs }) => g.token(&s.model, token, logprobs),
        Some(Event::Finished { reason, prompt_tokens, cached_tokens }) => {
            Ok(g.finished(reason, prompt_tokens, cached_tokens))
        }
        Some(Event::Refused(e)) => {
            c.refused = true;
            Err(ApiError::bad_request(e.to_string()))
        }
        Some(Event::Failed(m)) => Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: m, param: None }),
        None => Err(ApiError::unavailable("the engine stopped before the request finished")),
    }
}

async fn whole(s: &AppState, mut st: Started) -> Result<Response, ApiError> {
    let mut outputs = Vec::with_capacity(st.choices.len());
    for c in &mut st.choices {
        let (mut text, mut entries) = (String::new(), Vec::new());
        while c.generation.finish.is_none() {
            let event = c.events.recv().await;
            let d = apply(s, c, event)?;
            text.push_str(&d.text);
            entries.extend(d.logprobs);
        }
        // Done: a choice a stop string ended is aborted by the engine now, while the others run on.
        c.events.close();
        outputs.push(c.generation.choice(&text, &entries));
    }
    let usage = response::usage(st.choices.iter().map(|c| &c.generation), st.request.n);
    let response = axum::Json(st.header.response(outputs, usage)).into_response();
    // Counted.
    drop(st);
    Ok(response)
}

#[cfg(test)]
mod tests {
    //! The routes in process, on the model-free mock: what a client sees when the engine panics or the server drains,
    //! and how a request that a stop string ended is counted. No sockets, no timing: each waits on a condition.

    use std::sync::atomic::AtomicBool;

    use nano_vllm_engine::{Config, LlmEngine, MockRuntime};
    use serde_json::Value;
    use tokenizers::Tokenizer;

    use super::*;
    use crate::{EngineHandle, ServedModel, ServerMetrics, engine_loop};

    fn state(runtime: MockRuntime) -> Arc<AppState> {
        let tokenizer =
            Tokenizer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama/tokenizer.json"))
                .unwrap();
        let vocab_size = tokenizer.get_vocab_size(true);
        let config = Config::builder().max_model_len(128).num_kv_blocks(64).build().unwrap();
        let engine = LlmEngine::new(config.clone(), Box::new(runtime)).unwrap();
        let metrics = ServerMetrics::new("m").unwrap();
        let (handle, _thread): (EngineHandle, _) =
            engine_loop::spawn(engine, metrics.clone(), 8, Arc::new(AtomicBool::new(false))).unwrap();
        let model = ServedModel {
            name: "m".into(),
            tokenizer,
            chat_template: None,
            chat_stop_ids: Vec::new(),
            vocab_size,
            max_model_len: 128,
            block_size: config.block_size(),
            num_kv_blocks: 64,
            runtime: "mock".into(),
        };
        Arc::new(AppState::new(model, handle, metrics, crate::ServeSettings::default()).unwrap())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    async fn complete(s: &Arc<AppState>, body: Value) -> (StatusCode, Value) {
        let r = completions(State(s.clone()), HeaderMap::new(), Bytes::from(body.to_string())).await;
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[test]
    fn health_is_503_while_draining() {
        let s = state(MockRuntime::new(64));
        block_on(async {
            assert_eq!(health(State(s.clone())).await, StatusCode::OK);
            s.draining.store(true, Ordering::Release);
            assert_eq!(health(State(s.clone())).await, StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    #[test]
    fn a_panic_on_the_engine_thread_turns_health_to_503() {
        let s = state(MockRuntime::new(64).panic_at_step(1));
        block_on(async {
            assert_eq!(health(State(s.clone())).await, StatusCode::OK);
            let (status, r) = complete(&s, json!({ "prompt": [5, 6, 7], "max_tokens": 8, "ignore_eos": true })).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{r}");
            // The engine is marked dead before the request's channel closes: no wait needed.
            assert_eq!(health(State(s.clone())).await, StatusCode::SERVICE_UNAVAILABLE);
            let (status, _) = complete(&s, json!({ "prompt": [5], "max_tokens": 2 })).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    #[test]
    fn a_request_ended_by_a_stop_string_counts_as_stopped_with_its_latency() {
        let s = state(MockRuntime::new(400));
        block_on(async {
            let body = json!({ "prompt": [5, 6, 7], "max_tokens": 40, "ignore_eos": true, "temperature": 0 });
            let (status, whole) = complete(&s, body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{whole}");
            let text = whole["choices"][0]["text"].as_str().unwrap().to_owned();
            // A stop string from the middle of the greedy text.
            let chars: Vec<char> = text.chars().collect();
            assert!(chars.len() > 8, "{text:?}");
            let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
            let mut stopped = body.clone();
            stopped["stop"] = json!([stop]);
            let (status, r) = complete(&s, stopped).await;
            assert_eq!(status, StatusCode::OK, "{r}");
            assert_eq!(r["choices"][0]["finish_reason"], "stop");
            assert_eq!(r["choices"][0]["text"].as_str().unwrap(), &text[..text.find(&stop).unwrap()]);
            // Counted by the handler before it answers, whether or not the engine had already run to max_tokens (the
            // mock is fast enough that it has): the client was told "stop", and so is /metrics.
            let count = |label: &str| s.metrics.request_success.with_label_values(&[label]).get();
            assert_eq!((count("stop"), count("length"), count("abort")), (1, 1, 0));
            assert_eq!(s.metrics.e2e.get_sample_count(), 2, "both requests in the e2e histogram");
        });
    }
}
