//! `reference.safetensors`: reference prompts (token ids), the logits transformers computed at every prompt
//! position, and greedy continuations with the logits of every step.
//!
//! Tensor names, for each prompt `<name>` listed in the manifest:
//! `<name>.prompt_ids` I32 `[prompt_len]`, `<name>.prompt_logits` F32 `[prompt_len, vocab]`,
//! `<name>.greedy_tokens` I32 `[greedy_len]`, `<name>.greedy_logits` F32 `[greedy_len, vocab]`.
//! Row `i` of `greedy_logits` is the distribution `greedy_tokens[i]` was taken from, so row 0 equals the last
//! row of `prompt_logits`. Id tensors may also be I64.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{BundleError, read_file};
use crate::logits::Logits;
use crate::manifest::{Manifest, PromptInfo, PromptKind};

/// One reference prompt with its logits and greedy continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferencePrompt {
    pub name: String,
    pub kind: PromptKind,
    /// For [`PromptKind::SharedPrefix`]: how many leading tokens the group shares.
    pub shared_prefix_len: Option<usize>,
    pub prompt_ids: Vec<u32>,
    /// `[prompt_len][vocab]`: logits after each prompt position.
    pub prompt_logits: Logits,
    pub greedy_tokens: Vec<u32>,
    /// `[greedy_len][vocab]`: row `i` is the distribution `greedy_tokens[i]` was taken from.
    pub greedy_logits: Logits,
}

impl ReferencePrompt {
    /// The prompt followed by the greedy continuation except its last token: feeding this sequence in one
    /// forward pass (teacher forcing) yields logits for every reference row, see [`ReferencePrompt::all_logits`].
    pub fn teacher_forced_ids(&self) -> Vec<u32> {
        let keep = self.greedy_tokens.len().saturating_sub(1);
        self.prompt_ids.iter().chain(&self.greedy_tokens[..keep]).copied().collect()
    }

    /// Reference logits at every position of [`ReferencePrompt::teacher_forced_ids`]: the prompt rows, then
    /// greedy rows 1.. (greedy row 0 is the last prompt row).
    pub fn all_logits(&self) -> Logits {
        let vocab = self.prompt_logits.vocab();
        let mut data = self.prompt_logits.as_slice().to_vec();
        if self.greedy_logits.rows() > 1 {
            data.extend_from_slice(&self.greedy_logits.as_slice()[vocab..]);
        }
        Logits::new(vocab, data).expect("rows of equal width")
    }
}

/// All reference prompts of a bundle, in manifest order.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub vocab_size: usize,
    pub prompts: Vec<ReferencePrompt>,
}

impl Reference {
    /// Load `path` (a bundle's reference.safetensors) and check it against `manifest`: every listed prompt's four
    /// tensors present, dtypes and shapes as listed, token ids inside the vocabulary, shared prefixes shared.
    pub fn load(path: &Path, manifest: &Manifest) -> Result<Self, BundleError> {
        let bytes = read_file(path)?;
        Self::parse(path, &bytes, manifest)
    }

    /// As [`Reference::load`], from bytes; `path` is used in errors only.
    pub fn parse(path: &Path, bytes: &[u8], manifest: &Manifest) -> Result<Self, BundleError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|source| BundleError::Safetensors { path: path.to_path_buf(), source })?;
        let reader = Reader { path, st: &st, vocab: manifest.config.vocab_size };
        let prompts =
            manifest.reference.prompts.iter().map(|info| reader.prompt(info)).collect::<Result<Vec<_>, _>>()?;
        check_shared_prefixes(path, &prompts)?;
        Ok(Self { vocab_size: manifest.config.vocab_size, prompts })
    }

    /// The prompt called `name`.
    pub fn prompt(&self, name: &str) -> Option<&ReferencePrompt> {
        self.prompts.iter().find(|p| p.name == name)
    }

    /// Prompts of `kind`, in manifest order.
    pub fn of_kind(&self, kind: PromptKind) -> impl Iterator<Item = &ReferencePrompt> {
        self.prompts.iter().filter(move |p| p.kind == kind)
    }
}

struct Reader<'a> {
    path: &'a Path,
    st: &'a SafeTensors<'a>,
    vocab: usize,
}

