//! Response bodies: each choice's output assembled from its engine events ([`Generation`]), and the response around
//! the choices ([`Header`]), whole or as the chunks of a stream (OpenAI's shapes for completions and chat, with
//! `usage` in every final response). A response with several choices (`n`, or a list of prompts) numbers them
//! prompt-major (`index` = prompt x n + j) and counts each prompt's tokens once in `usage`, as vLLM does.

use nano_vllm_engine::{FinishReason, TokenLogprobs};
use serde_json::{Value, json};

use super::ServedModel;
use super::api::{Api, GenerateRequest};
use super::detok::IncrementalText;
use super::error::ApiError;

/// What every body and chunk of one response carries.
#[derive(Debug, Clone)]
pub struct Header {
    pub id: String,
    pub created: u64,
    pub api: Api,
    pub model: String,
}

/// The output of one choice so far.
#[derive(Debug)]
pub struct Generation {
    /// The choice's `index`.
    pub index: usize,
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
    /// Choice `index` of `request`, on a prompt of `prompt_tokens` tokens.
    pub fn new(index: usize, prompt_tokens: usize, request: &GenerateRequest) -> Self {
        Self {
            index,
            api: request.api,
            text: IncrementalText::new(request.stop.clone(), request.params.min_tokens),
            logprobs: request.logprobs,
            tokens_as_ids: request.tokens_as_ids,
            prompt_tokens,
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

    /// The choice in a whole (non-streamed) response.
    pub fn choice(&self, text: &str, entries: &[LogprobEntry]) -> Value {
        let logprobs = self.logprobs_value(entries, 0);
        match self.api {
            Api::Completions => json!({ "index": self.index, "text": text, "logprobs": logprobs,
                                        "finish_reason": self.finish, "stop_reason": self.stop_reason }),
            Api::Chat => json!({ "index": self.index, "message": { "role": "assistant", "content": text },
                                 "logprobs": logprobs, "finish_reason": self.finish, "stop_reason": self.stop_reason }),
        }
    }

    /// The choice in a streamed chunk: the delta, and the finish reason on the last one (`offset`: the bytes of text
    /// this choice streamed before, for completions' `text_offset`).
    pub fn chunk_choice(&self, delta: &Delta, offset: usize, last: bool) -> Value {
        let logprobs = self.logprobs_value(&delta.logprobs, offset);
        let finish = if last { json!(self.finish) } else { Value::Null };
        let stop_reason = if last { self.stop_reason.clone() } else { Value::Null };
        match self.api {
            Api::Completions => json!({ "index": self.index, "text": delta.text, "logprobs": logprobs,
                                        "finish_reason": finish, "stop_reason": stop_reason }),
            Api::Chat => json!({ "index": self.index, "delta": { "content": delta.text }, "logprobs": logprobs,
                                 "finish_reason": finish, "stop_reason": stop_reason }),
        }
    }
}

/// The `usage` of a response whose choices are `choices`, `n` per prompt: each prompt's tokens (and cached tokens)
/// counted once, from its first choice; the completion tokens of every choice.
pub fn usage<'a>(choices: impl IntoIterator<Item = &'a Generation>, n: usize) -> Value {
    let (mut prompt, mut cached, mut completion) = (0, 0, 0);
    for g in choices {
        if g.index % n.max(1) == 0 {
            prompt += g.prompt_tokens;
            cached += g.cached_tokens;
        }
        completion += g.completion_tokens;
    }
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    if cached > 0 {
        usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    usage
}

impl Header {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }

    /// A whole (non-streamed) response.
    pub fn response(&self, choices: Vec<Value>, usage: Value) -> Value {
        json!({ "id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
                "choices": choices, "usage": usage })
    }

    /// A streamed chunk of one choice. The usage comes in a chunk of its own at the end, when asked; the chunks
    /// before it carry no `usage` key, as vLLM streams them (OpenAI's own sends `"usage": null` in each).
    pub fn chunk(&self, choice: Value) -> Value {
        json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
                "choices": [choice] })
    }

    /// The first chunk of a chat stream's choice `index`: the assistant's role.
    pub fn role_chunk(&self, index: usize) -> Value {
        let choice = json!({ "index": index, "delta": { "role": "assistant", "content": "" }, "logprobs": null,
                             "finish_reason": null });
        self.chunk(choice)
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    pub fn usage_chunk(&self, usage: Value) -> Value {
        json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
                "choices": [], "usage": usage })
    }
}
