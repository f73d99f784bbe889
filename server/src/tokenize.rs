//! `POST /tokenize` and `POST /detokenize` as vLLM serves them (vllm/entrypoints/serve/tokenize): the same bodies and
//! the same answers, outside `/v1` and so, as in vLLM, not behind the API key.
//!
//! - `/tokenize` takes `{"prompt": "..."}` (`add_special_tokens`, default true) or `{"messages": [...]}` rendered by
//!   the chat template (`add_generation_prompt`, default true; `add_special_tokens`, default false) and answers
//!   `{"count", "max_model_len", "tokens", "token_strs"}`, `token_strs` the tokens' vocabulary strings when
//!   `return_token_strs` is true, else null.
//! - `/detokenize` takes `{"tokens": [...]}` and answers `{"prompt": text}`, special tokens kept (vLLM decodes with
//!   the tokenizer's defaults). An id outside the vocabulary is a 400 naming it (where vLLM's tokenizer may return
//!   text for it); `continue_final_message`, which our chat templates cannot render, is refused by name.

use serde::Deserialize;
use serde_json::{Value, json};

use super::ServedModel;
use super::api::{ChatMessage, chat_ids, check_model, deserialize};
use super::error::ApiError;

#[derive(Debug, Deserialize)]
struct TokenizeBody {
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    add_special_tokens: Option<bool>,
    add_generation_prompt: Option<bool>,
    continue_final_message: Option<bool>,
    return_token_strs: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DetokenizeBody {
    model: Option<String>,
    tokens: Vec<i64>,
}

/// The answer to a `/tokenize` body.
pub fn tokenize(bytes: &[u8], model: &ServedModel) -> Result<Value, ApiError> {
    let b: TokenizeBody = deserialize(bytes)?;
    check_model(b.model.as_deref(), model)?;
    let ids = match (&b.prompt, &b.messages) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("send either prompt or messages, not both")),
        (Some(text), None) => model.encode(text, b.add_special_tokens.unwrap_or(true))?,
        (None, Some(messages)) => {
            if b.continue_final_message == Some(true) {
                if b.add_generation_prompt == Some(true) {
                    return Err(ApiError::bad_request(
                        "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                    ));
                }
                return Err(ApiError::bad_param(
                    "continue_final_message",
                    "continue_final_message is not supported by nano-vllm serve",
                ));
            }
            chat_ids(messages, model, b.add_generation_prompt.unwrap_or(true), b.add_special_tokens.unwrap_or(false))?
        }
        (None, None) => return Err(ApiError::bad_param("prompt", "prompt (or messages) is required")),
    };
    let token_strs = b
        .return_token_strs
        .unwrap_or(false)
        .then(|| ids.iter().map(|&id| model.tokenizer.id_to_token(id).unwrap_or_default()).collect::<Vec<_>>());
    Ok(json!({
        "count": ids.len(),
        "max_model_len": model.max_model_len,
        "tokens": ids,
        "token_strs": token_strs,
    }))
}

/// The answer to a `/detokenize` body.
pub fn detokenize(bytes: &[u8], model: &ServedModel) -> Result<Value, ApiError> {
    let b: DetokenizeBody = deserialize(bytes)?;
    check_model(b.model.as_deref(), model)?;
    let mut ids = Vec::with_capacity(b.tokens.len());
    for (i, &t) in b.tokens.iter().enumerate() {
        match u32::try_from(t) {
            Ok(id) if (id as usize) < model.vocab_size => ids.push(id),
            _ => {
                return Err(ApiError::bad_param(
                    format!("tokens[{i}]"),
                    format!("token id {t} is outside the vocabulary (0..{})", model.vocab_size),
                ));
            }
        }
    }
    let prompt = model
        .tokenizer
        .decode(&ids, false)
        .map_err(|e| ApiError::bad_param("tokens", format!("the tokens cannot be decoded: {e}")))?;
    Ok(json!({ "prompt": prompt }))
}

#[cfg(test)]
mod tests {
    use nano_vllm_models::model::chat::ChatTemplate;
    use tokenizers::Tokenizer;

    use super::*;

    /// tiny-llama's tokenizer, made to add `<s>` (id 0) before a text as Llama's does.
    fn model(chat_template: Option<ChatTemplate>) -> ServedModel {
        let mut tokenizer =
            Tokenizer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama/tokenizer.json"))
                .unwrap();
        let bos = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("<s> $A")
            .unwrap()
            .special_tokens(vec![("<s>", 0)])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(bos));
        let vocab_size = tokenizer.get_vocab_size(true);
        ServedModel {
            name: "m".into(),
            tokenizer,
            chat_template,
            chat_stop_ids: Vec::new(),
            vocab_size,
            max_model_len: 128,
            block_size: 16,
            num_kv_blocks: 64,
            runtime: "mock".into(),
        }
    }

