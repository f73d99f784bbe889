//! The routes: `POST /v1/completions`, `POST /v1/chat/completions` (whole or streamed as server-sent events),
//! `GET /v1/models`, `GET /health`, `GET /metrics`; `/v1/*` behind the API key when one is set. A request is checked
//! ([`super::api`]) before it reaches the engine; its response holds the request's place in the server (a
//! [`super::engine_loop::Permit`]) and its event receiver, so a client that goes away frees both.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{self, Api, GenerateRequest};
use super::engine_loop::{Event, Permit, SubmitError};
use super::error::ApiError;
use super::response::{Delta, Generation, LogprobEntry};
use super::{AppState, unix_now};

/// The server's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(v1)
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

async fn health(State(s): State<Arc<AppState>>) -> StatusCode {
    if s.engine.is_alive() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
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

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Api::Completions, body).await
}

async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Api::Chat, body).await
}

/// A request that reached the engine.
struct Started {
    request: GenerateRequest,
    events: UnboundedReceiver<Event>,
    permit: Permit,
    generation: Generation,
}

async fn generate(s: Arc<AppState>, api: Api, body: Bytes) -> Response {
    let arrival = Instant::now();
    let started = match start(&s, api, &body, arrival) {
        Ok(started) => started,
        Err(e) => {
            s.metrics.reject(match e.status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::TOO_MANY_REQUESTS => "queue_full",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                _ => "invalid",
            });
            return e.into_response();
        }
    };
    if started.request.stream {
        Sse::new(sse_stream(s, started)).into_response()
    } else {
        whole(&s, started).await.unwrap_or_else(IntoResponse::into_response)
    }
}

fn start(s: &AppState, api: Api, body: &[u8], arrival: Instant) -> Result<Started, ApiError> {
    if s.draining.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let request = api::parse(api, body, &s.model)?;
    let (events, permit) =
        s.engine.submit(request.prompt.clone(), request.params.clone(), arrival).map_err(|e| match e {
            SubmitError::QueueFull { max_pending } => ApiError::too_many(format!(
                "the server holds {max_pending} requests already (--max-pending); retry later"
            )),
            SubmitError::Unavailable => ApiError::unavailable("the engine has stopped"),
        })?;
    let prefix = if api == Api::Chat { "chatcmpl" } else { "cmpl" };
    let generation = Generation::new(s.next_id(prefix), unix_now(), &request);
    Ok(Started { request, events, permit, generation })
}

/// Applies one engine event: the text (and logprobs) it adds, or the error the engine reported. The request is over
/// once `g.finish` is set (finished by the engine, or ended by a stop string).
fn apply(s: &AppState, g: &mut Generation, event: Option<Event>) -> Result<Delta, ApiError> {
    match event {
        Some(Event::Token { token, logprobs }) => g.token(&s.model, token, logprobs),
        Some(Event::Finished { reason, prompt_tokens, cached_tokens }) => {
            Ok(g.finished(reason, prompt_tokens, cached_tokens))
        }
        Some(Event::Refused(e)) => Err(ApiError::bad_request(e.to_string())),
        Some(Event::Failed(m)) => Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: m, param: None }),
        None => Err(ApiError::unavailable("the engine stopped before the request finished")),
    }
}

async fn whole(s: &AppState, mut st: Started) -> Result<Response, ApiError> {
    let (mut text, mut entries): (String, Vec<LogprobEntry>) = (String::new(), Vec::new());
    while st.generation.finish.is_none() {
        let d = apply(s, &mut st.generation, st.events.recv().await)?;
        text.push_str(&d.text);
        entries.extend(d.logprobs);
    }
    // A stop string ended it: the engine aborts the request when the receiver goes.
    drop(st.events);
    drop(st.permit);
    Ok(axum::Json(st.generation.response(&s.model.name, &text, &entries)).into_response())
}

/// Where a stream is.
enum Phase {
    Start,
    Tokens,
    Usage,
    Done,
    End,
}

struct StreamState {
    s: Arc<AppState>,
    st: Started,
    phase: Phase,
    /// Text bytes sent so far (`text_offset` of completions logprobs).
    offset: usize,
}

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// The events of a streamed response: (chat: the role), a chunk per piece of text, the final chunk with the finish
/// reason, the usage chunk when asked, `[DONE]`. An engine failure mid-stream is an `{"error": ...}` event.
fn sse_stream(s: Arc<AppState>, st: Started) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = StreamState { s, st, phase: Phase::Start, offset: 0 };
    stream::unfold(state, |mut x| async move {
        let name = x.s.model.name.clone();
        let usage = x.st.request.include_usage;
        loop {
            match x.phase {
                Phase::Start => {
                    x.phase = Phase::Tokens;
                    if x.st.request.api == Api::Chat {
                        return Some((Ok(data(&x.st.generation.role_chunk(&name, usage))), x));
                    }
                }
                Phase::Tokens => {
                    let event = x.st.events.recv().await;
                    match apply(&x.s, &mut x.st.generation, event) {
                        Ok(delta) => {
                            let last = x.st.generation.finish.is_some();
                            if last {
                                // Ended (by the engine, or by a stop string: then the engine aborts it now).
                                x.st.events.close();
                                x.phase = Phase::Usage;
                            } else if delta.text.is_empty() && delta.logprobs.is_empty() {
                                continue;
                            }
                            let chunk = x.st.generation.chunk(&name, &delta, x.offset, last, usage);
                            x.offset += delta.text.len();
                            return Some((Ok(data(&chunk)), x));
                        }
                        Err(e) => {
                            x.phase = Phase::Done;
                            return Some((Ok(data(&e.body())), x));
                        }
                    }
                }
                Phase::Usage => {
                    x.phase = Phase::Done;
                    if usage {
                        return Some((Ok(data(&x.st.generation.usage_chunk(&name))), x));
                    }
                }
                Phase::Done => {
                    x.phase = Phase::End;
                    return Some((Ok(SseEvent::default().data("[DONE]")), x));
                }
                Phase::End => return None,
            }
        }
    })
}
