//! Loader of the Llama family from Hugging Face safetensors: `LlamaForCausalLM`, `MistralForCausalLM` (sliding
//! window handled by the attention mask) and `Qwen2ForCausalLM` (q/k/v biases, usually tied embeddings; a window
//! from `max_window_layers` on, the other layers masked causally only). Follows
//! transformers' `models/llama/modeling_llama.py`: RMSNorm, RoPE in the rotate-halves layout, grouped-query
//! attention, SwiGLU MLP. Qwen3 (`modeling_qwen3.py`) adds QK-norm; Gemma 3 (`modeling_gemma3.py`) QK-norm, `1 + w`
//! norms around both blocks (`pre_feedforward_layernorm` is the MLP's input norm, `post_attention_layernorm` the
//! attention output's), GELU-tanh gating, scaled embeddings and a RoPE base of its own for the windowed layers.
//! Phi-3 (`modeling_phi3.py`) stores q/k/v and gate/up fused (`qkv_proj`, `gate_up_proj`).
//!
//! Tensor names: `model.embed_tokens.weight`, `model.layers.{i}.{input_layernorm, post_attention_layernorm}.weight`,
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}`, `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.norm.weight`, `lm_head.weight` (absent when tied).

use std::path::Path;

use nano_vllm_bundle::{HfArchitecture, HfConfig};

use crate::attention::Heads;
use crate::error::CandleError;
use crate::layers::{Linear, Mlp, Norm};
use crate::model::{Block, Positions, Transformer};
use crate::rope::Rope;
use crate::weights::Weights;

/// `{prefix}.weight` as `[out, in]`, and `{prefix}.bias` when `bias`.
pub(crate) fn linear(w: &Weights, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, CandleError> {
    let weight = w.get(&format!("{prefix}.weight"), &[out, inp])?;
    let bias = if bias { Some(w.get(&format!("{prefix}.bias"), &[out])?) } else { None };
    Ok(Linear::new(weight, bias))
}

pub(crate) fn load(c: &HfConfig, config_path: &Path, w: &Weights) -> Result<Transformer, CandleError> {
    let (hidden, d) = (c.hidden_size, c.head_dim);
    let norm = |name: &str, n: usize| -> Result<Norm, CandleError> {
        let mut weight = w.get(name, &[n])?;
        if c.extras.norm_unit_offset {
            weight = (weight + 1.0)?;
        }
        Ok(Norm::Rms { weight, eps: c.norm_eps as f32 })
    };
    let rms = |name: &str| norm(name, hidden);
    let embed = w.get("model.embed_tokens.weight", &[c.vocab_size, hidden])?;
    // Grown as layers load: a config's layer count is not trusted before its tensors are found.
    let mut blocks = Vec::new();
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        let (qkv, gate_up) = if c.architecture == HfArchitecture::Phi3 {
            // Phi-3 stores both fused, in our order (q, k, v; gate, up).
            let qkv_out = (c.num_heads + 2 * c.num_kv_heads) * d;
            (
                linear(w, &format!("{p}.self_attn.qkv_proj"), qkv_out, hidden, c.qkv_bias)?,
                linear(w, &format!("{p}.mlp.gate_up_proj"), 2 * c.intermediate_size, hidden, c.mlp_bias)?,
            )
        } else {
            let q = linear(w, &format!("{p}.self_attn.q_proj"), c.num_heads * d, hidden, c.qkv_bias)?;
            let k = linear(w, &format!("{p}.self_attn.k_proj"), c.num_kv_heads * d, hidden, c.qkv_bias)?;
            let v = linear(w, &format!("{p}.self_attn.v_proj"), c.num_kv_heads * d, hidden, c.qkv_bias)?;
            let gate = linear(w, &format!("{p}.mlp.gate_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
            let up = linear(w, &format!("{p}.mlp.up_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
            (Linear::fuse(&[q, k, v])?, Linear::fuse(&[gate, up])?)
        };
        let o = linear(w, &format!("{p}.self_attn.o_proj"), hidden, c.num_heads * d, c.o_bias)?;
        let down = linear(w, &format!("{p}.mlp.down_proj"), hidden, c.intermediate_size, c.mlp_bias)?;
        let qk_norm = if c.extras.qk_norm {
            Some((norm(&format!("{p}.self_attn.q_norm.weight"), d)?, norm(&format!("{p}.self_attn.k_norm.weight"), d)?))
        } else {
            None
        };
        let (mlp_norm, post_norms) = if c.extras.sandwich_norms {
            let post_attn = rms(&format!("{p}.post_attention_layernorm.weight"))?;
            let post_mlp = rms(&format!("{p}.post_feedforward_layernorm.weight"))?;
            (rms(&format!("{p}.pre_feedforward_layernorm.weight"))?, Some((post_attn, post_mlp)))
        } else {
            (rms(&format!("{p}.post_attention_layernorm.weight"))?, None)
        };
        let (intermediate, activation) = (c.intermediate_size, c.activation);
        blocks.push(Block {
            attn_norm: rms(&format!("{p}.input_layernorm.weight"))?,
            qkv,
            o,
            mlp_norm,
            mlp: Mlp::Gated { gate_up, down, intermediate, activation },
            qk_norm,
            post_norms,
        });
    }
    let lm_head = if c.tie_word_embeddings {
        Linear::new(embed.clone(), None)
    } else {
        linear(w, "lm_head", c.vocab_size, hidden, false)?
    };
    let inv_freq = c.rope_inv_freq().ok_or_else(|| CandleError::InvalidConfig {
        path: config_path.into(),
        reason: format!("{} needs a RoPE theta", c.architecture.as_str()),
    })?;
    Ok(Transformer {
        heads: Heads { heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: d, scale: c.attention_scale },
        windowed: (0..c.num_layers).map(|l| c.window(l).is_some()).collect(),
        embed,
        embed_scale: c.extras.embedding_scale,
        positions: Positions::Rope(Rope::new(&inv_freq, c.max_position_embeddings)?),
        local_rope: c.rope_local_inv_freq().map(|inv| Rope::new(&inv, c.max_position_embeddings)).transpose()?,
        blocks,
        final_norm: rms("model.norm.weight")?,
        lm_head,
    })
}
