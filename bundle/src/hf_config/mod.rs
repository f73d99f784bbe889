//! A Hugging Face `config.json`, read into what a runtime needs to build the model: the architecture and its
//! dimensions, norms, activation, RoPE (with Llama-3 scaling) and head tying, and what Qwen3 and Gemma 3 add to the
//! Llama layer ([`LayerExtras`]: QK-norm, Gemma's `1 + w` norms around both blocks, scaled embeddings, their own RoPE
//! base for sliding-window layers).
//!
//! transformers 5 writes `"rope_parameters": {"rope_theta": ...}` and no top-level `rope_theta`; older checkpoints
//! have the top-level key. Both are read, and a RoPE model with neither is an error rather than a silent default.

use std::path::Path;

use serde_json::Value;

use crate::error::{BundleError, read_file};

mod beyond_gguf;
mod window;

/// The widest attention head a config may ask for (today's models: 64 to 256). Beyond it a config is an error rather
/// than a RoPE table or KV sizes computed from a number nobody meant.
pub const MAX_HEAD_DIM: usize = 1 << 16;
/// The most layers a config may ask for (today's models: up to about 130), for the same reason: per-layer tables.
pub const MAX_LAYERS: usize = 1 << 16;

/// The architectures the runtimes implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HfArchitecture {
    Llama,
    Mistral,
    Qwen2,
    /// Qwen3: Qwen2 without q/k/v biases, with QK-norm and an explicit head dimension.
    Qwen3,
    /// Gemma 3 (text): see [`LayerExtras`].
    Gemma3,
    /// Phi-3: the Llama layer with q/k/v and gate/up stored fused (`qkv_proj`, `gate_up_proj`).
    Phi3,
    Gpt2,
}

impl HfArchitecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
            Self::Gpt2 => "gpt2",
        }
    }

    /// Whether llama.cpp's converter permutes the q and k rows of this architecture's GGUF (its `llama` layout,
    /// rotated in adjacent pairs); the others keep Hugging Face's rows and rotate halves (NEOX).
    pub fn gguf_permutes_qk(self) -> bool {
        matches!(self, Self::Llama | Self::Mistral)
    }
}

/// What Qwen3 and Gemma 3 add to a Llama-style layer; all off for Llama, Mistral, Qwen2 and GPT-2.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerExtras {
    /// RMSNorm of each query and key head (`q_norm`, `k_norm`, `head_dim` weights) before RoPE.
    pub qk_norm: bool,
    /// RMSNorm weights are offsets from 1: `x * (1 + w)` (Gemma). A GGUF stores `1 + w` (llama.cpp's converter adds
    /// the 1); [`crate::gguf::GgufModel::tensor`] gives back `w`, as transformers does.
    pub norm_unit_offset: bool,
    /// Norms on the attention and MLP outputs too, before their residual adds (Gemma 2/3's
    /// `post_attention_layernorm`, `post_feedforward_layernorm`; the MLP's input norm is `pre_feedforward_layernorm`).
    pub sandwich_norms: bool,
    /// Token embeddings multiplied by this (Gemma: `sqrt(hidden_size)`, rounded to f32 as transformers does).
    pub embedding_scale: Option<f64>,
    /// The RoPE base of the sliding-window layers where it differs from `rope_theta` (Gemma 3: 10,000 locally,
    /// 1,000,000 globally).
    pub rope_local_theta: Option<f64>,
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU, in a gated (SwiGLU) MLP.
    Silu,
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact (erf).
    Gelu,
}

