//! A `tokenizers` tokenizer built from a GGUF's own vocabulary (`tokenizer.ggml.tokens`, `token_type`, `merges`),
//! for a model given as a GGUF alone. Byte-level BPE (`tokenizer.ggml.model = gpt2`) only, with the pre-tokenizer
//! llama.cpp applies for `tokenizer.ggml.pre` (its `llama-vocab.cpp` regexes): GPT-2's, SmolLM's (every digit on its
//! own, then GPT-2's), Llama 3's and Qwen2's; llama.cpp's legacy `default` regexes are not reproduced (an error, as
//! is a file without `tokenizer.ggml.pre`). Control tokens are special (matched in text, kept when decoding); with
//! `tokenizer.ggml.add_bos_token` the tokenizer adds the BOS token when special tokens are requested. Anything else
//! is an error that says to give a `tokenizer.json`.

use nano_vllm_bundle::gguf::{GgufFile, GgufValue};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

/// Llama 3's split (llama.cpp `llama-bpe`).
const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (llama.cpp `qwen2`).
const QWEN2_RE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_then_bytes(regex: &str, byte_regex: bool) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(byte_regex),
    ]})
}

/// The pre-tokenizer of llama.cpp's `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<Value, String> {
    Ok(match pre {
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => split_then_bytes(r"\p{N}", true),
        "llama3" | "llama-v3" | "llama-bpe" => split_then_bytes(LLAMA3_RE, false),
        "qwen2" | "stablelm2" => split_then_bytes(QWEN2_RE, false),
        other => {
            return Err(format!(
                "pre-tokenizer '{other}' (tokenizer.ggml.pre) is not supported here; give the model's tokenizer.json"
            ));
        }
    })
}

/// Builds the tokenizer a GGUF describes. Errors name the metadata key that is missing or unsupported.
pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, String> {
    let model = file.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("(missing)");
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model '{model}' is not supported from GGUF metadata (byte-level BPE 'gpt2' is); give the \
             model's tokenizer.json"
        ));
    }
    let strings = |key: &str| -> Result<Vec<&str>, String> {
        file.get(key)
            .and_then(GgufValue::as_array)
            .ok_or_else(|| format!("{key} is missing"))?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| format!("{key} holds a non-string")))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(t) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(format!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len()));
    }
    let pre = pre_tokenizer(file.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default (missing)"))?;
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&token, &ty)) in tokens.iter().zip(&types).enumerate() {
        // A repeated string keeps its first id (the later ones cannot be produced).
        vocab.entry(token.to_owned()).or_insert(json!(id));
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": ty == CONTROL}));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])).ok_or_else(|| format!("merge '{m}' is not two tokens")))
        .collect::<Result<_, _>>()?;
    let bos =
        file.get("tokenizer.ggml.bos_token_id").and_then(GgufValue::as_u64).and_then(|id| usize::try_from(id).ok());
    let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(false);
    let post = match bos.and_then(|id| Some((id, *tokens.get(id)?))) {
        Some((id, token)) if add_bos => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {token: {"id": token, "ids": [id], "tokens": [token]}}}),
        Some(_) | None if add_bos => {
            return Err("tokenizer.ggml.add_bos_token is set but the BOS token id is missing or out of range".into());
        }
        _ => Value::Null,
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    spec.to_string().parse::<Tokenizer>().map_err(|e| format!("building the tokenizer from its vocabulary: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed fixtures' GGUFs carry the tokenizer.json's vocabulary (pre-tokenizer `gpt-2`): the tokenizer
    /// built from them encodes every reference case as the reference does.
    #[test]
    fn a_fixture_gguf_gives_the_reference_tokenizer() {
        for name in nano_vllm_bundle::COMMITTED_BUNDLES {
            let bundle = nano_vllm_bundle::open_fixture(name).unwrap();
            let file = GgufFile::open(bundle.gguf_f32()).unwrap();
            let tok = from_gguf(&file).unwrap();
            for case in bundle.tokenizer_reference().unwrap().cases {
                let ids = tok.encode(case.text.as_str(), false).unwrap().get_ids().to_vec();
                assert_eq!(ids, case.ids, "{name}: {}", case.name);
                assert_eq!(tok.decode(&ids, false).unwrap(), case.decoded, "{name}: {}", case.name);
            }
        }
    }

    #[test]
    fn unsupported_tokenizers_say_what_to_give_instead() {
        assert!(pre_tokenizer("deepseek-llm").unwrap_err().contains("give the model's tokenizer.json"));
        assert!(pre_tokenizer("default").unwrap_err().contains("'default'"));
        assert!(pre_tokenizer("smollm").is_ok() && pre_tokenizer("llama-bpe").is_ok());
    }
}
