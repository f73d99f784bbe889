//! An OpenAI-compatible stub server for the client's own tests and overhead benchmark: it answers at once (no
//! model), so what is measured against it is the client. Real servers (vLLM, llama.cpp's server) are checked by
//! `ci/interop.sh` and the test command; this one exists to inject failures a real server will not make on demand.
//!
//! `/v1/completions` and `/v1/chat/completions` stream `max_tokens` chunks of text `" tok"`, then usage and
//! `[DONE]`. The served model name picks a behaviour: `ok`, `no-usage` (no usage chunk, as llama.cpp's server),
//! `http-500`, `drop` (the connection is cut after two chunks), `malformed` (a chunk that is not JSON),
//! `slow` (waits 5 s before answering), `every-third-fails` (HTTP 503 on every third request).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicUsize,
}

/// A running stub: its address, and the requests it has seen.
pub struct Stub {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    _runtime: tokio::runtime::Runtime,
}

impl Stub {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
    pub fn target(&self) -> String {
        format!("openai:{}", self.base_url())
    }
}

/// Starts a stub on 127.0.0.1 (a free port), serving the model names of the behaviours above.
pub fn start() -> Stub {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let counters = Arc::new(Counters::default());
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completion))
        .route("/v1/chat/completions", post(completion))
        .with_state(counters.clone());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Stub { addr, counters, _runtime: runtime }
}

const MODELS: [&str; 7] = ["ok", "no-usage", "http-500", "drop", "malformed", "slow", "every-third-fails"];

async fn models() -> impl IntoResponse {
    axum::Json(
        json!({ "object": "list", "data": MODELS.iter().map(|m| json!({"id": m, "object": "model"})).collect::<Vec<_>>() }),
    )
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

async fn completion(State(counters): State<Arc<Counters>>, axum::Json(body): axum::Json<Value>) -> Response {
    let n = counters.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let chat = body.get("messages").is_some();
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    match model.as_str() {
        "http-500" => return (StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response(),
        "every-third-fails" if n % 3 == 0 => return (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {}
    }
    let chunk = |text: &str, finish: Option<&str>| {
        if chat {
            json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})
        } else {
            json!({"choices": [{"index": 0, "text": text, "finish_reason": finish}]})
        }
    };
    let mut events: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    if chat {
        events.push(Ok(event(&json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))));
    }
    for i in 0..max_tokens {
        if model == "drop" && i == 2 {
            events.push(Err(std::io::Error::other("connection cut")));
            break;
        }
        if model == "malformed" && i == 1 {
            events.push(Ok(Bytes::from("data: {\"choices\": [oops\n\n")));
        }
        let finish = (i + 1 == max_tokens).then_some("length");
        events.push(Ok(event(&chunk(" tok", finish))));
    }
    if model != "no-usage" {
        events.push(Ok(event(&json!({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": max_tokens}}))));
    }
    events.push(Ok(Bytes::from("data: [DONE]\n\n")));
    // Each event a moment apart, so a cut connection (`drop`) comes after the response head and two chunks.
    let paced = model == "drop";
    let stream = futures_util::StreamExt::then(futures_util::stream::iter(events), move |e| async move {
        if paced {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        e
    });
    Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(stream)).unwrap()
}