/// Llama-3 style RoPE frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// A model's `config.json`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub architecture: HfArchitecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon (Llama family) or LayerNorm epsilon (GPT-2).
    pub norm_eps: f64,
    pub activation: Activation,
    /// `None` for learned positions (GPT-2).
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Per-frequency divisors of the RoPE inverse frequencies (`head_dim / 2`), as a GGUF's `rope_freqs` tensor
    /// carries Llama 3.x's scaling (llama.cpp divides each frequency by its factor); never from a `config.json`.
    pub rope_freq_factors: Option<Vec<f64>>,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2, or `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (`attention_bias` on Llama; always on GPT-2).
    pub o_bias: bool,
    /// Biases on the MLP projections (`mlp_bias`; always on GPT-2).
    pub mlp_bias: bool,
    /// Attention looks back at most this many positions (Mistral's `sliding_window`), if set, in every layer but
    /// `full_attention_layers`.
    pub sliding_window: Option<usize>,
    /// Layers that attend to the whole context although `sliding_window` is set (Qwen2's layers below
    /// `max_window_layers`, `full_attention` entries of `layer_types`), ascending; empty without a window.
    pub full_attention_layers: Vec<usize>,
    /// The factor on `q . k` before the softmax: `1 / sqrt(head_dim)`, or 1 for GPT-2 with
    /// `scale_attn_weights: false`.
    pub attention_scale: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Qwen3's and Gemma 3's additions to the layer.
    pub extras: LayerExtras,
}

struct Reader<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Reader<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> BundleError {
        BundleError::field(self.path, field, reason)
    }
    fn opt_usize(&self, field: &str) -> Result<Option<usize>, BundleError> {
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(field, format!("expected a non-negative integer, got {x}"))),
        }
    }
    fn usize(&self, field: &str) -> Result<usize, BundleError> {
        self.opt_usize(field)?.ok_or_else(|| self.err(field, "missing"))
    }
    fn positive(&self, field: &str) -> Result<usize, BundleError> {
        let n = self.usize(field)?;
        if n == 0 {
            return Err(self.err(field, "must be at least 1"));
        }
        Ok(n)
    }
    /// A layer count, at most [`MAX_LAYERS`].
    fn layers(&self, field: &str) -> Result<usize, BundleError> {
        let n = self.positive(field)?;
        if n > MAX_LAYERS {
            return Err(self.err(field, format!("{n} layers is beyond any model (at most {MAX_LAYERS})")));
        }
        Ok(n)
    }
    fn opt_f64(&self, field: &str) -> Result<Option<f64>, BundleError> {
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| self.err(field, format!("expected a number, got {x}"))),
        }
    }
    /// `vocab_size`: token ids are 32-bit everywhere (the engine, the runtimes, GGUF), so at most 2^32.
    fn vocab_size(&self) -> Result<usize, BundleError> {
        let v = self.positive("vocab_size")?;
        if v as u64 > u64::from(u32::MAX) + 1 {
            return Err(self.err("vocab_size", format!("{v} exceeds 2^32 (token ids are 32-bit)")));
        }
        Ok(v)
    }
    fn bool_or(&self, field: &str, default: bool) -> Result<bool, BundleError> {
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(x) => Err(self.err(field, format!("expected true or false, got {x}"))),
        }
    }
    fn token_ids(&self, field: &str) -> Result<Vec<u32>, BundleError> {
        let bad = || self.err(field, "expected a token id or a list of them");
        match self.v.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().map(|n| n as u32).ok_or_else(bad)).collect(),
            Some(x) => x.as_u64().map(|n| vec![n as u32]).ok_or_else(bad),
        }
    }
}

impl HfConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BundleError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|source| BundleError::Json { path: path.into(), source })?;
        Self::from_json(path, &v)
    }

    /// Reads the `config.json` of a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        Self::from_file(dir.as_ref().join("config.json"))
    }

    /// Parses a config already read; `path` names it in errors.
    pub fn from_json(path: &Path, v: &Value) -> Result<Self, BundleError> {
        let r = Reader { path, v };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let architecture = match model_type {
            "llama" => HfArchitecture::Llama,
            "mistral" => HfArchitecture::Mistral,
            "qwen2" => HfArchitecture::Qwen2,
            "qwen3" => HfArchitecture::Qwen3,
            "gemma3_text" => HfArchitecture::Gemma3,
            "phi3" => HfArchitecture::Phi3,
            "gpt2" => HfArchitecture::Gpt2,
            "" => return Err(r.err("model_type", "missing")),
            "gemma3" => {
                return Err(r.err(
                    "model_type",
                    "'gemma3' is the multimodal Gemma3ForConditionalGeneration; its text model (model_type \
                     'gemma3_text', Gemma3ForCausalLM: the 270M and 1B checkpoints, or a GGUF) is supported",
                ));
            }
            other => {
                return Err(r.err(
                    "model_type",
                    format!(
                        "architecture '{other}' is not supported (supported: llama, mistral, qwen2, qwen3, \
                         gemma3_text, phi3, gpt2); llama.cpp runs many more from a GGUF (--runtime llama-cpp)"
                    ),
                ));
            }
        };
        let gemma = architecture == HfArchitecture::Gemma3;
        if architecture == HfArchitecture::Gpt2 {
            return Self::gpt2(&r);
        }
        let hidden_size = r.positive("hidden_size")?;
        let num_heads = r.positive("num_attention_heads")?;
        let num_kv_heads = r.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(r.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads ({num_heads})"),
            ));
        }
        let head_dim = match r.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => return Err(r.err("hidden_size", format!("{hidden_size} is not divisible by {num_heads} heads"))),
        };
        if head_dim % 2 != 0 {
            return Err(r.err("head_dim", format!("{head_dim} must be even for RoPE")));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(r.err("head_dim", format!("{head_dim} is beyond any model (at most {MAX_HEAD_DIM})")));
        }
        let mut rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        // Gemma 3 (transformers 5): one entry per layer type; older configs: `rope_local_base_freq`.
        let mut rope_local_theta =
            if gemma { Some(r.opt_f64("rope_local_base_freq")?.unwrap_or(10_000.0)) } else { None };
        if let Some(per_type) = rope_params.filter(|p| p.get("full_attention").is_some()) {
            rope_params = per_type.get("full_attention").filter(|p| p.is_object());
            rope_local_theta =
                per_type.get("sliding_attention").and_then(|p| p.get("rope_theta")).and_then(Value::as_f64);
        }
        let rope_theta =
            match (rope_params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64), r.opt_f64("rope_theta")?) {
                (Some(t), _) | (None, Some(t)) => t,
                (None, None) => {
                    return Err(r.err("rope_theta", "missing (neither rope_parameters.rope_theta nor rope_theta)"));
                }
            };
        let rope_scaling = Self::rope_scaling(&r, rope_params.or(v.get("rope_scaling")))?;
        if let Some(f) = r.opt_f64("partial_rotary_factor")?.filter(|&f| f != 1.0) {
            return Err(r.err(
                "partial_rotary_factor",
                format!("{f}: rotating part of each head (Phi-4-mini) is not supported; run it with llama-cpp"),
            ));
        }
        let (act_field, default_act) =
            if gemma { ("hidden_activation", "gelu_pytorch_tanh") } else { ("hidden_act", "silu") };
        let activation = match v.get(act_field).and_then(Value::as_str).unwrap_or(default_act) {
            "silu" | "swish" if !gemma => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" if gemma => Activation::GeluTanh,
            other => {
                return Err(r.err(act_field, format!("'{other}' is not supported for {model_type} ({default_act})")));
            }
        };
        for field in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if r.opt_f64(field)?.is_some() {
                return Err(r.err(field, "logit soft-capping (Gemma 2) is not supported; run it with llama-cpp"));
            }
        }
        let attention_bias = r.bool_or("attention_bias", false)?;
        let num_layers = r.layers("num_hidden_layers")?;
        let window = window::sliding_window(&r, architecture, num_layers)?;
        Ok(Self {
            architecture,
            vocab_size: r.vocab_size()?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size: r.positive("intermediate_size")?,
            max_position_embeddings: r.positive("max_position_embeddings")?,
            norm_eps: r.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            activation,
            rope_theta: Some(rope_theta),
            rope_scaling,
            rope_freq_factors: None,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", gemma)?,
            qkv_bias: architecture == HfArchitecture::Qwen2 || attention_bias,
            o_bias: architecture != HfArchitecture::Qwen2 && attention_bias,
            mlp_bias: r.bool_or("mlp_bias", false)?,
            sliding_window: window.size,
            full_attention_layers: window.full_layers,
            // Gemma: `query_pre_attn_scalar ** -0.5` (the 270M and 1B models: head_dim).
            attention_scale: match r.opt_f64("query_pre_attn_scalar")? {
                Some(s) if gemma && s > 0.0 => 1.0 / s.sqrt(),
                Some(_) if gemma => return Err(r.err("query_pre_attn_scalar", "must be positive")),
                _ => 1.0 / (head_dim as f64).sqrt(),
            },
            bos_token_id: r.opt_usize("bos_token_id")?.map(|n| n as u32),
            eos_token_ids: r.token_ids("eos_token_id")?,
            extras: LayerExtras {
                qk_norm: matches!(architecture, HfArchitecture::Qwen3 | HfArchitecture::Gemma3),
                norm_unit_offset: gemma,
                sandwich_norms: gemma,
                embedding_scale: gemma.then(|| f64::from((hidden_size as f32).sqrt())),
                rope_local_theta: rope_local_theta.filter(|&t| t != rope_theta),
            },
        })
    }

    fn gpt2(r: &Reader<'_>) -> Result<Self, BundleError> {
        let hidden_size = r.positive("n_embd")?;
        let num_heads = r.positive("n_head")?;
        if hidden_size % num_heads != 0 {
            return Err(r.err("n_embd", format!("{hidden_size} is not divisible by n_head ({num_heads})")));
        }
        let activation = match r.v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => return Err(r.err("activation_function", format!("'{other}' is not supported for gpt2"))),
        };
        for variant in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
            if r.bool_or(variant, false)? {
                return Err(r.err(variant, "true: this GPT-2 attention variant is not supported"));
            }
        }
        let head_dim = hidden_size / num_heads;
        // transformers: `scaling = head_dim ** -0.5 if scale_attn_weights else 1.0`.
        let attention_scale = if r.bool_or("scale_attn_weights", true)? { 1.0 / (head_dim as f64).sqrt() } else { 1.0 };
        Ok(Self {
            architecture: HfArchitecture::Gpt2,
            vocab_size: r.vocab_size()?,
            hidden_size,
            num_layers: r.layers("n_layer")?,
            num_heads,
            num_kv_heads: num_heads,
            head_dim,
            intermediate_size: r.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
            max_position_embeddings: r.positive("n_positions")?,
            norm_eps: r.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
            activation,
            rope_theta: None,
            rope_scaling: None,
            rope_freq_factors: None,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", true)?,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            sliding_window: None,
            full_attention_layers: Vec::new(),
            attention_scale,
            bos_token_id: r.opt_usize("bos_token_id")?.map(|n| n as u32),
            eos_token_ids: r.token_ids("eos_token_id")?,
            extras: LayerExtras::default(),
        })
    }

    fn rope_scaling(r: &Reader<'_>, s: Option<&Value>) -> Result<Option<Llama3RopeScaling>, BundleError> {
        let Some(s) = s.filter(|s| s.is_object()) else { return Ok(None) };
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
        match kind {
            "default" => Ok(None),
            "llama3" => {
                let num = |k: &str| {
                    s.get(k)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| r.err(&format!("rope_scaling.{k}"), "missing or not a number"))
                };
                Ok(Some(Llama3RopeScaling {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
                }))
            }
            other => Err(r.err("rope_scaling", format!("rope type '{other}' is not supported (default, llama3)"))),
        }
    }

    /// The attention window of layer `layer` (`None`: the whole context).
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.full_attention_layers.binary_search(&layer).is_err())
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// f32 bytes of keys and values per token, all layers (`usize::MAX` where that overflows: no pool fits it).
    pub fn kv_bytes_per_token_f32(&self) -> usize {
        [self.num_layers, self.num_kv_heads, self.head_dim, 4].iter().fold(2usize, |a, &b| a.saturating_mul(b))
    }

    /// RoPE inverse frequencies of the sliding-window layers where their base differs ([`LayerExtras`]), unscaled.
    pub fn rope_local_inv_freq(&self) -> Option<Vec<f64>> {
        self.extras.rope_local_theta.map(|theta| Self::inv_freq(theta, self.head_dim))
    }

    fn inv_freq(theta: f64, d: usize) -> Vec<f64> {
        (0..d / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64)).collect()
    }

    /// RoPE inverse frequencies (`head_dim / 2` of them), with Llama-3 scaling applied, as transformers computes them
    /// (or divided by a GGUF's `rope_freqs` factors, as llama.cpp does).
    pub fn rope_inv_freq(&self) -> Option<Vec<f64>> {
        let theta = self.rope_theta?;
        let d = self.head_dim;
        let mut inv = Self::inv_freq(theta, d);
        if let Some(s) = self.rope_scaling {
            let low_wavelen = s.original_max_position_embeddings as f64 / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings as f64 / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (s.original_max_position_embeddings as f64 / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        if let Some(factors) = &self.rope_freq_factors {
            for (f, factor) in inv.iter_mut().zip(factors) {
                *f /= factor;
            }
        }
        Some(inv)
    }
}

#[cfg(test)]
mod tests;
