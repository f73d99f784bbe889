//! A GGUF model seen as a Hugging Face checkpoint: its [`HfConfig`] from the GGUF metadata, and its tensors by HF
//! name in HF layout, dequantized to f32. So a runtime that loads HF checkpoints loads a GGUF through the same code.
//!
//! The two layouts differ in names (`model.layers.N.self_attn.q_proj.weight` is `blk.N.attn_q.weight`), in the
//! rows of Llama's q and k projections (ggml rotates adjacent pairs where HF rotates halves, so llama.cpp's converter
//! permutes those rows; they are permuted back here), and in GPT-2's `Conv1D` weights (HF stores them `[in, out]`,
//! GGUF `[out, in]`).

use super::error::GgufError;
use super::file::{GgufFile, MappedBytes};
use super::ggml_type::GgmlType;
use crate::hf_config::{Activation, HfArchitecture, HfConfig, LayerExtras};

/// How a GGUF tensor becomes its HF counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    None,
    /// Llama q or k rows, with this many heads.
    Unpermute(usize),
    /// GPT-2 Conv1D: transpose.
    Transpose,
    /// Gemma's norms: stored `1 + w`, HF's `w`.
    MinusOne,
}

/// A GGUF file and the HF config it describes.
#[derive(Debug)]
pub struct GgufModel {
    pub file: GgufFile,
    pub config: HfConfig,
}

impl GgufModel {
    /// Opens a GGUF of a Llama, Qwen2 or GPT-2 model.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, GgufError> {
        let file = GgufFile::open(path)?;
        let config = config_of(&file)?;
        Ok(Self { file, config })
    }

    /// The tensor of HF name `hf_name`, in HF layout, checked to have `shape`.
    pub fn tensor(&self, hf_name: &str, shape: &[usize]) -> Result<Vec<f32>, GgufError> {
        let path = self.file.path().to_path_buf();
        let missing = || GgufError::MissingTensor { path: path.clone(), name: hf_name.to_owned() };
        let (name, transform) = gguf_name(&self.config, hf_name).ok_or_else(missing)?;
        let t = self
            .file
            .tensor(&name)
            .ok_or_else(|| GgufError::MissingTensor { path: path.clone(), name: name.clone() })?;
        let mut gguf_shape = t.shape();
        if transform == Transform::Transpose {
            gguf_shape.reverse();
        }
        if gguf_shape != shape {
            return Err(GgufError::Shape { path, name, expected: shape.to_vec(), actual: gguf_shape });
        }
        let data = self.file.dequantize(&name)?;
        Ok(match transform {
            Transform::None => data,
            Transform::MinusOne => data.into_iter().map(|v| v - 1.0).collect(),
            Transform::Unpermute(heads) => unpermute_rows(&data, t.shape()[0], heads),
            Transform::Transpose => {
                let (rows, cols) = (t.shape()[0], t.shape().get(1).copied().unwrap_or(1));
                let mut out = vec![0.0; data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        out[c * rows + r] = data[r * cols + c];
                    }
                }
                out
            }
        })
    }

    /// The matrix of HF name `hf_name` as stored: its blocks (mapped, not copied), in ggml's row layout, which for
    /// every dense layer is `[out, in]` like a torch `Linear` (GPT-2's `Conv1D` included). `shape` is that `[out, in]`
    /// (or `[n]`). Llama's q and k rows stay in ggml's order: `permuted_heads` says so, and a runtime that uses them
    /// rotates adjacent pairs (ggml's RoPE) instead of halves.
    pub fn stored(&self, hf_name: &str, shape: &[usize]) -> Result<StoredTensor, GgufError> {
        let path = self.file.path().to_path_buf();
        let (name, transform) = gguf_name(&self.config, hf_name)
            .ok_or_else(|| GgufError::MissingTensor { path: path.clone(), name: hf_name.to_owned() })?;
        let t = self
            .file
            .tensor(&name)
            .ok_or_else(|| GgufError::MissingTensor { path: path.clone(), name: name.clone() })?;
        if t.shape() != shape {
            return Err(GgufError::Shape { path, name, expected: shape.to_vec(), actual: t.shape() });
        }
        let cols = t.dims[0] as usize;
        let rows = t.shape().iter().rev().skip(1).product::<usize>();
        Ok(StoredTensor {
            name,
            ggml_type: t.ggml_type,
            rows,
            cols,
            bytes: self.file.mapped(t),
            permuted_heads: match transform {
                Transform::Unpermute(heads) => Some(heads),
                _ => None,
            },
        })
    }

    /// The values of the tensor of HF name `hf_name` as stored (ggml's order: Llama's q and k bias rows stay
    /// permuted), dequantized to f32; a type this reader does not dequantize is an error naming the tensor.
    pub fn stored_values(&self, hf_name: &str, shape: &[usize]) -> Result<Vec<f32>, GgufError> {
        let st = self.stored(hf_name, shape)?;
        self.file.dequantize(&st.name)
    }

    /// Whether the file has the tensor of HF name `hf_name`.
    pub fn contains(&self, hf_name: &str) -> bool {
        gguf_name(&self.config, hf_name).is_some_and(|(n, _)| self.file.tensor(&n).is_some())
    }
}

