//! The transformer's weights, built from an HF directory for the Llama family (Llama, Mistral, Qwen2: RMSNorm, RoPE,
//! SwiGLU, GQA, optional q/k/v bias; Qwen3 and Gemma 3 with what they add, see [`LayerExtras`]; Phi-3's fused
//! projections) and GPT-2 (learned
//! positions, LayerNorm, GELU, fused Conv1D attention). Follows transformers' `modeling_llama.py`,
//! `modeling_qwen2.py`, `modeling_qwen3.py`, `modeling_gemma3.py` and `modeling_gpt2.py`. Projections that share an
//! input are stacked (q/k/v, gate/up) so each takes one matrix product.

use std::path::Path;

use nano_vllm_bundle::gguf::{GgmlType, GgufModel, dequantize};
use nano_vllm_bundle::{Activation, HfArchitecture, HfConfig, LayerExtras};

use crate::error::NativeError;
use crate::kernels::linear::{Linear, WeightDtype, Weights};
use crate::kernels::norm::Norm;
use crate::kernels::panels::Panels;
use crate::kernels::quant::{ActRounding, QMatrix};
use crate::kernels::rope::Rope;
use crate::weights::WeightFiles;

#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(act(gate(x)) * up(x))` (SiLU, or Gemma's GELU-tanh); `gate_up` stacks gate then up.
    Gated { gate_up: Linear, down: Linear, act: Activation },
    /// `proj(act(fc(x)))`.
    Plain { fc: Linear, proj: Linear, act: Activation },
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Norm,
    /// q, k and v stacked: `[(heads + 2 kv_heads) * head_dim, hidden]`.
    pub qkv: Linear,
    pub o: Linear,
    pub mlp_norm: Norm,
    pub mlp: Mlp,
    /// Qwen3 / Gemma 3: RMSNorm of each query and key head before RoPE.
    pub qk_norm: Option<(Norm, Norm)>,
    /// Gemma 3: norms of the attention and MLP outputs, before their residual adds.
    pub post_norms: Option<(Norm, Norm)>,
}

/// The token embedding table, `[vocab, hidden]`: f32 packed into panels (a tied head's product is then the layers'
/// own, the same bits at every batch size; a lookup gathers its row from 16-row panels), or a GGUF's quantized table
/// (read a row at a time).
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    F32(Panels),
    Quant(QMatrix),
}

