//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's `llm_tokenizer_spm` runs it on the same file:
//! spaces written as `▁` (and one prepended to every stretch of text between special tokens when
//! `tokenizer.ggml.add_space_prefix`, which llama.cpp assumes when the key is missing), adjacent pieces merged
//! best-score first into vocabulary tokens, and what no token covers written as its bytes (`<0xNN>`). Control and
//! user-defined tokens (Gemma's `<start_of_turn>`, its runs of newlines and spaces, HTML tags) are matched whole
//! before any of that.
//!
//! A GGUF carries scores, not merges. `tokenizers`' BPE takes merges ranked best first, so every way of cutting a
//! token into two tokens becomes a merge ranked by the token's score, ties broken as transformers'
//! `generate_merges` does (longer left piece, then longer right piece, then token order): merging the best-ranked
//! adjacent pair each time is then llama.cpp's best-score-first loop.

use nano_vllm_bundle::gguf::{GgufFile, GgufValue};
use serde_json::json;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, Tokenizer};

use super::{Vocabulary, bos_post_processor};

pub(super) fn build(file: &GgufFile) -> Result<Tokenizer, String> {
    let vocabulary = Vocabulary::read(file)?;
    let tokens = &vocabulary.tokens;
    let scores: Vec<f32> = match file.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
        Some(s) => s
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32).ok_or("tokenizer.ggml.scores holds a non-number"))
            .collect::<Result<_, _>>()?,
        // llama.cpp reads a missing score as 0.
        None => vec![0.0; tokens.len()],
    };
    if scores.len() != tokens.len() {
        return Err(format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len()));
    }
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, &token) in tokens.iter().enumerate() {
        // A repeated string keeps its first id (llama.cpp's lookup finds that one too).
        vocab.entry(token.to_owned()).or_insert(id as u32);
    }
    let merges = merges(tokens, &scores, &vocab);
    let unk = file
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(GgufValue::as_u64)
        .and_then(|id| tokens.get(usize::try_from(id).ok()?))
        .map(|t| (*t).to_owned());
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        bpe = bpe.unk_token(unk);
    }
    let bpe = bpe.build().map_err(|e| format!("building the SentencePiece model from its vocabulary: {e}"))?;

    let prefix = file.get("tokenizer.ggml.add_space_prefix").and_then(GgufValue::as_bool).unwrap_or(true);
    let mut normalizer = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
    let mut decoder = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        normalizer.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
        decoder.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let normalizer: NormalizerWrapper = from_json(json!({"type": "Sequence", "normalizers": normalizer}))?;
    let decoder: DecoderWrapper = from_json(json!({"type": "Sequence", "decoders": decoder}))?;
    let post = bos_post_processor(file, tokens, true)?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(normalizer)).map_err(|e| e.to_string())?;
    tokenizer.with_decoder(Some(decoder));
    if !post.is_null() {
        tokenizer.with_post_processor(Some(from_json::<PostProcessorWrapper>(post)?));
    }
    let (special, plain): (Vec<AddedToken>, Vec<AddedToken>) = vocabulary
        .added()
        .map(|(_, token, special)| AddedToken::from(token, special).normalized(false))
        .partition(|t| t.special);
    tokenizer.add_special_tokens(special).map_err(|e| e.to_string())?;
    tokenizer.add_tokens(plain).map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("building the tokenizer: {e}"))
}

/// Every cut of a token into two tokens, best first (see the module docs).
fn merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    struct Merge<'a> {
        score: f32,
        left_chars: usize,
        right_chars: usize,
        order: (u32, u32, u32),
        pair: (&'a str, &'a str),
    }
    let mut all = Vec::new();
    for (id, &token) in tokens.iter().enumerate() {
        if vocab.get(token) != Some(&(id as u32)) {
            continue;
        }
        let chars = token.chars().count();
        for (k, (at, _)) in token.char_indices().skip(1).enumerate() {
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                all.push(Merge {
                    score: scores[id],
                    left_chars: k + 1,
                    right_chars: chars - k - 1,
                    order: (id as u32, l, r),
                    pair: (left, right),
                });
            }
        }
    }
    all.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
            .then(a.order.cmp(&b.order))
    });
    all.into_iter().map(|m| (m.pair.0.to_owned(), m.pair.1.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_cut_every_way_its_halves_are_tokens_best_score_first() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -0.5];
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
        let m = merges(&tokens, &scores, &vocab);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        // abc (-0.5): the longer left piece first; then ab (-1), then bc (-2).
        assert_eq!(m, [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")]);
    }
}
