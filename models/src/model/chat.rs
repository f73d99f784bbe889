//! A model's chat template (Jinja), rendered with minijinja as transformers renders it: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods available (minijinja-contrib's pycompat), `raise_exception` defined,
//! and `messages`, `add_generation_prompt`, `bos_token`, `eos_token` in the context.
//!
//! Sources, as models ship them: `chat_template.jinja`, `tokenizer_config.json`'s `chat_template` (a string, or a
//! list of named templates whose `default` is used), or a GGUF's `tokenizer.chat_template`.

use std::path::Path;

use nano_vllm_bundle::gguf::{GgufFile, GgufValue};
use serde::Serialize;

use super::ModelError;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

/// A chat template with the special tokens it may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

/// A special token of tokenizer_config.json: a string, or `{"content": ...}`.
fn token_text(v: &serde_json::Value) -> String {
    v.as_str().or_else(|| v["content"].as_str()).unwrap_or_default().to_owned()
}

impl ChatTemplate {
    /// From an HF directory's files: `chat_template.jinja` first, else `tokenizer_config.json`'s `chat_template`;
    /// special tokens from `tokenizer_config.json`. `None`: the model has no chat template.
    pub fn from_hf_files(jinja: Option<&Path>, tokenizer_config: Option<&Path>) -> Result<Option<Self>, ModelError> {
        let config: serde_json::Value = match tokenizer_config {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| ModelError::ChatTemplate { path: path.into(), reason: e.to_string() })?;
                serde_json::from_slice(&bytes).map_err(|e| ModelError::ChatTemplate {
                    path: path.into(),
                    reason: format!("malformed JSON: {e}"),
                })?
            }
            None => serde_json::Value::Null,
        };
        let source = match jinja {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ModelError::ChatTemplate { path: path.into(), reason: e.to_string() })?,
            ),
            None => match &config["chat_template"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(named) => named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_owned),
                _ => None,
            },
        };
        Ok(source.map(|source| Self {
            source,
            bos_token: token_text(&config["bos_token"]),
            eos_token: token_text(&config["eos_token"]),
        }))
    }

    /// From a GGUF's `tokenizer.chat_template`, with its BOS and EOS tokens' text.
    pub fn from_gguf(file: &GgufFile) -> Option<Self> {
        let source = file.get("tokenizer.chat_template").and_then(GgufValue::as_str)?.to_owned();
        let tokens = file.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array);
        let text = |key: &str| {
            let id = file.get(key).and_then(GgufValue::as_u64)? as usize;
            tokens?.get(id)?.as_str().map(str::to_owned)
        };
        Some(Self {
            source,
            bos_token: text("tokenizer.ggml.bos_token_id").unwrap_or_default(),
            eos_token: text("tokenizer.ggml.eos_token_id").unwrap_or_default(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt`, the text ends where the assistant's reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|e| e.to_string())?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template("chat", &self.source).map_err(|e| format!("the chat template does not parse: {e}"))?;
        let template = env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| format!("rendering the chat template: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}\
{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate { source: source.into(), bos_token: "<s>".into(), eos_token: "</s>".into() }
    }

    #[test]
    fn chatml_renders_as_transformers_does() {
        let text = template(CHATML).render(&[Message::user("What is the capital of France?")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_whitespace_control_and_errors() {
        // .strip() and .upper() come from pycompat; trim_blocks drops the newline after a block tag.
        let t = template("{% for m in messages %}\n{{ bos_token }}{{ m.content.strip().upper() }}\n{% endfor %}");
        assert_eq!(t.render(&[Message::user("  hi ")], false).unwrap(), "<s>HI\n");
        let t = template("{{ raise_exception('only user turns') }}");
        assert!(t.render(&[], false).unwrap_err().contains("only user turns"));
        assert!(template("{% for %}").render(&[], false).unwrap_err().starts_with("the chat template does not parse"));
    }
}