/// A tensor as the GGUF stores it (see [`GgufModel::stored`]).
#[derive(Debug, Clone)]
pub struct StoredTensor {
    /// Its GGUF name.
    pub name: String,
    pub ggml_type: GgmlType,
    /// Rows (every dimension but the innermost) and row length, in elements.
    pub rows: usize,
    pub cols: usize,
    pub bytes: MappedBytes,
    /// Llama q/k rows in ggml's order (adjacent-pair rotation), with this many heads.
    pub permuted_heads: Option<usize>,
}

/// Undoes llama.cpp's q/k permutation: within each head, ggml's row `2i + j` (pair `i`, half `j`) is HF's row
/// `j * half + i`. `data` is `[rows, cols]` (a bias is one column).
fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = data.len() / rows;
    let per_head = rows / heads;
    let half = per_head / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * per_head + 2 * i + j;
                let dst = h * per_head + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The GGUF name (and layout transform) of an HF tensor name.
fn gguf_name(c: &HfConfig, hf: &str) -> Option<(String, Transform)> {
    let gpt2 = c.architecture == HfArchitecture::Gpt2;
    let gemma = c.architecture == HfArchitecture::Gemma3;
    let norm = if gemma { Transform::MinusOne } else { Transform::None };
    let hf = if gpt2 { hf.strip_prefix("transformer.").unwrap_or(hf) } else { hf };
    let (stem, suffix) = hf.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let whole = |n: &str| Some((format!("{n}.{suffix}"), Transform::None));
    match stem {
        "model.embed_tokens" | "wte" => return whole("token_embd"),
        "wpe" => return whole("position_embd"),
        "model.norm" if gemma => return Some(("output_norm.weight".into(), norm)),
        "model.norm" | "ln_f" => return whole("output_norm"),
        "lm_head" => return whole("output"),
        _ => {}
    }
    let rest = stem.strip_prefix("model.layers.").or_else(|| stem.strip_prefix("h."))?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let is_weight = suffix == "weight";
    let permuted = c.architecture.gguf_permutes_qk();
    let (name, transform) = match part {
        "input_layernorm" | "ln_1" => ("attn_norm", norm),
        "post_attention_layernorm" if gemma => ("post_attention_norm", norm),
        "pre_feedforward_layernorm" if gemma => ("ffn_norm", norm),
        "post_feedforward_layernorm" if gemma => ("post_ffw_norm", norm),
        "post_attention_layernorm" | "ln_2" => ("ffn_norm", Transform::None),
        "self_attn.q_norm" => ("attn_q_norm", norm),
        "self_attn.k_norm" => ("attn_k_norm", norm),
        "self_attn.q_proj" if permuted => ("attn_q", Transform::Unpermute(c.num_heads)),
        "self_attn.k_proj" if permuted => ("attn_k", Transform::Unpermute(c.num_kv_heads)),
        "self_attn.q_proj" => ("attn_q", Transform::None),
        "self_attn.k_proj" => ("attn_k", Transform::None),
        "self_attn.v_proj" => ("attn_v", Transform::None),
        "self_attn.o_proj" => ("attn_output", Transform::None),
        "self_attn.qkv_proj" => ("attn_qkv", Transform::None),
        "mlp.gate_up_proj" => ("ffn_up", Transform::None),
        "mlp.gate_proj" => ("ffn_gate", Transform::None),
        "mlp.up_proj" => ("ffn_up", Transform::None),
        "mlp.down_proj" => ("ffn_down", Transform::None),
        "attn.c_attn" => ("attn_qkv", if is_weight { Transform::Transpose } else { Transform::None }),
        "attn.c_proj" => ("attn_output", if is_weight { Transform::Transpose } else { Transform::None }),
        "mlp.c_fc" => ("ffn_up", if is_weight { Transform::Transpose } else { Transform::None }),
        "mlp.c_proj" => ("ffn_down", if is_weight { Transform::Transpose } else { Transform::None }),
        _ => return None,
    };
    Some((format!("blk.{layer}.{name}.{suffix}"), transform))
}

