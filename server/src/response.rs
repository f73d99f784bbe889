//! Response bodies: one request's output assembled from its engine events, as whole responses or as the chunks of a
//! stream (OpenAI's shapes for completions and chat, with `usage` in every final response).

use nano_vllm_engine::{FinishReason, TokenLogprobs};
use serde_json::{Value, json};

use super::ServedModel;
use super::api::{Api, GenerateRequest};
use super::detok::IncrementalText;
use super::error::ApiError;

/// The output of one request so far.
#[derive(Debug)]
pub struct Generation {
    pub id: String,
    pub created: u64,
    api: Api,
    text: IncrementalText,
    logprobs: Option<usize>,
    tokens_as_ids: bool,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// The finish reason once known: "stop" or "length".
    pub finish: Option<&'static str>,
    /// What stopped it: a stop string, or a stop token id (vLLM's `stop_reason`).
    stop_reason: Value,
    last_token: Option<u32>,
}

/// What one event added.
#[derive(Debug, Default)]
pub struct Delta {
    pub text: String,
    /// Logprob entries of the tokens in this delta.
    pub logprobs: Vec<LogprobEntry>,
}

/// One token's logprobs as the response shows them.
#[derive(Debug, Clone)]
pub struct LogprobEntry {
    token: String,
    logprob: f32,
    top: Vec<(String, f32)>,
}

impl Generation {
    pub fn new(id: String, created: u64, request: &GenerateRequest) -> Self {
        Self {
            id,
            created,
            api: request.api,
            text: IncrementalText::new(request.stop.clone(), request.params.min_tokens),
            logprobs: request.logprobs,
            tokens_as_ids: request.tokens_as_ids,
            prompt_tokens: request.prompt.len(),
            cached_tokens: 0,
            completion_tokens: 0,
            finish: None,
            stop_reason: Value::Null,
            last_token: None,
        }
    }

    /// Whether a stop string ended the text (the engine's request is then abandoned).
    pub fn stopped_by_string(&self) -> bool {
        self.text.stopped().is_some()
    }

    /// A sampled token.
    pub fn token(
        &mut self,
        model: &ServedModel,
        token: u32,
        logprobs: Option<TokenLogprobs>,
    ) -> Result<Delta, ApiError> {
        let mut delta = Delta::default();
        if self.finish.is_some() {
            return Ok(delta);
        }
        self.completion_tokens += 1;
        self.last_token = Some(token);
        delta.text = self.text.push(&model.tokenizer, token).map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("decoding token {token}: {e}"),
            param: None,
        })?;
        if let (Some(lp), Some(_)) = (logprobs, self.logprobs) {
            let name = |id: u32| self.token_name(model, id);
            delta.logprobs.push(LogprobEntry {
                token: name(lp.token),
                logprob: lp.logprob,
                top: lp.top.iter().map(|&(id, p)| (name(id), p)).collect(),
            });
        }
        if let Some(stop) = self.text.stopped() {
            self.finish = Some("stop");
            self.stop_reason = json!(stop);
        }
        Ok(delta)
    }

    /// The engine finished the request; the rest of the text.
    pub fn finished(&mut self, reason: FinishReason, prompt_tokens: usize, cached_tokens: usize) -> Delta {
        self.prompt_tokens = prompt_tokens;
        self.cached_tokens = cached_tokens;
        if self.finish.is_none() {
            self.finish = Some(if reason == FinishReason::Length { "length" } else { "stop" });
            if reason == FinishReason::Stop {
                self.stop_reason = json!(self.last_token);
            }
        }
        Delta { text: self.text.finish(), logprobs: Vec::new() }
    }

    fn token_name(&self, model: &ServedModel, id: u32) -> String {
        if self.tokens_as_ids {
            format!("token_id:{id}")
        } else {
            model.tokenizer.decode(&[id], false).unwrap_or_else(|_| format!("token_id:{id}"))
        }
    }

    pub fn usage(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        });
        if self.cached_tokens > 0 {
            usage["prompt_tokens_details"] = json!({ "cached_tokens": self.cached_tokens });
        }
        usage
    }

    /// The logprobs field of a choice for `entries` (`text_offset` counted from `offset`, in bytes).
    fn logprobs_value(&self, entries: &[LogprobEntry], offset: usize) -> Value {
        if self.logprobs.is_none() {
            return Value::Null;
        }
        match self.api {
            Api::Completions => {
                let mut offsets = Vec::with_capacity(entries.len());
                let mut at = offset;
                for e in entries {
                    offsets.push(at);
                    at += e.token.len();
                }
                json!({
                    "tokens": entries.iter().map(|e| &e.token).collect::<Vec<_>>(),
                    "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                    "top_logprobs": entries.iter().map(|e| {
                        e.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()
                    }).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
            Api::Chat => json!({ "content": entries.iter().map(|e| json!({
                "token": e.token,
                "logprob": e.logprob,
                "bytes": e.token.as_bytes(),
                "top_logprobs": e.top.iter().map(|(t, p)| json!({ "token": t, "logprob": p, "bytes": t.as_bytes() })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>() }),
        }
    }

    /// A whole (non-streamed) response.
    pub fn response(&self, model_name: &str, text: &str, entries: &[LogprobEntry]) -> Value {
        let logprobs = self.logprobs_value(entries, 0);
        match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": model_name,
                "choices": [{ "index": 0, "text": text, "logprobs": logprobs, "finish_reason": self.finish,
                              "stop_reason": self.stop_reason }],
                "usage": self.usage(),
            }),
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": model_name,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": text },
                              "logprobs": logprobs, "finish_reason": self.finish, "stop_reason": self.stop_reason }],
                "usage": self.usage(),
            }),
        }
    }

    /// A streamed chunk: the delta, and the finish reason on the last one. `usage` is null in every chunk when
    /// the client asked for usage (it comes in a chunk of its own at the end, as OpenAI streams it).
    pub fn chunk(&self, model_name: &str, delta: &Delta, offset: usize, last: bool, include_usage: bool) -> Value {
        let logprobs = self.logprobs_value(&delta.logprobs, offset);
        let finish = if last { json!(self.finish) } else { Value::Null };
        let stop_reason = if last { self.stop_reason.clone() } else { Value::Null };
        let mut chunk = match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": model_name,
                "choices": [{ "index": 0, "text": delta.text, "logprobs": logprobs, "finish_reason": finish,
                              "stop_reason": stop_reason }],
            }),
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model_name,
                "choices": [{ "index": 0, "delta": { "content": delta.text }, "logprobs": logprobs,
                              "finish_reason": finish, "stop_reason": stop_reason }],
            }),
        };
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The first chunk of a chat stream: the assistant's role.
    pub fn role_chunk(&self, model_name: &str, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model_name,
            "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null,
                          "finish_reason": null }],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    pub fn usage_chunk(&self, model_name: &str) -> Value {
        let object = if self.api == Api::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({ "id": self.id, "object": object, "created": self.created, "model": model_name, "choices": [],
                "usage": self.usage() })
    }
}