impl Embedding {
    /// Writes token `tok`'s row into `out` (`hidden` values).
    pub fn row_into(&self, tok: usize, out: &mut [f32]) {
        match self {
            Self::F32(e) => e.row_into(tok, out),
            Self::Quant(q) => {
                let mut row = Vec::with_capacity(q.cols);
                q.dequantize_rows(tok, 1, &mut row);
                out.copy_from_slice(&row);
            }
        }
    }
    /// The table as a dense layer (a tied head): an f32 copy, or the same quantized blocks.
    fn as_linear(&self, vocab: usize, hidden: usize) -> Linear {
        match self {
            Self::F32(e) => {
                debug_assert_eq!((e.out(), e.inp()), (vocab, hidden));
                Linear { w: Weights::F32(e.clone()), b: None, out: vocab, inp: hidden, input: ActRounding::None }
            }
            Self::Quant(q) => Linear::quantized(vec![q.clone()], None),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Self::F32(e) => 4 * e.len(),
            Self::Quant(q) => q.bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: HfConfig,
    /// `[vocab, hidden]`.
    pub embed: Embedding,
    /// GPT-2's learned positions, `[positions, hidden]`.
    pub pos_embed: Option<Vec<f32>>,
    pub layers: Vec<Layer>,
    pub final_norm: Norm,
    /// `None`: tied to `embed`.
    pub lm_head: Option<Linear>,
    pub rope: Option<Rope>,
    /// Gemma 3: the sliding-window layers' RoPE (their own base).
    pub rope_local: Option<Rope>,
    /// Gemma: token embeddings times this.
    pub embed_scale: Option<f32>,
    /// RoPE rotates adjacent pairs (ggml's order: q and k rows as a GGUF stores them) rather than halves.
    pub rope_adjacent: bool,
    /// Dense layers kept in f32 by a quantized `weight_dtype` because their rows are not whole blocks.
    pub unquantized_layers: usize,
    /// Loaded from a GGUF: what it says it was quantized to (`q4_k_m`; see `GgufFile::file_type`).
    pub file_type: Option<String>,
}

/// Where the weights come from: an HF directory's safetensors, or a GGUF read as an HF checkpoint (dequantized), or a
/// GGUF as stored (matrices in their block types, mapped).
#[derive(Clone, Copy)]
enum Source<'a> {
    Safetensors(&'a WeightFiles),
    Gguf(&'a GgufModel),
    GgufStored(&'a GgufModel),
}

impl Source<'_> {
    fn contains(&self, name: &str) -> bool {
        match self {
            Self::Safetensors(files) => files.contains(name),
            Self::Gguf(model) | Self::GgufStored(model) => model.contains(name),
        }
    }
}

/// Fetches tensors by HF name with shape checks.
struct Loader<'a> {
    source: Source<'a>,
}

impl Loader<'_> {
    fn t(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, NativeError> {
        match self.source {
            Source::Safetensors(files) => files.get(name, shape),
            Source::Gguf(model) => Ok(model.tensor(name, shape)?),
            // Vectors (norms, biases) in the file's order: q/k biases stay permuted like their rows.
            Source::GgufStored(model) if shape.len() == 1 => Ok(model.stored_values(name, shape)?),
            Source::GgufStored(model) => Ok(model.tensor(name, shape)?),
        }
    }
    /// A matrix as the GGUF stores it (`[out, in]` in ggml's layout): f32, f16 and bf16 as dense weights (f16 and
    /// bf16 with their input rounded to their type, as ggml's product rounds it), the rest as blocks.
    fn stored(&self, model: &GgufModel, name: &str, out: usize, inp: usize) -> Result<Linear, NativeError> {
        let st = model.stored(name, &[out, inp])?;
        let mut values = Vec::new();
        Ok(match st.ggml_type {
            GgmlType::F32 => {
                dequantize(st.ggml_type, &st.bytes, &mut values);
                Linear::new(values, None, out, inp)
            }
            GgmlType::F16 => {
                let w = st.bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect();
                Linear::stored_half(Weights::F16(w), out, inp)
            }
            GgmlType::BF16 => {
                let w = st.bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]])).collect();
                Linear::stored_half(Weights::Bf16(w), out, inp)
            }
            ty => Linear::quantized(vec![QMatrix::new(&st.name, ty, out, inp, st.bytes.to_vec())?], None),
        })
    }
    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, NativeError> {
        let b = if bias { Some(self.t(&format!("{prefix}.bias"), &[out])?) } else { None };
        if let Source::GgufStored(model) = self.source {
            return Ok(Linear { b, ..self.stored(model, &format!("{prefix}.weight"), out, inp)? });
        }
        let w = self.t(&format!("{prefix}.weight"), &[out, inp])?;
        Ok(Linear::new(w, b, out, inp))
    }
    /// A GPT-2 `Conv1D` (`[in, out]` weight), transposed to a `Linear`.
    fn conv1d(&self, prefix: &str, inp: usize, out: usize) -> Result<Linear, NativeError> {
        if let Source::GgufStored(model) = self.source {
            // ggml stores Conv1D weights `[out, in]` already.
            let b = Some(self.t(&format!("{prefix}.bias"), &[out])?);
            return Ok(Linear { b, ..self.stored(model, &format!("{prefix}.weight"), out, inp)? });
        }
        let w = self.t(&format!("{prefix}.weight"), &[inp, out])?;
        let mut t = vec![0.0; w.len()];
        for i in 0..inp {
            for o in 0..out {
                t[o * inp + i] = w[i * out + o];
            }
        }
        Ok(Linear::new(t, Some(self.t(&format!("{prefix}.bias"), &[out])?), out, inp))
    }
    /// The token embeddings: quantized tables stay quantized when loading as stored.
    fn embedding(&self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding, NativeError> {
        if let Source::GgufStored(model) = self.source {
            let st = model.stored(name, &[vocab, hidden])?;
            if st.ggml_type != GgmlType::F32 {
                return Ok(Embedding::Quant(QMatrix::new(&st.name, st.ggml_type, vocab, hidden, st.bytes.to_vec())?));
            }
        }
        Ok(Embedding::F32(Panels::pack(&self.t(name, &[vocab, hidden])?, vocab, hidden)))
    }
    /// An RMSNorm; with `unit_offset` (Gemma) its HF weights `w` scale by `1 + w`, which a GGUF stores as is.
    fn rms(&self, name: &str, n: usize, eps: f64, unit_offset: bool) -> Result<Norm, NativeError> {
        let mut w = self.t(name, &[n])?;
        if unit_offset && !matches!(self.source, Source::GgufStored(_)) {
            w.iter_mut().for_each(|v| *v += 1.0);
        }
        Ok(Norm::Rms { w, eps: eps as f32 })
    }
    fn layer_norm(&self, prefix: &str, n: usize, eps: f64) -> Result<Norm, NativeError> {
        Ok(Norm::Layer {
            w: self.t(&format!("{prefix}.weight"), &[n])?,
            b: self.t(&format!("{prefix}.bias"), &[n])?,
            eps: eps as f32,
        })
    }
}

