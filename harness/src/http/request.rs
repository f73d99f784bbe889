//! The JSON body of one request, from a resolved workload request: the prompt as text (decoded from the workload's
//! token ids, as `vllm bench serve` sends it) or as token ids, the sampling parameters, streaming with usage, and
//! fixed output lengths where the server allows (`ignore_eos` for vLLM and ours, `min_tokens` for llama.cpp's
//! server, which ignores `ignore_eos`).

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::{Endpoint, HttpError};
use crate::replay::ResolvedRequest;

/// How a completion prompt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PromptFormat {
    /// Text, decoded from the workload's tokens without special tokens (the server adds BOS as it would for any
    /// client); the server's `usage.prompt_tokens` says how many tokens it made of it.
    #[default]
    Text,
    /// The token ids themselves (`"prompt": [1, 2, 3]`; vLLM and llama.cpp's server accept them): the exact
    /// workload, as the in-process runtimes see it. Completions only.
    Ids,
}

/// A request ready to send, but for the model name (set per server).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    pub id: Option<String>,
    pub arrival_s: f64,
    /// The workload's prompt length in tokens (what the in-process runtimes get).
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    pub body: Value,
}

/// Builds the body for `r`. `stream` asks for SSE with usage in the last chunk.
pub fn prepare(
    r: &ResolvedRequest,
    endpoint: Endpoint,
    format: PromptFormat,
    tokenizer: &Tokenizer,
    stream: bool,
) -> Result<PreparedRequest, HttpError> {
    let text = || {
        tokenizer
            .decode(&r.prompt, true)
            .map_err(|e| HttpError::Decode { request: r.id.clone().unwrap_or_default(), message: e.to_string() })
    };
    let p = &r.params;
    let mut body = match (endpoint, format) {
        (Endpoint::Completions, PromptFormat::Text) => json!({ "prompt": text()? }),
        (Endpoint::Completions, PromptFormat::Ids) => json!({ "prompt": r.prompt }),
        (Endpoint::Chat, PromptFormat::Text) => json!({ "messages": [{ "role": "user", "content": text()? }] }),
        (Endpoint::Chat, PromptFormat::Ids) => return Err(HttpError::IdsNeedCompletions),
    };
    let obj = body.as_object_mut().expect("an object");
    obj.insert("max_tokens".into(), json!(p.max_tokens));
    obj.insert("temperature".into(), json!(p.temperature));
    // llama.cpp's Python server penalizes repeats by default (1.1); the workload's sampling has no penalty.
    obj.insert("repeat_penalty".into(), json!(1.0));
    if p.temperature > 0.0 {
        obj.insert("top_p".into(), json!(p.top_p));
        if let Some(k) = p.top_k {
            obj.insert("top_k".into(), json!(k));
        }
        if let Some(seed) = p.seed {
            obj.insert("seed".into(), json!(seed));
        }
    }
    if p.ignore_eos {
        obj.insert("ignore_eos".into(), json!(true));
        obj.insert("min_tokens".into(), json!(p.max_tokens));
    }
    if stream {
        obj.insert("stream".into(), json!(true));
        obj.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Ok(PreparedRequest {
        id: r.id.clone(),
        arrival_s: r.arrival_s,
        prompt_tokens: r.prompt.len(),
        max_tokens: p.max_tokens,
        body,
    })
}

/// `body` with `"model": served_model`.
pub fn with_model(body: &Value, served_model: &str) -> Value {
    let mut body = body.clone();
    body.as_object_mut().expect("an object").insert("model".into(), json!(served_model));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use nano_vllm_engine::SamplingParams;

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_file(nano_vllm_bundle::fixtures_dir().join("tiny-llama/tokenizer.json")).unwrap()
    }

    #[test]
    fn bodies_carry_the_prompt_parameters_and_fixed_lengths() {
        let tok = tokenizer();
        let ids = tok.encode("the cat sat", true).unwrap().get_ids().to_vec();
        let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(8) };
        let r = ResolvedRequest { id: Some("r1".into()), arrival_s: 0.5, prompt: ids.clone(), params };
        let p = prepare(&r, Endpoint::Completions, PromptFormat::Text, &tok, true).unwrap();
        assert_eq!((p.prompt_tokens, p.max_tokens, p.arrival_s), (ids.len(), 8, 0.5));
        let b = with_model(&p.body, "tiny");
        assert_eq!(b["prompt"], "the cat sat");
        assert_eq!(
            (b["model"].as_str(), b["max_tokens"].as_u64(), b["min_tokens"].as_u64()),
            (Some("tiny"), Some(8), Some(8))
        );
        assert_eq!((b["ignore_eos"].as_bool(), b["stream"].as_bool()), (Some(true), Some(true)));
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["temperature"], 0.0);
        assert!(b.get("top_p").is_none() && b.get("seed").is_none());
        let ids_body = prepare(&r, Endpoint::Completions, PromptFormat::Ids, &tok, false).unwrap().body;
        assert_eq!(ids_body["prompt"], json!(ids));
        assert!(ids_body.get("stream").is_none());
        let chat = prepare(&r, Endpoint::Chat, PromptFormat::Text, &tok, true).unwrap().body;
        assert_eq!(chat["messages"][0]["content"], "the cat sat");
        let err = prepare(&r, Endpoint::Chat, PromptFormat::Ids, &tok, true).unwrap_err();
        assert_eq!(err.to_string(), "--prompt-format ids needs --endpoint completions (a chat message is text)");
        let sampled = SamplingParams { temperature: 0.8, top_k: Some(40), seed: Some(7), ..SamplingParams::greedy(4) };
        let r = ResolvedRequest { id: None, arrival_s: 0.0, prompt: ids, params: sampled };
        let b = prepare(&r, Endpoint::Completions, PromptFormat::Text, &tok, true).unwrap().body;
        assert_eq!((b["top_k"].as_u64(), b["seed"].as_u64()), (Some(40), Some(7)));
        assert!(b.get("ignore_eos").is_none() && b.get("min_tokens").is_none());
    }
}
