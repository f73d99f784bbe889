//! `manifest.json`: what a bundle holds, its model's shape, the reference prompts, the checksums of every other
//! file, and the tolerances parity checks use. Written by `fixtures/generate.py`; documented in
//! `fixtures/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::format::Format;

/// The manifest format version this reader understands.
pub const FORMAT_VERSION: u32 = 1;

/// The parsed `manifest.json` of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Bundle name, e.g. `tiny-llama`.
    pub name: String,
    /// `preset` (built from a seed by the generator), `hf_dir` (converted from a local checkpoint) or `gguf` (from a
    /// GGUF as shipped).
    pub origin: String,
    /// The preset name or the checkpoint directory it was made from.
    pub source: String,
    /// The command that regenerates the bundle.
    pub generator: String,
    pub seed: u64,
    pub architecture: Architecture,
    pub config: ModelConfig,
    /// Versions of python and the Python packages that generated the bundle.
    pub tools: BTreeMap<String, String>,
    /// Format key (see [`Format::key`]) -> file name in the bundle.
    pub formats: BTreeMap<String, String>,
    pub reference: ReferenceInfo,
    pub tokenizer_reference: TokenizerReferenceInfo,
    pub tolerances: Tolerances,
    /// Measured figures the tolerances were set from (free-form; see fixtures/README.md).
    pub measured: serde_json::Value,
    /// Every file of the bundle except manifest.json.
    pub files: Vec<FileEntry>,
}

/// Which model class the bundle holds, under each ecosystem's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Architecture {
    /// Hugging Face class, e.g. `LlamaForCausalLM`.
    pub hf_class: String,
    /// Hugging Face `model_type`: `llama`, `mistral`, `qwen2` or `gpt2`.
    pub model_type: String,
    /// GGUF `general.architecture`: `llama`, `qwen2` or `gpt2`.
    pub gguf: String,
}

/// The model's shape under names independent of the HF config class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Maximum positions (max_position_embeddings / n_positions).
    pub context_length: usize,
    /// RoPE base; `None` for learned positions (GPT-2).
    pub rope_theta: Option<f64>,
    /// `rms_norm` or `layer_norm`.
    pub norm: String,
    pub norm_eps: f64,
    /// HF activation name: `silu`, `gelu_new`, ...
    pub activation: String,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub parameters: u64,
}

/// The `reference` section: how reference.safetensors was made and which prompts it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    pub file: String,
    /// dtype of `<name>.prompt_ids` and `<name>.greedy_tokens` (`I32`; the reader also accepts `I64`).
    pub prompt_ids_dtype: String,
    pub logits_dtype: String,
    /// How the greedy continuation was computed.
    pub greedy: String,
    /// Every top-2 logit gap in the reference is at least this.
    pub min_top2_gap_required: f64,
    pub prompts: Vec<PromptInfo>,
}

/// What a reference prompt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// One token.
    Single,
    /// A few tokens.
    Short,
    /// Near the context limit (prompt + continuation fits the context).
    Long,
    /// One of a group sharing their first `shared_prefix_len` tokens.
    SharedPrefix,
}

/// One reference prompt as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptInfo {
    pub name: String,
    pub kind: PromptKind,
    pub prompt_len: usize,
    pub greedy_len: usize,
    /// For [`PromptKind::SharedPrefix`]: the length of the prefix the group shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix_len: Option<usize>,
    /// Smallest gap between the two largest logits over this prompt's reference rows.
    pub min_top2_gap: f64,
    /// Corpus tokens the generator replaced to keep every top-2 gap above the threshold.
    #[serde(default)]
    pub substituted_tokens: usize,
}

/// The `tokenizer_reference` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerReferenceInfo {
    pub file: String,
    pub cases: usize,
    pub add_special_tokens: bool,
}

/// Tolerances of the parity checks, set by the generator from measured figures (see `measured`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tolerances {
    /// Any float32 runtime against the reference logits.
    pub f32: LogitTolerance,
    /// Q8_0 runtimes, teacher forced on the reference tokens.
    pub q8_0: Q8Tolerance,
    /// Q4_0 weights (`native:q4_0`: every matrix a Q4_0 GGUF quantizes), teacher forced.
    pub q4_0: Q8Tolerance,
    /// llama.cpp running `model.f32.gguf`, where it differs from `f32` (GPT-2: ggml's f16 GELU table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama_cpp_f32: Option<LogitTolerance>,
    /// The shipped GGUF run as stored (quantized kernels), teacher forced: a bundle made with `--from-gguf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped: Option<Q8Tolerance>,
    /// Dense matrices stored as f16 (`native:f16`), teacher forced (bundles from generators before it: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f16: Option<Q8Tolerance>,
    /// Dense matrices stored as bf16 (`native:bf16`), teacher forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16: Option<Q8Tolerance>,
    /// llama.cpp's defaults on `model.f32.gguf` (`llama-cpp:defaults`: F16 KV cache, flash attention with its f16
    /// accumulator), teacher forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama_cpp_defaults: Option<Q8Tolerance>,
    /// llama.cpp's K-quant mixes of `model.f32.gguf` (`q2_k`, `q3_k_m`, `q4_k_m`, `q5_k_m`, `q6_k`: `native:<mix>`,
    /// `llama-cpp:<mix>`), each emulated in torch by the generator (its quantizers, type plan and input rounding),
    /// teacher forced; by option name. Bundles from generators before it: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mixes: BTreeMap<String, MixTolerance>,
}

