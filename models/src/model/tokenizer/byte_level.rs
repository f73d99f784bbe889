//! Byte-level BPE (`tokenizer.ggml.model = gpt2`), with the pre-tokenizer llama.cpp applies for
//! `tokenizer.ggml.pre` (its `llama-vocab.cpp` regexes): GPT-2's, SmolLM's (every digit on its own, then GPT-2's),
//! Llama 3's and Qwen2's; llama.cpp's legacy `default` regexes are not reproduced (an error, as is a file without
//! `tokenizer.ggml.pre`).

use nano_vllm_bundle::gguf::{GgufFile, GgufValue};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::{Vocabulary, bos_post_processor, parse, strings};

/// Llama 3's split (llama.cpp `llama-bpe`).
const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (llama.cpp `qwen2`).
const QWEN2_RE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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

pub(super) fn build(file: &GgufFile) -> Result<Tokenizer, String> {
    let vocabulary = Vocabulary::read(file)?;
    let merges = strings(file, "tokenizer.ggml.merges")?;
    let pre = pre_tokenizer(file.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default (missing)"))?;
    let mut vocab = serde_json::Map::with_capacity(vocabulary.tokens.len());
    for (id, &token) in vocabulary.tokens.iter().enumerate() {
        // A repeated string keeps its first id (the later ones cannot be produced).
        vocab.entry(token.to_owned()).or_insert(json!(id));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])).ok_or_else(|| format!("merge '{m}' is not two tokens")))
        .collect::<Result<_, _>>()?;
    parse(&json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": vocabulary.added().map(|(id, token, special)| json!({"id": id, "content": token,
            "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special}))
            .collect::<Vec<_>>(),
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": bos_post_processor(file, &vocabulary.tokens, false)?,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    }))
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
            let tok = super::super::from_gguf(&file).unwrap();
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