impl Model {
    /// Loads `config.json` and the safetensors weights of an HF model directory.
    pub fn load(dir: &Path) -> Result<Self, NativeError> {
        let config = HfConfig::from_dir(dir)?;
        let files = WeightFiles::open(dir)?;
        Self::build(config, Source::Safetensors(&files))
    }

    /// Loads a GGUF file (Llama, Qwen2 or GPT-2): `stored`, each matrix in its block type, mapped from the file (q and
    /// k rows in ggml's order, rotated as ggml does); else every tensor dequantized to f32 in HF layout.
    pub fn load_gguf(path: &Path, stored: bool) -> Result<Self, NativeError> {
        let model = GgufModel::open(path)?;
        let source = if stored { Source::GgufStored(&model) } else { Source::Gguf(&model) };
        let mut built = Self::build(model.config.clone(), source)?;
        built.rope_adjacent = stored && model.config.architecture.gguf_permutes_qk() && built.rope.is_some();
        built.file_type = Some(model.file.file_type());
        Ok(built)
    }

    fn build(config: HfConfig, source: Source<'_>) -> Result<Self, NativeError> {
        match config.architecture {
            HfArchitecture::Gpt2 => Self::gpt2(config, source),
            _ => Self::llama(config, source),
        }
    }

    fn llama(c: HfConfig, source: Source<'_>) -> Result<Self, NativeError> {
        let l = Loader { source };
        let (h, d, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (q_out, kv_out) = (c.num_heads * d, c.num_kv_heads * d);
        let LayerExtras { qk_norm, norm_unit_offset: unit, sandwich_norms, .. } = c.extras;
        let eps = c.norm_eps;
        // Grown as layers load: a config's layer count is not trusted before its tensors are found.
        let mut layers = Vec::new();
        for n in 0..c.num_layers {
            let p = format!("model.layers.{n}");
            let qk_norm = if qk_norm {
                Some((
                    l.rms(&format!("{p}.self_attn.q_norm.weight"), d, eps, unit)?,
                    l.rms(&format!("{p}.self_attn.k_norm.weight"), d, eps, unit)?,
                ))
            } else {
                None
            };
            // Gemma: post_attention_layernorm is the attention output's norm; the MLP's input norm is
            // pre_feedforward_layernorm.
            let (mlp_norm, post_norms) = if sandwich_norms {
                let post_attn = l.rms(&format!("{p}.post_attention_layernorm.weight"), h, eps, unit)?;
                let pre_mlp = l.rms(&format!("{p}.pre_feedforward_layernorm.weight"), h, eps, unit)?;
                let post_mlp = l.rms(&format!("{p}.post_feedforward_layernorm.weight"), h, eps, unit)?;
                (pre_mlp, Some((post_attn, post_mlp)))
            } else {
                (l.rms(&format!("{p}.post_attention_layernorm.weight"), h, eps, unit)?, None)
            };
            // Phi-3 stores both stacks fused, in our order (q, k, v; gate, up).
            let fused = c.architecture == HfArchitecture::Phi3;
            let qkv = if fused {
                l.linear(&format!("{p}.self_attn.qkv_proj"), q_out + 2 * kv_out, h, c.qkv_bias)?
            } else {
                Linear::stack(vec![
                    l.linear(&format!("{p}.self_attn.q_proj"), q_out, h, c.qkv_bias)?,
                    l.linear(&format!("{p}.self_attn.k_proj"), kv_out, h, c.qkv_bias)?,
                    l.linear(&format!("{p}.self_attn.v_proj"), kv_out, h, c.qkv_bias)?,
                ])
            };
            let gate_up = if fused {
                l.linear(&format!("{p}.mlp.gate_up_proj"), 2 * i, h, c.mlp_bias)?
            } else {
                Linear::stack(vec![
                    l.linear(&format!("{p}.mlp.gate_proj"), i, h, c.mlp_bias)?,
                    l.linear(&format!("{p}.mlp.up_proj"), i, h, c.mlp_bias)?,
                ])
            };
            layers.push(Layer {
                attn_norm: l.rms(&format!("{p}.input_layernorm.weight"), h, eps, unit)?,
                qkv,
                o: l.linear(&format!("{p}.self_attn.o_proj"), h, q_out, c.o_bias)?,
                mlp_norm,
                mlp: Mlp::Gated {
                    gate_up,
                    down: l.linear(&format!("{p}.mlp.down_proj"), h, i, c.mlp_bias)?,
                    act: c.activation,
                },
                qk_norm,
                post_norms,
            });
        }
        let embed = l.embedding("model.embed_tokens.weight", c.vocab_size, h)?;
        let lm_head = match (c.tie_word_embeddings, &embed) {
            (false, _) => Some(l.linear("lm_head", c.vocab_size, h, false)?),
            (true, Embedding::Quant(_)) => Some(embed.as_linear(c.vocab_size, h)),
            (true, Embedding::F32(_)) => None,
        };
        let inv_freq = c.rope_inv_freq().expect("llama-family configs carry a rope theta");
        Ok(Self {
            embed,
            pos_embed: None,
            layers,
            final_norm: l.rms("model.norm.weight", h, eps, unit)?,
            lm_head,
            rope: Some(Rope::new(&inv_freq, c.max_position_embeddings)),
            rope_local: c.rope_local_inv_freq().map(|inv| Rope::new(&inv, c.max_position_embeddings)),
            embed_scale: c.extras.embedding_scale.map(|s| s as f32),
            rope_adjacent: false,
            unquantized_layers: 0,
            file_type: None,
            config: c,
        })
    }

    fn gpt2(c: HfConfig, source: Source<'_>) -> Result<Self, NativeError> {
        let l = Loader { source };
        // GPT2LMHeadModel checkpoints prefix `transformer.`; a bare GPT2Model does not.
        let root = if source.contains("transformer.wte.weight") { "transformer." } else { "" };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        // Grown as layers load: a config's layer count is not trusted before its tensors are found.
        let mut layers = Vec::new();
        for n in 0..c.num_layers {
            let p = format!("{root}h.{n}");
            layers.push(Layer {
                attn_norm: l.layer_norm(&format!("{p}.ln_1"), h, c.norm_eps)?,
                qkv: l.conv1d(&format!("{p}.attn.c_attn"), h, 3 * h)?,
                o: l.conv1d(&format!("{p}.attn.c_proj"), h, h)?,
                mlp_norm: l.layer_norm(&format!("{p}.ln_2"), h, c.norm_eps)?,
                mlp: Mlp::Plain {
                    fc: l.conv1d(&format!("{p}.mlp.c_fc"), h, i)?,
                    proj: l.conv1d(&format!("{p}.mlp.c_proj"), i, h)?,
                    act: c.activation,
                },
                qk_norm: None,
                post_norms: None,
            });
        }
        let embed = l.embedding(&format!("{root}wte.weight"), c.vocab_size, h)?;
        let lm_head = match (c.tie_word_embeddings, &embed) {
            (false, _) => Some(l.linear("lm_head", c.vocab_size, h, false)?),
            (true, Embedding::Quant(_)) => Some(embed.as_linear(c.vocab_size, h)),
            (true, Embedding::F32(_)) => None,
        };
        Ok(Self {
            embed,
            pos_embed: Some(l.t(&format!("{root}wpe.weight"), &[c.max_position_embeddings, h])?),
            layers,
            final_norm: l.layer_norm(&format!("{root}ln_f"), h, c.norm_eps)?,
            lm_head,
            rope: None,
            rope_local: None,
            embed_scale: None,
            rope_adjacent: false,
            unquantized_layers: 0,
            file_type: None,
            config: c,
        })
    }

    /// Stores every dense layer's weights as `dtype` (embeddings and norms stay as they are). A tied f32 head gets its
    /// own copy in `dtype`, so the largest matrix of a decode step shrinks too. A layer whose rows are not whole
    /// blocks of a quantized `dtype` stays f32 (counted in [`Model::unquantized_layers`]).
    pub fn with_weight_dtype(mut self, dtype: WeightDtype) -> Self {
        if dtype == WeightDtype::Stored || (dtype == WeightDtype::F32 && self.linears().all(|l| l.w.dtype() == dtype)) {
            return self;
        }
        let mut kept = 0;
        let mut convert = |l: Linear| {
            let (l, done) = l.with_dtype(dtype);
            kept += usize::from(!done);
            l
        };
        for layer in &mut self.layers {
            layer.qkv = convert(layer.qkv.clone());
            layer.o = convert(layer.o.clone());
            let placeholder = Mlp::Gated { gate_up: empty(), down: empty(), act: Activation::Silu };
            layer.mlp = match std::mem::replace(&mut layer.mlp, placeholder) {
                Mlp::Gated { gate_up, down, act } => Mlp::Gated { gate_up: convert(gate_up), down: convert(down), act },
                Mlp::Plain { fc, proj, act } => Mlp::Plain { fc: convert(fc), proj: convert(proj), act },
            };
        }
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        // Quantized: the token embeddings too, as a GGUF of that type stores them (so a tied head reads the same
        // blocks); f16/bf16 keep an f32 table and give a tied head its own copy.
        if let (Some(ty), Embedding::F32(e)) = (dtype.ggml_type(), &self.embed)
            && h.is_multiple_of(ty.block_size())
        {
            let bytes = crate::kernels::quant::quantize::quantize(ty, &e.unpack());
            let q = QMatrix::new("token embeddings", ty, v, h, bytes).expect("whole blocks, checked above");
            self.embed = Embedding::Quant(q);
        }
        let head = match self.lm_head.take() {
            Some(head) => head,
            None => self.embed.as_linear(v, h),
        };
        self.lm_head = Some(convert(head));
        self.unquantized_layers = kept;
        self
    }

    /// The block types of the dense layers and the head, with how many matrices have each: `Q4_1 x 210, Q8_0 x 1`.
    pub fn weight_types(&self) -> String {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        let mut add = |l: &Linear| {
            for ty in l.w.types() {
                match counts.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((ty, 1)),
                }
            }
        };
        for l in self.linears() {
            add(l);
        }
        if self.lm_head.is_none() {
            add(&Linear::new(Vec::new(), None, 0, 0));
        }
        counts.iter().map(|(t, n)| format!("{t} x {n}")).collect::<Vec<_>>().join(", ")
    }

    /// Every dense layer and the head (when not tied to an f32 embedding).
    fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(|l| {
                let mlp: [&Linear; 2] = match &l.mlp {
                    Mlp::Gated { gate_up, down, .. } => [gate_up, down],
                    Mlp::Plain { fc, proj, .. } => [fc, proj],
                };
                [&l.qkv, &l.o].into_iter().chain(mlp)
            })
            .chain(self.lm_head.as_ref())
    }

    /// The storage type of the dense layers.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.layers.first().map_or(WeightDtype::F32, |l| l.qkv.w.dtype())
    }

    /// Weight bytes that one forward pass reads (every dense layer and the head; not the embedding gather).
    pub fn weight_bytes(&self) -> usize {
        self.linears().map(Linear::bytes).sum::<usize>() + if self.lm_head.is_none() { self.embed.bytes() } else { 0 }
    }
}

fn empty() -> Linear {
    Linear::new(Vec::new(), None, 0, 0)
}
