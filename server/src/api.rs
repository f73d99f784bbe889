//! Request bodies of `/v1/completions` and `/v1/chat/completions`, checked before anything reaches the engine: a
//! malformed body, a field of the wrong type (named, with serde_path_to_error), a value out of range, a prompt that
//! does not fit the context or has token ids outside the vocabulary, an unknown model, or a feature this server does
//! not implement (best_of, penalties, logit_bias, echo, ...) is a 400 or 404 naming the field, never silently
//! ignored. Fields the API defines that do not change the output (`user`, ...) and unknown extra fields are
//! ignored, as vLLM does. As in vLLM, a request may ask for `n` choices and `/v1/completions` may carry a list of
//! prompts: each prompt runs `n` times, choice `j` seeded `seed + j` when a seed is given (vLLM's child requests);
//! `n` > 1 with greedy sampling is refused, as vLLM refuses it.

use nano_vllm_engine::{MAX_LOGPROBS, SamplingParams};
use serde::Deserialize;
use serde_json::Value;

use super::ServedModel;
use super::error::ApiError;
use nano_vllm_models::model::chat::Message;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// The body of either endpoint (fields of the other are refused where they would change the meaning).
#[derive(Debug, Default, Deserialize)]
pub struct RequestBody {
    model: Option<String>,
    prompt: Option<Value>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    seed: Option<i64>,
    stop: Option<Value>,
    stop_token_ids: Option<Vec<u32>>,
    ignore_eos: Option<bool>,
    min_tokens: Option<u64>,
    logprobs: Option<Value>,
    top_logprobs: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    best_of: Option<u64>,
    echo: Option<bool>,
    suffix: Option<String>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    /// llama.cpp's name for the repetition penalty (our own client sends 1.0, the neutral value).
    repeat_penalty: Option<f32>,
    logit_bias: Option<Value>,
    return_tokens_as_token_ids: Option<bool>,
    add_special_tokens: Option<bool>,
    /// The client's id for the request (vLLM's `request_id`; the `X-Request-Id` header takes precedence).
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage {
    role: String,
    /// A string, or a list of parts of which only `{"type": "text", "text": ...}` is understood; may be null.
    #[serde(default)]
    content: Value,
}

/// A checked request, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub api: Api,
    /// The prompts (one, or a list in `/v1/completions`), each run `n` times.
    pub prompts: Vec<Vec<u32>>,
    /// Choices per prompt.
    pub n: usize,
    /// Sampling of every choice (choice `j` of a prompt: the seed plus `j`, see [`GenerateRequest::params_of`]).
    pub params: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Report logprobs (`top` alternatives each) in the response.
    pub logprobs: Option<usize>,
    /// Tokens in logprobs as `token_id:N` (vLLM's `return_tokens_as_token_ids`).
    pub tokens_as_ids: bool,
    /// The body's `request_id`, if any.
    pub request_id: Option<String>,
}

impl GenerateRequest {
    /// The engine requests in the order of the response's choices (`index` = prompt x n + j).
    pub fn choices(&self) -> impl Iterator<Item = (&[u32], SamplingParams)> + '_ {
        self.prompts.iter().flat_map(move |p| (0..self.n).map(move |j| (p.as_slice(), self.params_of(j))))
    }

    /// The sampling of a prompt's choice `j`: vLLM seeds child request `j` of a seeded request with `seed + j`.
    pub fn params_of(&self, j: usize) -> SamplingParams {
        let mut params = self.params.clone();
        params.seed = params.seed.map(|s| s.wrapping_add(j as u64));
        params
    }
}

/// Parses and checks a body.
pub fn parse(api: Api, bytes: &[u8], model: &ServedModel) -> Result<GenerateRequest, ApiError> {
    deserialize::<RequestBody>(bytes)?.check(api, model)
}

/// A JSON body as `T`: a 400 saying the body is not JSON, or naming the field that is wrong (serde_path_to_error).
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else {
            ApiError::bad_param(path.clone(), format!("field '{path}': {inner}"))
        }
    })
}