/// The tolerance of one of llama.cpp's mixes, and the type of every tensor in the file it was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixTolerance {
    #[serde(flatten)]
    pub tolerance: Q8Tolerance,
    /// GGUF tensor name -> ggml type name (`Q4_K`, `Q8_0`, `F32`, ...), as the generator emulated llama.cpp's choice:
    /// a file whose types differ is another model than the one measured (`MixTolerance::type_differences`).
    pub tensor_types: BTreeMap<String, String>,
}

impl MixTolerance {
    /// The mixes a manifest may hold (`tolerances.mixes` keys): llama.cpp's K-quant file types the generator emulates.
    pub const MIXES: [&'static str; 5] = ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k"];

    /// Where a file's tensors (name, type name) differ from the plan the tolerance was measured on, tensors missing on
    /// either side included; empty when they agree.
    pub fn type_differences<'a>(&self, file: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<TypeDifference> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (name, ty) in file {
            seen.insert(name);
            let emulated = self.tensor_types.get(name).cloned();
            if emulated.as_deref() != Some(ty) {
                out.push(TypeDifference { tensor: name.to_owned(), file: Some(ty.to_owned()), emulated });
            }
        }
        for (name, want) in &self.tensor_types {
            if !seen.contains(name.as_str()) {
                out.push(TypeDifference { tensor: name.clone(), file: None, emulated: Some(want.clone()) });
            }
        }
        out
    }
}

/// A tensor whose type in a mix file is not the one its tolerance was measured on (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDifference {
    pub tensor: String,
    pub file: Option<String>,
    pub emulated: Option<String>,
}

impl std::fmt::Display for TypeDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |t: &Option<String>| t.as_deref().unwrap_or("absent").to_owned();
        write!(f, "{}: {} in the file, {} in the emulation", self.tensor, side(&self.file), side(&self.emulated))
    }
}

impl Tolerances {
    /// The tolerance for llama.cpp on the f32 GGUF: the override when the manifest has one, else `f32`.
    pub fn llama_cpp_f32(&self) -> &LogitTolerance {
        self.llama_cpp_f32.as_ref().unwrap_or(&self.f32)
    }
}

/// Element-wise logits tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitTolerance {
    /// Largest allowed |runtime - reference| over every logit.
    pub max_abs_diff: f32,
    /// Fraction of rows whose argmax must equal the reference's.
    pub argmax_agreement: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Distribution-level tolerance for quantized weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Q8Tolerance {
    /// Largest allowed mean over rows of KL(reference || runtime), natural log.
    pub max_mean_kl: f64,
    /// Smallest allowed fraction of rows whose argmax equals the reference's.
    pub min_top1_agreement: f64,
    #[serde(default)]
    pub basis: String,
    /// Mean KL between two exact implementations of this quantized model that differ only in f32 summation order
    /// (measured in torch: float32 vs float64, the same rounding). Activation rounding makes a deep model sensitive
    /// to it, so it is the floor of how closely two correct runtimes on the same file can agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_floor_kl: Option<f64>,
    /// Largest allowed |runtime - reference| over every teacher-forced logit, where the setting's error is small
    /// enough to bound element-wise (f16 and bf16 weights, an f16 KV cache); absent for quantized weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f32>,
}

/// A file of the bundle with its size and sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name relative to the bundle directory.
    pub path: String,
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

