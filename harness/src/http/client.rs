//! One streamed request to a server, timed as vLLM's `bench serve` times it: the first content chunk (one that
//! carries text; role-only and usage-only chunks are not tokens) is the first token, every later content chunk one
//! inter-token gap. Whatever goes wrong (no connection, an HTTP error, a timeout, a stream that ends early or
//! carries a chunk that is not a completion chunk, an error event) ends this request only, with what arrived so far
//! and the kind of failure.

use std::time::{Duration, Instant};

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use serde_json::Value;

use super::Endpoint;
use super::chunk::{StreamEvent, Usage, clip, parse_event};

/// Why a request failed; [`Failure::kind`] is the key failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the stream ended before the response was complete{}", .0.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Dropped(Option<String>),
    #[error("malformed chunk: {0}")]
    Malformed(String),
    #[error("the server reported an error in the stream: {0}")]
    Server(String),
    #[error("the response carried no output text")]
    NoOutput,
    #[error("request failed: {0}")]
    Other(String),
    /// This process could not open a connection (its open-files limit): the client's failure, not the server's.
    #[error("the client could not open a connection: {0}")]
    Client(String),
}

impl Failure {
    /// `connect`, `timeout`, `http_503`, `dropped_stream`, `malformed_chunk`, `server_error`, `no_output`, `other`.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(_) => "connect".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Status { status, .. } => format!("http_{status}"),
            Self::Dropped(_) => "dropped_stream".into(),
            Self::Malformed(_) => "malformed_chunk".into(),
            Self::Server(_) => "server_error".into(),
            Self::NoOutput => "no_output".into(),
            Self::Other(_) => "other".into(),
            Self::Client(_) => "client_error".into(),
        }
    }
}

/// What came back for one request.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// When the request was handed to the HTTP stack.
    pub sent: Option<Instant>,
    /// Arrival of each content chunk.
    pub chunk_times: Vec<Instant>,
    pub text: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    pub failure: Option<Failure>,
}

/// Sends `body` to `url` and reads its SSE stream to the end, within `timeout` in all.
pub async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    endpoint: Endpoint,
    timeout: Duration,
) -> Exchange {
    let mut ex = Exchange::default();
    let outcome = tokio::time::timeout(timeout, read_stream(client, url, body, endpoint, &mut ex)).await;
    ex.failure = match outcome {
        Err(_) => Some(Failure::Timeout(timeout)),
        Ok(Err(f)) => Some(f),
        Ok(Ok(())) if ex.chunk_times.is_empty() => Some(Failure::NoOutput),
        Ok(Ok(())) => None,
    };
    ex
}

async fn read_stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    endpoint: Endpoint,
    ex: &mut Exchange,
) -> Result<(), Failure> {
    ex.sent = Some(Instant::now());
    let response = client.post(url).json(body).send().await.map_err(request_failure)?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Failure::Status { status: status.as_u16(), body: clip(text.trim()) });
    }
    let mut events = response.bytes_stream().eventsource();
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            EventStreamError::Transport(e) => Failure::Dropped(Some(e.to_string())),
            EventStreamError::Utf8(e) => Failure::Malformed(format!("not UTF-8: {e}")),
            EventStreamError::Parser(e) => Failure::Malformed(format!("not server-sent events: {e}")),
        })?;
        let now = Instant::now();
        match parse_event(&event.data, endpoint).map_err(Failure::Malformed)? {
            StreamEvent::Done => {
                done = true;
                break;
            }
            StreamEvent::ServerError(message) => return Err(Failure::Server(message)),
            StreamEvent::Chunk(chunk) => {
                if !chunk.text.is_empty() {
                    ex.chunk_times.push(now);
                    ex.text.push_str(&chunk.text);
                }
                if chunk.finish_reason.is_some() {
                    ex.finish_reason = chunk.finish_reason;
                }
                if chunk.usage.is_some() {
                    ex.usage = chunk.usage;
                }
            }
        }
    }
    // A server that closes the stream after the finish reason without `[DONE]` has still answered in full.
    if !done && ex.finish_reason.is_none() {
        return Err(Failure::Dropped(None));
    }
    Ok(())
}

fn request_failure(e: reqwest::Error) -> Failure {
    let chain = source_chain(&e);
    // EMFILE / ENFILE: this process (or the system) is out of file descriptors.
    if chain.contains("os error 24") || chain.contains("os error 23") {
        return Failure::Client(chain);
    }
    if e.is_connect() {
        Failure::Connect(source_chain(&e))
    } else if e.is_timeout() {
        Failure::Timeout(Duration::ZERO)
    } else if e.is_builder() {
        Failure::Other(source_chain(&e))
    } else {
        // Connected, then the connection closed or broke before a response head arrived.
        Failure::Dropped(Some(source_chain(&e)))
    }
}

/// The error and its sources, `: `-joined (reqwest's own message hides the cause).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// The model names a server lists at `GET {base}/models`; `Ok(None)` when it has no such route.
pub async fn served_models(client: &reqwest::Client, base_url: &str) -> Result<Option<Vec<String>>, Failure> {
    let url = format!("{base_url}/models");
    let fut = async {
        let response = client.get(&url).send().await.map_err(request_failure)?;
        if matches!(response.status().as_u16(), 404 | 405) {
            return Ok(None);
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(Failure::Status { status, body: clip(response.text().await.unwrap_or_default().trim()) });
        }
        let body: Value = response.json().await.map_err(|e| Failure::Malformed(format!("{url}: {e}")))?;
        let ids =
            body["data"].as_array().map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect());
        Ok(Some(ids.unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(30), fut).await.unwrap_or(Err(Failure::Timeout(Duration::from_secs(30))))
}
