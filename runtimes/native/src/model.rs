//! The transformer's weights, built from an HF directory for the Llama family (Llama, Mistral, Qwen2: RMSNorm, RoPE,
//! SwiGLU, GQA, optional q/k/v bias) and GPT-2 (learned positions, LayerNorm, GELU, fused Conv1D attention). Follows
//! transformers' `modeling_llama.py`, `modeling_qwen2.py` and `modeling_gpt2.py`. Projections that share an input are
//! stacked (q/k/v, gate/up) so each takes one matrix product.

use std::path::Path;

use nano_vllm_bundle::gguf::GgufModel;
use nano_vllm_bundle::{Activation, HfArchitecture, HfConfig};

use crate::error::NativeError;
use crate::kernels::linear::{Linear, WeightDtype};
use crate::kernels::norm::Norm;
use crate::kernels::rope::Rope;
use crate::weights::WeightFiles;

#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(silu(gate(x)) * up(x))`; `gate_up` stacks gate then up.
    Gated { gate_up: Linear, down: Linear },
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
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: HfConfig,
    /// `[vocab, hidden]`.
    pub embed: Vec<f32>,
    /// GPT-2's learned positions, `[positions, hidden]`.
    pub pos_embed: Option<Vec<f32>>,
    pub layers: Vec<Layer>,
    pub final_norm: Norm,
    /// `None`: tied to `embed`.
    pub lm_head: Option<Linear>,
    pub rope: Option<Rope>,
}