/// A request's `model`, when given, must be the served one: else a 404 naming it, as vLLM answers.
pub(crate) fn check_model(name: Option<&str>, model: &ServedModel) -> Result<(), ApiError> {
    match name {
        Some(n) if n != model.name => {
            Err(ApiError::not_found(format!("The model `{n}` does not exist."), Some("model")))
        }
        _ => Ok(()),
    }
}

fn finite_in(name: &str, v: f32, lo: f32, hi: f32, lo_open: bool) -> Result<f32, ApiError> {
    let ok = v.is_finite() && v <= hi && if lo_open { v > lo } else { v >= lo };
    if ok {
        Ok(v)
    } else {
        let lo_bracket = if lo_open { '(' } else { '[' };
        Err(ApiError::bad_param(name, format!("{name} must be in {lo_bracket}{lo}, {hi}], got {v}")))
    }
}

impl RequestBody {
    fn check(self, api: Api, model: &ServedModel) -> Result<GenerateRequest, ApiError> {
        check_model(self.model.as_deref(), model)?;
        self.refuse_unsupported(api)?;
        let prompts = match api {
            Api::Completions => self.completion_prompts(model)?,
            Api::Chat => vec![self.chat_prompt(model)?],
        };
        let n = match self.n {
            None => 1,
            Some(0) => return Err(ApiError::bad_param("n", "n must be at least 1, got 0.")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let context = model.max_model_len;
        let many = prompts.len() > 1;
        for (i, prompt) in prompts.iter().enumerate() {
            let which = if many { format!("prompt {i}") } else { "the prompt".to_owned() };
            if prompt.is_empty() {
                return Err(ApiError::bad_param("prompt", format!("{which} is empty")));
            }
            if let Some((position, &token)) = prompt.iter().enumerate().find(|(_, t)| **t as usize >= model.vocab_size)
            {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!(
                        "token id {token} at position {position} of {which} is outside the vocabulary (size {})",
                        model.vocab_size
                    ),
                ));
            }
            if prompt.len() >= context {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!("{which} has {} tokens; this model's context is {context} tokens", prompt.len()),
                ));
            }
        }
        // The longest prompt bounds the completion of every one (they share the sampling parameters).
        let prompt = prompts
            .iter()
            .max_by_key(|p| p.len())
            .ok_or_else(|| ApiError::bad_param("prompt", "the list of prompts is empty"))?;
        let room = context - prompt.len();
        let (max_tokens, field) = match (api, self.max_tokens, self.max_completion_tokens) {
            (_, Some(n), _) => (n, "max_tokens"),
            (Api::Chat, None, Some(n)) => (n, "max_completion_tokens"),
            // OpenAI's default for completions; chat may use the rest of the context (as vLLM does).
            (Api::Completions, None, _) => (16.min(room as u64), "max_tokens"),
            (Api::Chat, None, None) => (room as u64, "max_tokens"),
        };
        if max_tokens == 0 {
            return Err(ApiError::bad_param(field, format!("{field} must be at least 1")));
        }
        if max_tokens > room as u64 {
            return Err(ApiError::bad_param(
                field,
                format!(
                    "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in \
                     the prompt, {max_tokens} for the completion). Please reduce the prompt or {field}.",
                    prompt.len() as u64 + max_tokens,
                    prompt.len()
                ),
            ));
        }
        let max_tokens = max_tokens as usize;
        let blocks = (prompt.len() + max_tokens).div_ceil(model.block_size.max(1));
        if blocks > model.num_kv_blocks {
            return Err(ApiError::bad_param(
                field,
                format!(
                    "the prompt ({} tokens) and {field} ({max_tokens}) need {blocks} KV blocks of {} tokens; the \
                     server's cache has {}",
                    prompt.len(),
                    model.block_size,
                    model.num_kv_blocks
                ),
            ));
        }
        let min_tokens = self.min_tokens.unwrap_or(0);
        if min_tokens > max_tokens as u64 {
            return Err(ApiError::bad_param(
                "min_tokens",
                format!("min_tokens ({min_tokens}) must not exceed {field} ({max_tokens})"),
            ));
        }
        let temperature = finite_in("temperature", self.temperature.unwrap_or(1.0), 0.0, 2.0, false)?;
        // vLLM's rule (and its message): n identical greedy choices are refused.
        if n > 1 && temperature < 1e-5 {
            return Err(ApiError::bad_param("n", format!("n must be 1 when using greedy sampling, got {n}.")));
        }
        let top_p = finite_in("top_p", self.top_p.unwrap_or(1.0), 0.0, 1.0, true)?;
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::bad_param("top_k", format!("top_k must be -1 (off) or positive, got {k}")));
            }
        };
        let logprobs = self.logprobs(api)?;
        let stop_token_ids = self.stop_token_ids.unwrap_or_default();
        if let Some(&t) = stop_token_ids.iter().find(|t| **t as usize >= model.vocab_size) {
            return Err(ApiError::bad_param(
                "stop_token_ids",
                format!("stop token id {t} is outside the vocabulary (size {})", model.vocab_size),
            ));
        }
        let mut stop_token_ids = stop_token_ids;
        if api == Api::Chat {
            stop_token_ids.extend(model.chat_stop_ids.iter().copied());
        }
        let stop = match self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(ApiError::bad_param("stop", format!("stop must be strings, got {other}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ApiError::bad_param("stop", format!("stop must be a string or a list, got {other}")));
            }
        };
        let include_usage = match (&self.stream_options, self.stream.unwrap_or(false)) {
            (Some(o), true) => o.include_usage.unwrap_or(false),
            (Some(_), false) => {
                return Err(ApiError::bad_param("stream_options", "stream_options is only allowed with stream: true"));
            }
            (None, _) => false,
        };
        let params = SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: self.seed.map(|s| s as u64),
            ignore_eos: self.ignore_eos.unwrap_or(false),
            stop_token_ids,
            min_tokens: min_tokens as usize,
            logprobs,
            ..SamplingParams::greedy(max_tokens)
        };
        Ok(GenerateRequest {
            api,
            prompts,
            n,
            params,
            stop,
            stream: self.stream.unwrap_or(false),
            include_usage,
            logprobs,
            tokens_as_ids: self.return_tokens_as_token_ids.unwrap_or(false),
            request_id: self.request_id,
        })
    }

    /// Features that would change the output and that this server does not implement.
    fn refuse_unsupported(&self, api: Api) -> Result<(), ApiError> {
        let unsupported = |field: &str, what: &str| {
            Err(ApiError::bad_param(field, format!("{field}: {what} is not supported by nano-vllm serve")))
        };
        if self.best_of.is_some_and(|n| n != 1) {
            return unsupported("best_of", "best_of other than 1");
        }
        if self.echo == Some(true) {
            return unsupported("echo", "echoing the prompt");
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return unsupported("suffix", "a suffix");
        }
        for (field, value, neutral) in [
            ("presence_penalty", self.presence_penalty, 0.0),
            ("frequency_penalty", self.frequency_penalty, 0.0),
            ("repetition_penalty", self.repetition_penalty, 1.0),
            ("repeat_penalty", self.repeat_penalty, 1.0),
        ] {
            if value.is_some_and(|v| v != neutral) {
                return unsupported(field, "a penalty other than the neutral value");
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty()) && !b.is_null()) {
            return unsupported("logit_bias", "logit_bias");
        }
        match api {
            Api::Completions if self.messages.is_some() => {
                Err(ApiError::bad_param("messages", "messages belong to /v1/chat/completions; send prompt here"))
            }
            Api::Chat if self.prompt.is_some() => {
                Err(ApiError::bad_param("prompt", "prompt belongs to /v1/completions; send messages here"))
            }
            _ => Ok(()),
        }
    }

    /// The prompt, or the list of prompts: a string, a list of token ids, a list of strings, or a list of lists of
    /// token ids (vLLM's four forms; a list that mixes them is refused, as vLLM refuses it).
    fn completion_prompts(&self, model: &ServedModel) -> Result<Vec<Vec<u32>>, ApiError> {
        let add_special = self.add_special_tokens.unwrap_or(true);
        let as_ids = |items: &[Value]| -> Option<Vec<u32>> {
            items.iter().map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok())).collect()
        };
        let ids_error = |field: String| {
            ApiError::bad_param(field.clone(), format!("{field}: token ids must be integers in 0..2^32"))
        };
        let forms = "prompt must be a string, a list of token ids, a list of strings or a list of lists of token ids";
        match &self.prompt {
            None => Err(ApiError::bad_param("prompt", "prompt is required")),
            Some(Value::String(text)) => Ok(vec![model.encode(text, add_special)?]),
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
                items.iter().map(|item| model.encode(item.as_str().unwrap_or_default(), add_special)).collect()
            }
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_array) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let inner = item.as_array().map(Vec::as_slice).unwrap_or_default();
                    as_ids(inner).ok_or_else(|| ids_error(format!("prompt[{i}]")))
                })
                .collect(),
            Some(Value::Array(items)) => {
                if items.iter().any(|v| v.is_string() || v.is_array()) {
                    return Err(ApiError::bad_param("prompt", format!("{forms}, not a mix of these")));
                }
                as_ids(items).map(|ids| vec![ids]).ok_or_else(|| ids_error("prompt".to_owned()))
            }
            Some(other) => Err(ApiError::bad_param("prompt", format!("{forms}, got {other}"))),
        }
    }

    fn chat_prompt(&self, model: &ServedModel) -> Result<Vec<u32>, ApiError> {
        let messages = self.messages.as_ref().ok_or_else(|| ApiError::bad_param("messages", "messages is required"))?;
        chat_ids(messages, model, true, false)
    }

    fn logprobs(&self, api: Api) -> Result<Option<usize>, ApiError> {
        let top = match (api, &self.logprobs) {
            (_, None | Some(Value::Null)) => {
                if self.top_logprobs.is_some_and(|n| n > 0) && api == Api::Chat {
                    return Err(ApiError::bad_param("top_logprobs", "top_logprobs needs logprobs: true"));
                }
                return Ok(None);
            }
            (Api::Completions, Some(v)) => v.as_u64().ok_or_else(|| {
                ApiError::bad_param("logprobs", format!("logprobs must be a non-negative integer here, got {v}"))
            })?,
            (Api::Chat, Some(Value::Bool(false))) => return Ok(None),
            (Api::Chat, Some(Value::Bool(true))) => self.top_logprobs.unwrap_or(0),
            (Api::Chat, Some(v)) => {
                return Err(ApiError::bad_param("logprobs", format!("logprobs must be true or false here, got {v}")));
            }
        };
        if top > MAX_LOGPROBS as u64 {
            let field = if api == Api::Chat { "top_logprobs" } else { "logprobs" };
            return Err(ApiError::bad_param(field, format!("{field} must be at most {MAX_LOGPROBS}, got {top}")));
        }
        Ok(Some(top as usize))
    }
}

/// The token ids of `messages` rendered by the model's chat template (with the assistant's turn opened when
/// `add_generation_prompt`): the rendered text carries its special tokens as text; the tokenizer adds its own on top
/// only with `add_special_tokens` (vLLM's default for chat: false).
pub(crate) fn chat_ids(
    messages: &[ChatMessage],
    model: &ServedModel,
    add_generation_prompt: bool,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param("messages", "messages is empty"));
    }
    let template = model.chat_template.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!(
            "the model `{}` has no chat template: use /v1/completions, or start the server with --chat-template",
            model.name
        ))
    })?;
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let content = match &m.content {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => Ok(t),
                    _ => Err(ApiError::bad_param(
                        format!("messages[{i}].content"),
                        "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            other => {
                return Err(ApiError::bad_param(
                    format!("messages[{i}].content"),
                    format!("content must be a string or a list of parts, got {other}"),
                ));
            }
        };
        turns.push(Message { role: m.role.clone(), content });
    }
    let text = template
        .render(&turns, add_generation_prompt)
        .map_err(|e| ApiError::bad_param("messages", format!("the chat template failed on these messages: {e}")))?;
    model.encode(&text, add_special_tokens)
}