impl Manifest {
    /// Parse and validate manifest bytes; `path` is used in errors only.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, BundleError> {
        let json = |source| BundleError::Json { path: path.to_path_buf(), source };
        // The version is checked before the fields, so a newer format reports its version, not a field error.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
        let found = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BundleError::field(path, "format_version", "missing or not an unsigned integer"))?;
        if found != u64::from(FORMAT_VERSION) {
            return Err(BundleError::UnsupportedFormatVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(json)?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// The file entry for `name`, if listed.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == name)
    }

    /// The file name of `format`. Validation guarantees every [`Format::ALL`] entry is present.
    pub fn format_file(&self, format: Format) -> Option<&str> {
        self.formats.get(format.key()).map(String::as_str)
    }

    /// The listed prompt called `name`.
    pub fn prompt(&self, name: &str) -> Option<&PromptInfo> {
        self.reference.prompts.iter().find(|p| p.name == name)
    }

    fn validate(&self, path: &Path) -> Result<(), BundleError> {
        let bad = |field: String, reason: String| Err(BundleError::field(path, field, reason));
        let mut seen = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            if !is_plain_file_name(&f.path) || f.path == "manifest.json" {
                return bad(format!("files[{i}].path"), format!("`{}` is not a file name inside the bundle", f.path));
            }
            if !seen.insert(f.path.as_str()) {
                return bad(format!("files[{i}].path"), format!("`{}` is listed twice", f.path));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return bad(format!("files[{i}].sha256"), format!("`{}` is not 64 lower-case hex digits", f.sha256));
            }
        }
        for format in Format::ALL {
            match self.format_file(format) {
                None => return bad(format!("formats.{}", format.key()), "missing".into()),
                Some(name) if !seen.contains(name) => {
                    return bad(format!("formats.{}", format.key()), format!("`{name}` is not listed in `files`"));
                }
                Some(_) => {}
            }
        }
        for format in Format::OPTIONAL {
            if let Some(name) = self.format_file(format).filter(|n| !seen.contains(n)) {
                return bad(format!("formats.{}", format.key()), format!("`{name}` is not listed in `files`"));
            }
        }
        if let Some(mix) = self.tolerances.mixes.keys().find(|m| !MixTolerance::MIXES.contains(&m.as_str())) {
            return bad(
                format!("tolerances.mixes.{mix}"),
                format!("not one of llama.cpp's mixes the generator emulates ({})", MixTolerance::MIXES.join(", ")),
            );
        }
        if self.format_file(Format::GgufShipped).is_some() != self.tolerances.shipped.is_some() {
            return bad("tolerances.shipped".into(), "a shipped GGUF and its tolerance come together".into());
        }
        if self.reference.file != self.formats[Format::Reference.key()] {
            return bad("reference.file".into(), "differs from formats.reference".into());
        }
        if self.tokenizer_reference.file != self.formats[Format::TokenizerReference.key()] {
            return bad("tokenizer_reference.file".into(), "differs from formats.tokenizer_reference".into());
        }
        let c = &self.config;
        if c.vocab_size == 0 || c.num_layers == 0 || c.num_heads == 0 || c.num_kv_heads == 0 || c.head_dim == 0 {
            return bad(
                "config".into(),
                "vocab_size, num_layers, num_heads, num_kv_heads, head_dim must be > 0".into(),
            );
        }
        if !c.num_heads.is_multiple_of(c.num_kv_heads) {
            return bad(
                "config.num_kv_heads".into(),
                format!("{} does not divide num_heads {}", c.num_kv_heads, c.num_heads),
            );
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.reference.prompts.iter().enumerate() {
            let field = |f: &str| format!("reference.prompts[{i}].{f}");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return bad(field("name"), format!("`{}` is empty or not unique", p.name));
            }
            if p.prompt_len == 0 {
                return bad(field("prompt_len"), "must be > 0".into());
            }
            if p.prompt_len + p.greedy_len > c.context_length {
                return bad(
                    field("prompt_len"),
                    format!("prompt + continuation exceed context_length {}", c.context_length),
                );
            }
            match (p.kind, p.shared_prefix_len) {
                (PromptKind::SharedPrefix, Some(n)) if n > 0 && n <= p.prompt_len => {}
                (PromptKind::SharedPrefix, _) => {
                    return bad(field("shared_prefix_len"), "missing or out of range".into());
                }
                (_, Some(_)) => return bad(field("shared_prefix_len"), "only shared_prefix prompts have one".into()),
                (_, None) => {}
            }
        }
        Ok(())
    }
}

/// A single path component: no separators, not `.` or `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']) && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_file_is_checked_against_the_types_it_was_measured_on() {
        let tolerance = MixTolerance {
            tolerance: Q8Tolerance {
                max_mean_kl: 0.5,
                min_top1_agreement: 0.5,
                basis: String::new(),
                order_floor_kl: None,
                max_abs_diff: None,
            },
            tensor_types: [("a.weight", "Q4_K"), ("b.weight", "Q6_K"), ("c.weight", "F32")]
                .map(|(n, t)| (n.to_owned(), t.to_owned()))
                .into(),
        };
        let same = [("a.weight", "Q4_K"), ("b.weight", "Q6_K"), ("c.weight", "F32")];
        assert!(tolerance.type_differences(same).is_empty());
        let other = [("a.weight", "Q4_K"), ("b.weight", "Q4_K"), ("d.weight", "F32")];
        assert_eq!(
            tolerance.type_differences(other).iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "b.weight: Q4_K in the file, Q6_K in the emulation",
                "d.weight: F32 in the file, absent in the emulation",
                "c.weight: absent in the file, F32 in the emulation",
            ]
        );
    }
}
