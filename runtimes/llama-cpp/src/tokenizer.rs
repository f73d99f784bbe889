//! The GGUF's own tokenizer (llama.cpp's `llama_tokenize` / `llama_detokenize` over `tokenizer.ggml.*`), for
//! tokenizer conformance against the bundle's Hugging Face reference and for callers that want llama.cpp's ids.

use llama_cpp_2::token::LlamaToken;

use crate::error::LlamaCppError;
use crate::runtime::LlamaCppRuntime;

/// Longest text accepted (llama.cpp counts in `i32` and sizes its output from the input length).
pub const MAX_TEXT_BYTES: usize = 1 << 28;

impl LlamaCppRuntime {
    /// Token ids of `text`, never adding BOS or EOS. With `parse_special`, special-token text in the input (`<s>`)
    /// becomes the special token, as Hugging Face tokenizers do; without, it is tokenized as plain text.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlamaCppError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(LlamaCppError::Tokenize(format!(
                "text of {} bytes is longer than {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        let tokens = self.session().model().vocab().tokenize(text.as_bytes(), false, parse_special);
        Ok(tokens.into_iter().map(|t| t.0 as u32).collect())
    }

    /// The text of `ids`, special tokens rendered (`<s>`), nothing removed. Invalid UTF-8 (a token sequence that cuts
    /// a character) is replaced by U+FFFD.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, LlamaCppError> {
        let vocab_size = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(LlamaCppError::Tokenize(format!("token id {id} is outside the vocabulary of {vocab_size}")));
        }
        let tokens: Vec<LlamaToken> = ids.iter().map(|&id| LlamaToken(id as i32)).collect();
        let bytes = self.session().model().vocab().detokenize(&tokens, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
