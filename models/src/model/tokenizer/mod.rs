//! A `tokenizers` tokenizer built from a GGUF's own vocabulary, for a model given as a GGUF alone, for the two
//! vocabulary kinds llama.cpp ships that today's small-model families use:
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE with the file's merges ([`byte_level`]: Llama 3, Qwen2/3, SmolLM,
//!   GPT-2);
//! - `tokenizer.ggml.model = llama`: SentencePiece BPE with scores and byte fallback ([`sentencepiece`]: Gemma 1-3,
//!   Llama 2, Mistral v0.1-v0.3, TinyLlama, Phi-3).
//!
//! Both follow llama.cpp's `llama-vocab.cpp` for the same file: control tokens are special (matched in text, kept when
//! decoding), user-defined tokens are matched whole in the text, and with `tokenizer.ggml.add_bos_token` the tokenizer
//! adds the BOS token when special tokens are requested. Anything else (`t5`/Unigram, `rwkv`, an unknown
//! pre-tokenizer) is an error that names the key and says to give a `tokenizer.json`.

mod byte_level;
mod sentencepiece;

use nano_vllm_bundle::gguf::{GgufFile, GgufValue};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

/// llama.cpp token types (`llama_token_type`).
const NORMAL: u64 = 1;
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// The vocabulary part every kind shares: tokens and their llama.cpp types.
struct Vocabulary<'a> {
    tokens: Vec<&'a str>,
    types: Vec<u64>,
}

impl<'a> Vocabulary<'a> {
    fn read(file: &'a GgufFile) -> Result<Self, String> {
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match file.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(t) => t.iter().map(|v| v.as_u64().unwrap_or(NORMAL)).collect(),
            None => vec![NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(format!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len()));
        }
        if tokens.is_empty() {
            return Err("tokenizer.ggml.tokens is empty".into());
        }
        Ok(Self { tokens, types })
    }

    /// Control and user-defined tokens: `(id, text, special)`, special for control tokens. Matched whole in the raw
    /// text (not normalized), as llama.cpp partitions the text on them before tokenizing the rest.
    fn added(&self) -> impl Iterator<Item = (usize, &'a str, bool)> + '_ {
        self.tokens
            .iter()
            .zip(&self.types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == CONTROL || **ty == USER_DEFINED)
            .map(|(id, (token, ty))| (id, *token, *ty == CONTROL))
    }
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>, String> {
    file.get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| format!("{key} is missing"))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| format!("{key} holds a non-string")))
        .collect()
}

/// The post-processor that adds BOS when special tokens are requested (`tokenizer.ggml.add_bos_token`), or `null`.
/// `default_add_bos` is what llama.cpp assumes for a file without the key.
fn bos_post_processor(file: &GgufFile, tokens: &[&str], default_add_bos: bool) -> Result<Value, String> {
    let bos =
        file.get("tokenizer.ggml.bos_token_id").and_then(GgufValue::as_u64).and_then(|id| usize::try_from(id).ok());
    let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(default_add_bos);
    if !add_bos {
        return Ok(Value::Null);
    }
    let (id, token) = bos
        .and_then(|id| Some((id, *tokens.get(id)?)))
        .ok_or("tokenizer.ggml.add_bos_token is set but the BOS token id is missing or out of range")?;
    Ok(json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {token: {"id": token, "ids": [id], "tokens": [token]}}}))
}

/// Builds the tokenizer a GGUF describes. Errors name the metadata key that is missing or unsupported.
pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, String> {
    match file.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("(missing)") {
        "gpt2" => byte_level::build(file),
        "llama" => sentencepiece::build(file),
        other => Err(format!(
            "tokenizer.ggml.model '{other}' is not supported from GGUF metadata (byte-level BPE 'gpt2' and \
             SentencePiece 'llama' are); give the model's tokenizer.json"
        )),
    }
}

/// Assembles a `tokenizer.json` document and parses it.
fn parse(spec: &Value) -> Result<Tokenizer, String> {
    spec.to_string().parse::<Tokenizer>().map_err(|e| format!("building the tokenizer from its vocabulary: {e}"))
}