impl Reader<'_> {
    fn prompt(&self, info: &PromptInfo) -> Result<ReferencePrompt, BundleError> {
        let n = &info.name;
        Ok(ReferencePrompt {
            name: n.clone(),
            kind: info.kind,
            shared_prefix_len: info.shared_prefix_len,
            prompt_ids: self.ids(&format!("{n}.prompt_ids"), info.prompt_len)?,
            prompt_logits: self.logits(&format!("{n}.prompt_logits"), info.prompt_len)?,
            greedy_tokens: self.ids(&format!("{n}.greedy_tokens"), info.greedy_len)?,
            greedy_logits: self.logits(&format!("{n}.greedy_logits"), info.greedy_len)?,
        })
    }

    fn view(&self, name: &str) -> Result<TensorView<'_>, BundleError> {
        self.st.tensor(name).map_err(|e| match e {
            safetensors::SafeTensorError::TensorNotFound(_) => {
                BundleError::MissingTensor { path: self.path.to_path_buf(), tensor: name.to_string() }
            }
            source => BundleError::Safetensors { path: self.path.to_path_buf(), source },
        })
    }

    fn check_shape(&self, name: &str, view: &TensorView<'_>, expected: &[usize]) -> Result<(), BundleError> {
        if view.shape() == expected {
            return Ok(());
        }
        Err(BundleError::TensorShape {
            path: self.path.to_path_buf(),
            tensor: name.to_string(),
            expected: format!("{expected:?}"),
            actual: view.shape().to_vec(),
        })
    }

    fn ids(&self, name: &str, len: usize) -> Result<Vec<u32>, BundleError> {
        let view = self.view(name)?;
        self.check_shape(name, &view, &[len])?;
        let raw: Vec<i64> = match view.dtype() {
            Dtype::I32 => {
                view.data().chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
            }
            Dtype::I64 => {
                view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect()
            }
            other => return Err(self.dtype_error(name, "I32 or I64", other)),
        };
        raw.into_iter()
            .map(|id| {
                u32::try_from(id).ok().filter(|&id| (id as usize) < self.vocab).ok_or_else(|| {
                    BundleError::InvalidTensor {
                        path: self.path.to_path_buf(),
                        tensor: name.to_string(),
                        reason: format!("token id {id} is outside the vocabulary 0..{}", self.vocab),
                    }
                })
            })
            .collect()
    }

    fn logits(&self, name: &str, rows: usize) -> Result<Logits, BundleError> {
        let view = self.view(name)?;
        self.check_shape(name, &view, &[rows, self.vocab])?;
        if view.dtype() != Dtype::F32 {
            return Err(self.dtype_error(name, "F32", view.dtype()));
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(BundleError::InvalidTensor {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                reason: format!("value {} at flat index {i} is not finite", data[i]),
            });
        }
        Logits::new(self.vocab, data).ok_or_else(|| BundleError::InvalidTensor {
            path: self.path.to_path_buf(),
            tensor: name.to_string(),
            reason: "length is not a multiple of the vocabulary".into(),
        })
    }

    fn dtype_error(&self, name: &str, expected: &str, actual: Dtype) -> BundleError {
        BundleError::TensorDtype {
            path: self.path.to_path_buf(),
            tensor: name.to_string(),
            expected: expected.to_string(),
            actual: format!("{actual:?}"),
        }
    }
}

/// Shared-prefix prompts must agree on their first `shared_prefix_len` tokens.
fn check_shared_prefixes(path: &Path, prompts: &[ReferencePrompt]) -> Result<(), BundleError> {
    let group: Vec<&ReferencePrompt> = prompts.iter().filter(|p| p.kind == PromptKind::SharedPrefix).collect();
    let Some(first) = group.first() else { return Ok(()) };
    for p in &group[1..] {
        let n = p.shared_prefix_len.unwrap_or(0).min(first.shared_prefix_len.unwrap_or(0));
        if p.prompt_ids[..n] != first.prompt_ids[..n] {
            return Err(BundleError::InvalidTensor {
                path: PathBuf::from(path),
                tensor: format!("{}.prompt_ids", p.name),
                reason: format!("does not share its first {n} tokens with `{}`", first.name),
            });
        }
    }
    Ok(())
}
