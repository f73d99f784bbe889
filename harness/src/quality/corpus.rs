//! A text corpus cut as llama.cpp's `llama-perplexity` cuts it: tokenized whole (no special tokens added), cut into
//! `len / ctx` chunks of `ctx` tokens (the rest dropped), and in each chunk the logits at positions
//! `ctx / 2 .. ctx - 2` scored against the next token: the second half, each token with at least `ctx / 2` tokens of
//! context. `fixtures/quality/make_perplexity.py` cuts the same way for transformers' reference.

use sha2::{Digest, Sha256};

/// The default corpus: `fixtures/corpus.txt`, text written for this project (public domain; see fixtures/README.md),
/// built into the binary.
pub const DEFAULT_CORPUS: &str = include_str!("../../../fixtures/corpus.txt");

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CorpusError {
    #[error("--ctx {ctx}: a chunk needs at least 4 tokens (2 of context, 2 scored)")]
    CtxTooSmall { ctx: usize },
    #[error("--ctx {ctx} is longer than the model's context ({context} positions)")]
    CtxBeyondModel { ctx: usize, context: usize },
    #[error("the corpus {name} tokenizes to {tokens} tokens, fewer than one chunk of --ctx {ctx}")]
    TooShort { name: String, tokens: usize, ctx: usize },
    #[error("the corpus {name} cannot be tokenized: {message}")]
    Tokenize { name: String, message: String },
    #[error(
        "the corpus {name} has token id {token}, outside the model's vocabulary ({vocab_size}): the tokenizer is not the model's"
    )]
    TokenOutOfRange { name: String, token: u32, vocab_size: usize },
    #[error("--chunks 0 scores nothing")]
    NoChunks,
}

/// The chunks a quality run scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// The file's name (or `fixtures/corpus.txt` for the built-in one).
    pub name: String,
    pub sha256: String,
    /// Tokens the whole text gave.
    pub tokens: usize,
    pub ctx: usize,
    pub chunks: Vec<Vec<u32>>,
    /// The first scored position of a chunk (`ctx / 2`).
    pub first_scored: usize,
}

impl Corpus {
    /// Cuts `text` tokenized by `tokenizer` into chunks of `ctx` tokens, at most `max_chunks` of them, for a model
    /// of `context` positions and `vocab_size` tokens.
    pub fn cut(
        name: &str,
        text: &str,
        tokenizer: &tokenizers::Tokenizer,
        ctx: usize,
        max_chunks: Option<usize>,
        (context, vocab_size): (usize, usize),
    ) -> Result<Self, CorpusError> {
        if ctx < 4 {
            return Err(CorpusError::CtxTooSmall { ctx });
        }
        if ctx > context {
            return Err(CorpusError::CtxBeyondModel { ctx, context });
        }
        if max_chunks == Some(0) {
            return Err(CorpusError::NoChunks);
        }
        let ids = tokenizer
            .encode(text, false)
            .map_err(|e| CorpusError::Tokenize { name: name.to_owned(), message: e.to_string() })?
            .get_ids()
            .to_vec();
        if let Some(&token) = ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(CorpusError::TokenOutOfRange { name: name.to_owned(), token, vocab_size });
        }
        let n = (ids.len() / ctx).min(max_chunks.unwrap_or(usize::MAX));
        if n == 0 {
            return Err(CorpusError::TooShort { name: name.to_owned(), tokens: ids.len(), ctx });
        }
        Ok(Self {
            name: name.to_owned(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            tokens: ids.len(),
            ctx,
            chunks: ids.chunks_exact(ctx).take(n).map(<[u32]>::to_vec).collect(),
            first_scored: ctx / 2,
        })
    }

    /// Tokens scored over all chunks.
    pub fn scored_tokens(&self) -> usize {
        self.chunks.len() * (self.ctx - 1 - self.first_scored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_cut_as_llama_perplexity_cuts_it() {
        let tokenizer =
            tokenizers::Tokenizer::from_file(nano_vllm_bundle::fixtures_dir().join("tiny-llama/tokenizer.json"))
                .unwrap();
        let c = Corpus::cut("corpus.txt", DEFAULT_CORPUS, &tokenizer, 256, None, (256, 512)).unwrap();
        // fixtures/quality/make_perplexity.py on the same files: 33 chunks of 256 (its perplexity_reference.json).
        assert_eq!((c.chunks.len(), c.first_scored, c.scored_tokens()), (33, 128, 33 * 127));
        assert_eq!(c.tokens / 256, 33);
        assert!(c.chunks.iter().all(|ch| ch.len() == 256));
        let two = Corpus::cut("corpus.txt", DEFAULT_CORPUS, &tokenizer, 256, Some(2), (256, 512)).unwrap();
        assert_eq!(two.chunks, c.chunks[..2]);
        let err = |ctx, chunks, model| Corpus::cut("c", "a b", &tokenizer, ctx, chunks, model).unwrap_err().to_string();
        assert_eq!(err(2, None, (256, 512)), "--ctx 2: a chunk needs at least 4 tokens (2 of context, 2 scored)");
        assert_eq!(err(300, None, (256, 512)), "--ctx 300 is longer than the model's context (256 positions)");
        assert!(err(8, None, (256, 512)).starts_with("the corpus c tokenizes to "), "{}", err(8, None, (256, 512)));
        assert_eq!(err(8, Some(0), (256, 512)), "--chunks 0 scores nothing");
        assert!(err(4, None, (256, 3)).contains("outside the model's vocabulary (3)"), "{}", err(4, None, (256, 3)));
    }
}
