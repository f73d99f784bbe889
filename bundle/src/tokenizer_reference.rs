//! `tokenizer_reference.json`: texts and the token ids Hugging Face tokenizers gives them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{BundleError, read_file};

/// The format version of tokenizer_reference.json this reader understands.
pub const TOKENIZER_REFERENCE_VERSION: u32 = 1;

/// Reference encodings of a bundle's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerReference {
    pub format_version: u32,
    /// The tokenizer file the ids come from (`tokenizer.json`).
    pub tokenizer: String,
    /// Whether `ids` were encoded with special tokens added (false: raw text tokens, no BOS/EOS).
    pub add_special_tokens: bool,
    /// Whether the tokenizer's default `encode` prepends BOS (informational; `ids` never contain it).
    pub default_adds_bos: bool,
    /// Whether the tokenizer's default `encode` appends EOS.
    pub default_adds_eos: bool,
    /// Whether special-token text inside the input (e.g. `<s>`) is matched as the special token, as HF does.
    pub special_tokens_in_text_are_matched: bool,
    pub cases: Vec<TokenizerCase>,
}

/// One text and its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerCase {
    /// Stable name, e.g. `cjk`, `emoji`, `empty`.
    pub name: String,
    pub text: String,
    pub ids: Vec<u32>,
    /// HF `decode(ids, skip_special_tokens=False)`.
    pub decoded: String,
}

impl TokenizerReference {
    /// Load and check `path`: format version, unique case names, ids below `vocab_size`.
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self, BundleError> {
        let bytes = read_file(path)?;
        Self::parse(path, &bytes, vocab_size)
    }

    /// As [`TokenizerReference::load`], from bytes; `path` is used in errors only.
    pub fn parse(path: &Path, bytes: &[u8], vocab_size: usize) -> Result<Self, BundleError> {
        let json = |source| BundleError::Json { path: path.to_path_buf(), source };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
        let found = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BundleError::field(path, "format_version", "missing or not an unsigned integer"))?;
        if found != u64::from(TOKENIZER_REFERENCE_VERSION) {
            return Err(BundleError::UnsupportedFormatVersion {
                path: path.to_path_buf(),
                found,
                supported: TOKENIZER_REFERENCE_VERSION,
            });
        }
        let reference: TokenizerReference = serde_json::from_value(value).map_err(json)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, case) in reference.cases.iter().enumerate() {
            if !names.insert(case.name.as_str()) {
                return Err(BundleError::field(
                    path,
                    format!("cases[{i}].name"),
                    format!("`{}` is not unique", case.name),
                ));
            }
            if let Some(id) = case.ids.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(BundleError::field(
                    path,
                    format!("cases[{i}].ids"),
                    format!("token id {id} is outside the vocabulary 0..{vocab_size}"),
                ));
            }
        }
        Ok(reference)
    }

    /// The case called `name`.
    pub fn case(&self, name: &str) -> Option<&TokenizerCase> {
        self.cases.iter().find(|c| c.name == name)
    }
}