/// The model's HF config, from the GGUF metadata and which tensors exist.
fn config_of(f: &GgufFile) -> Result<HfConfig, GgufError> {
    let arch = f.str("general.architecture")?.to_owned();
    let architecture = match arch.as_str() {
        "llama" => HfArchitecture::Llama,
        "qwen2" => HfArchitecture::Qwen2,
        "qwen3" => HfArchitecture::Qwen3,
        "gemma3" => HfArchitecture::Gemma3,
        "phi3" => HfArchitecture::Phi3,
        "gpt2" => HfArchitecture::Gpt2,
        _ => return Err(GgufError::UnsupportedArchitecture { path: f.path().into(), architecture: arch }),
    };
    let key = |k: &str| format!("{arch}.{k}");
    let positive = |k: &str| -> Result<usize, GgufError> {
        let v = f.u64(&key(k))?;
        if v == 0 || v > u32::MAX as u64 {
            return Err(GgufError::Metadata {
                path: f.path().into(),
                key: key(k),
                reason: format!("{v} is out of range"),
            });
        }
        Ok(v as usize)
    };
    let hidden_size = positive("embedding_length")?;
    let num_heads = positive("attention.head_count")?;
    let num_kv_heads = match f.get(&key("attention.head_count_kv")) {
        Some(_) => positive("attention.head_count_kv")?,
        None => num_heads,
    };
    let bad = |k: &str, reason: String| GgufError::Metadata { path: f.path().into(), key: key(k), reason };
    if num_heads % num_kv_heads != 0 {
        return Err(bad("attention.head_count_kv", format!("{num_kv_heads} does not divide {num_heads} heads")));
    }
    let head_dim = match f.get(&key("attention.key_length")) {
        Some(_) => positive("attention.key_length")?,
        None if hidden_size % num_heads == 0 => hidden_size / num_heads,
        None => return Err(bad("embedding_length", format!("{hidden_size} is not divisible by {num_heads} heads"))),
    };
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| GgufError::MissingTensor { path: f.path().into(), name: "token_embd.weight".into() })?;
    let vocab_size = match f.get(&key("vocab_size")) {
        Some(_) => positive("vocab_size")?,
        None => embd.shape()[0],
    };
    let gpt2 = architecture == HfArchitecture::Gpt2;
    let gemma = architecture == HfArchitecture::Gemma3;
    // A window as transformers applies it: Llama has none (the key is ignored), and 0 would hide every key.
    // llama.cpp ignores Phi-3's (its loader disables Phi SWA): a runtime on the file computes what llama.cpp does.
    let sliding_window = match f.get(&key("attention.sliding_window")).and_then(|v| v.as_u64()) {
        _ if matches!(architecture, HfArchitecture::Llama | HfArchitecture::Phi3) => None,
        Some(0) => {
            return Err(GgufError::Metadata {
                path: f.path().into(),
                key: key("attention.sliding_window"),
                reason: "0 would hide every key, the token's own too".into(),
            });
        }
        w => w.map(|v| v as usize),
    };
    let (rope_theta, norm_eps, activation) = if gpt2 {
        (None, f.f64(&key("attention.layer_norm_epsilon"))?, Activation::GeluTanh)
    } else {
        if head_dim % 2 != 0 {
            return Err(bad("attention.key_length", format!("head dimension {head_dim} must be even for RoPE")));
        }
        if head_dim > crate::hf_config::MAX_HEAD_DIM {
            let max = crate::hf_config::MAX_HEAD_DIM;
            return Err(bad(
                "attention.key_length",
                format!("head dimension {head_dim} is beyond any model (at most {max})"),
            ));
        }
        if let Some(dims) =
            f.get(&key("rope.dimension_count")).and_then(|v| v.as_u64()).filter(|&d| d as usize != head_dim)
        {
            return Err(GgufError::Unsupported {
                path: f.path().into(),
                what: format!(
                    "partial rotary embeddings ({} = {dims}, head dimension {head_dim})",
                    key("rope.dimension_count")
                ),
            });
        }
        if f.tensor("rope_factors_long.weight").is_some() || f.tensor("rope_factors_short.weight").is_some() {
            return Err(GgufError::Unsupported {
                path: f.path().into(),
                what: "LongRoPE (rope_factors_long / rope_factors_short: Phi-3 128k); llama-cpp runs it".into(),
            });
        }
        if let Some(kind) = f.get(&key("rope.scaling.type")).and_then(|v| v.as_str()).filter(|t| *t != "none") {
            return Err(GgufError::Unsupported { path: f.path().into(), what: format!("RoPE scaling '{kind}'") });
        }
        // llama.cpp's default base when the key is absent.
        let theta = match f.get(&key("rope.freq_base")) {
            Some(_) => f.f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let act = if gemma { Activation::GeluTanh } else { Activation::Silu };
        (Some(theta), f.f64(&key("attention.layer_norm_rms_epsilon"))?, act)
    };
    let num_layers = positive("block_count")?;
    if num_layers > crate::hf_config::MAX_LAYERS {
        let max = crate::hf_config::MAX_LAYERS;
        return Err(bad("block_count", format!("{num_layers} layers is beyond any model (at most {max})")));
    }
    // Llama 3.x's RoPE scaling, as llama.cpp's converter stores it: one divisor per frequency.
    let rope_freq_factors = match f.tensor("rope_freqs.weight") {
        None => None,
        Some(t) if t.shape() == [head_dim / 2] => {
            Some(f.dequantize("rope_freqs.weight")?.into_iter().map(f64::from).collect::<Vec<_>>())
        }
        Some(t) => {
            return Err(GgufError::Shape {
                path: f.path().into(),
                name: "rope_freqs.weight".into(),
                expected: vec![head_dim / 2],
                actual: t.shape(),
            });
        }
    };
    if let Some(bad) = rope_freq_factors.iter().flatten().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(GgufError::Metadata {
            path: f.path().into(),
            key: "rope_freqs.weight".into(),
            reason: format!("factor {bad} is not a positive number"),
        });
    }
    // llama.cpp's `gemma3`: every 6th layer global (`set_swa_pattern(6)`), the rest windowed, with a RoPE base of
    // 10,000 (`rope_freq_base_train_swa`).
    let full_attention_layers = if gemma && sliding_window.is_some() {
        (0..num_layers).filter(|i| (i + 1) % 6 == 0).collect()
    } else {
        Vec::new()
    };
    let extras = LayerExtras {
        qk_norm: matches!(architecture, HfArchitecture::Qwen3 | HfArchitecture::Gemma3),
        norm_unit_offset: gemma,
        sandwich_norms: gemma,
        embedding_scale: gemma.then(|| f64::from((hidden_size as f32).sqrt())),
        rope_local_theta: if gemma && rope_theta != Some(10_000.0) { Some(10_000.0) } else { None },
    };
    let has = |name: &str| f.tensor(name).is_some();
    let token = |k: &str| f.get(k).and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
    Ok(HfConfig {
        architecture,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size: positive("feed_forward_length")?,
        max_position_embeddings: positive("context_length")?,
        norm_eps,
        activation,
        rope_theta,
        rope_scaling: None,
        rope_freq_factors,
        tie_word_embeddings: !has("output.weight"),
        qkv_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
        sliding_window,
        full_attention_layers,
        attention_scale: 1.0 / (head_dim as f64).sqrt(),
        bos_token_id: token("tokenizer.ggml.bos_token_id"),
        eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
        extras,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpps_permutation() {
        // 2 heads of 4 rows, 1 column: HF rows 0..8. llama.cpp: per head, rows (0, 2, 1, 3) -> interleaved halves.
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let ggml: Vec<f32> = [0., 2., 1., 3., 4., 6., 5., 7.].to_vec();
        assert_eq!(unpermute_rows(&ggml, 8, 2), hf);
    }
}