/// Where the weights come from: an HF directory's safetensors, or a GGUF read as an HF checkpoint (dequantized).
#[derive(Clone, Copy)]
enum Source<'a> {
    Safetensors(&'a WeightFiles),
    Gguf(&'a GgufModel),
}

impl Source<'_> {
    fn contains(&self, name: &str) -> bool {
        match self {
            Self::Safetensors(files) => files.contains(name),
            Self::Gguf(model) => model.contains(name),
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
        }
    }
    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, NativeError> {
        let w = self.t(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias { Some(self.t(&format!("{prefix}.bias"), &[out])?) } else { None };
        Ok(Linear::new(w, b, out, inp))
    }
    /// A GPT-2 `Conv1D` (`[in, out]` weight), transposed to a `Linear`.
    fn conv1d(&self, prefix: &str, inp: usize, out: usize) -> Result<Linear, NativeError> {
        let w = self.t(&format!("{prefix}.weight"), &[inp, out])?;
        let mut t = vec![0.0; w.len()];
        for i in 0..inp {
            for o in 0..out {
                t[o * inp + i] = w[i * out + o];
            }
        }
        Ok(Linear::new(t, Some(self.t(&format!("{prefix}.bias"), &[out])?), out, inp))
    }
    fn rms(&self, name: &str, n: usize, eps: f64) -> Result<Norm, NativeError> {
        Ok(Norm::Rms { w: self.t(name, &[n])?, eps: eps as f32 })
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

    /// Loads a GGUF file (Llama, Qwen2 or GPT-2), its tensors dequantized to f32.
    pub fn load_gguf(path: &Path) -> Result<Self, NativeError> {
        let model = GgufModel::open(path)?;
        Self::build(model.config.clone(), Source::Gguf(&model))
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
        let mut layers = Vec::with_capacity(c.num_layers);
        for n in 0..c.num_layers {
            let p = format!("model.layers.{n}");
            let qkv = Linear::stack(vec![
                l.linear(&format!("{p}.self_attn.q_proj"), q_out, h, c.qkv_bias)?,
                l.linear(&format!("{p}.self_attn.k_proj"), kv_out, h, c.qkv_bias)?,
                l.linear(&format!("{p}.self_attn.v_proj"), kv_out, h, c.qkv_bias)?,
            ]);
            layers.push(Layer {
                attn_norm: l.rms(&format!("{p}.input_layernorm.weight"), h, c.norm_eps)?,
                qkv,
                o: l.linear(&format!("{p}.self_attn.o_proj"), h, q_out, c.o_bias)?,
                mlp_norm: l.rms(&format!("{p}.post_attention_layernorm.weight"), h, c.norm_eps)?,
                mlp: Mlp::Gated {
                    gate_up: Linear::stack(vec![
                        l.linear(&format!("{p}.mlp.gate_proj"), i, h, c.mlp_bias)?,
                        l.linear(&format!("{p}.mlp.up_proj"), i, h, c.mlp_bias)?,
                    ]),
                    down: l.linear(&format!("{p}.mlp.down_proj"), h, i, c.mlp_bias)?,
                },
            });
        }
        let lm_head = if c.tie_word_embeddings { None } else { Some(l.linear("lm_head", c.vocab_size, h, false)?) };
        let inv_freq = c.rope_inv_freq().expect("llama-family configs carry a rope theta");
        Ok(Self {
            embed: l.t("model.embed_tokens.weight", &[c.vocab_size, h])?,
            pos_embed: None,
            layers,
            final_norm: l.rms("model.norm.weight", h, c.norm_eps)?,
            lm_head,
            rope: Some(Rope::new(&inv_freq, c.max_position_embeddings)),
            config: c,
        })
    }

    fn gpt2(c: HfConfig, source: Source<'_>) -> Result<Self, NativeError> {
        let l = Loader { source };
        // GPT2LMHeadModel checkpoints prefix `transformer.`; a bare GPT2Model does not.
        let root = if source.contains("transformer.wte.weight") { "transformer." } else { "" };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut layers = Vec::with_capacity(c.num_layers);
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
            });
        }
        let lm_head = if c.tie_word_embeddings { None } else { Some(l.linear("lm_head", c.vocab_size, h, false)?) };
        Ok(Self {
            embed: l.t(&format!("{root}wte.weight"), &[c.vocab_size, h])?,
            pos_embed: Some(l.t(&format!("{root}wpe.weight"), &[c.max_position_embeddings, h])?),
            layers,
            final_norm: l.layer_norm(&format!("{root}ln_f"), h, c.norm_eps)?,
            lm_head,
            rope: None,
            config: c,
        })
    }

    /// Stores every dense layer's weights as `dtype` (embeddings and norms stay f32). A tied head gets its own copy
    /// in `dtype`, so the largest matrix of a decode step is halved too.
    pub fn with_weight_dtype(mut self, dtype: WeightDtype) -> Self {
        if dtype == WeightDtype::F32 {
            return self;
        }
        for layer in &mut self.layers {
            layer.qkv = layer.qkv.clone().with_dtype(dtype);
            layer.o = layer.o.clone().with_dtype(dtype);
            layer.mlp = match std::mem::replace(&mut layer.mlp, Mlp::Gated { gate_up: empty(), down: empty() }) {
                Mlp::Gated { gate_up, down } => {
                    Mlp::Gated { gate_up: gate_up.with_dtype(dtype), down: down.with_dtype(dtype) }
                }
                Mlp::Plain { fc, proj, act } => {
                    Mlp::Plain { fc: fc.with_dtype(dtype), proj: proj.with_dtype(dtype), act }
                }
            };
        }
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let head = self.lm_head.take().unwrap_or_else(|| Linear::new(self.embed.clone(), None, v, h));
        self.lm_head = Some(head.with_dtype(dtype));
        self
    }

    /// The storage type of the dense layers.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.layers.first().map_or(WeightDtype::F32, |l| l.qkv.w.dtype())
    }

    /// Weight bytes that one forward pass reads (every dense layer and the head; not the embedding gather).
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| l.bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                lin(&l.qkv)
                    + lin(&l.o)
                    + match &l.mlp {
                        Mlp::Gated { gate_up, down } => lin(gate_up) + lin(down),
                        Mlp::Plain { fc, proj, .. } => lin(fc) + lin(proj),
                    }
            })
            .sum();
        layers + self.lm_head.as_ref().map_or(4 * self.embed.len(), lin)
    }
}

fn empty() -> Linear {
    Linear::new(Vec::new(), None, 0, 0)
}