    fn template() -> ChatTemplate {
        ChatTemplate {
            source: "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                     {% if add_generation_prompt %}<|assistant|>{% endif %}"
                .into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    fn call(f: fn(&[u8], &ServedModel) -> Result<Value, ApiError>, m: &ServedModel, body: Value) -> Value {
        f(body.to_string().as_bytes(), m).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn error(f: fn(&[u8], &ServedModel) -> Result<Value, ApiError>, m: &ServedModel, body: Value) -> ApiError {
        f(body.to_string().as_bytes(), m).expect_err("refused")
    }

    #[test]
    fn tokenize_and_detokenize_answer_as_vllm_does() {
        let m = model(Some(template()));
        let text = "The capital of France is Paris.";
        let with = m.tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        let without = m.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!((with[0], &with[1..]), (0, &without[..]));
        let r = call(tokenize, &m, json!({ "model": "m", "prompt": text }));
        assert_eq!(r, json!({ "count": with.len(), "max_model_len": 128, "tokens": with, "token_strs": null }));
        let r = call(tokenize, &m, json!({ "prompt": text, "add_special_tokens": false, "return_token_strs": true }));
        assert_eq!(r["tokens"], json!(without));
        let strs: Vec<String> = without.iter().map(|&id| m.tokenizer.id_to_token(id).unwrap()).collect();
        assert_eq!(r["token_strs"], json!(strs));
        // Back to the text, and the special tokens kept as text.
        assert_eq!(call(detokenize, &m, json!({ "tokens": without })), json!({ "prompt": text }));
        let back = call(detokenize, &m, json!({ "tokens": with }))["prompt"].as_str().unwrap().to_owned();
        assert!(back.starts_with("<s>") && back.ends_with(text), "{back}");
        // Messages through the chat template: the assistant's turn opened by default, no special tokens added.
        let messages = json!([{ "role": "user", "content": "hi" }]);
        let r = call(tokenize, &m, json!({ "messages": messages }));
        let rendered = m.tokenizer.encode("<|user|>hi\n<|assistant|>", false).unwrap().get_ids().to_vec();
        assert_eq!(r["tokens"], json!(rendered));
        let r = call(tokenize, &m, json!({ "messages": messages, "add_generation_prompt": false }));
        assert_eq!(r["tokens"], json!(m.tokenizer.encode("<|user|>hi\n", false).unwrap().get_ids()));
        let r = call(tokenize, &m, json!({ "messages": messages, "add_special_tokens": true }));
        assert_eq!(r["count"], rendered.len() + 1);
    }

    #[test]
    fn bad_tokenize_bodies_are_named() {
        let m = model(None);
        let e = error(tokenize, &m, json!({ "model": "other", "prompt": "x" }));
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        let e = error(tokenize, &m, json!({ "prompt": "x", "messages": [] }));
        assert!(e.message.contains("either prompt or messages"), "{e:?}");
        let e = error(tokenize, &m, json!({}));
        assert!(e.message.contains("prompt (or messages) is required"), "{e:?}");
        let e = error(tokenize, &m, json!({ "prompt": 5 }));
        assert_eq!(e.param.as_deref(), Some("prompt"), "{e:?}");
        let e = error(tokenize, &m, json!({ "messages": [{ "role": "user", "content": "hi" }] }));
        assert!(e.message.contains("has no chat template"), "{e:?}");
        let m = model(Some(template()));
        let msgs = json!([{ "role": "user", "content": "hi" }]);
        let e = error(tokenize, &m, json!({ "messages": msgs, "continue_final_message": true }));
        assert_eq!(e.param.as_deref(), Some("continue_final_message"), "{e:?}");
        let e = error(
            tokenize,
            &m,
            json!({ "messages": msgs, "continue_final_message": true, "add_generation_prompt": true }),
        );
        assert!(e.message.contains("Cannot set both"), "{e:?}");
        for bad in [json!(-1), json!(m.vocab_size), json!(1u64 << 40)] {
            let e = error(detokenize, &m, json!({ "tokens": [1, bad] }));
            assert_eq!(e.param.as_deref(), Some("tokens[1]"), "{e:?}");
            assert!(e.message.contains("outside the vocabulary"), "{e:?}");
        }
        let e = error(detokenize, &m, json!({ "tokens": "1 2" }));
        assert_eq!(e.param.as_deref(), Some("tokens"), "{e:?}");
    }
}
