//! Loader of the Llama family from Hugging Face safetensors: `LlamaForCausalLM`, `MistralForCausalLM` (sliding
//! window handled by the attention mask) and `Qwen2ForCausalLM` (q/k/v biases, usually tied embeddings; a window
//! from `max_window_layers` on, the other layers masked causally only). Follows
//! transformers' `models/llama/modeling_llama.py`: RMSNorm, RoPE in the rotate-halves layout, grouped-query
//! attention, SwiGLU MLP.
//!
//! Tensor names: `model.embed_tokens.weight`, `model.layers.{i}.{input_layernorm, post_attention_layernorm}.weight`,
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}`, `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.norm.weight`, `lm_head.weight` (absent when tied).

use std::path::Path;

use nano_vllm_bundle::HfConfig;

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
    let rms = |name: &str| -> Result<Norm, CandleError> {
        Ok(Norm::Rms { weight: w.get(name, &[hidden])?, eps: c.norm_eps as f32 })
    };
    let embed = w.get("model.embed_tokens.weight", &[c.vocab_size, hidden])?;
    // Grown as layers load: a config's layer count is not trusted before its tensors are found.
    let mut blocks = Vec::new();
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        let q = linear(w, &format!("{p}.self_attn.q_proj"), c.num_heads * d, hidden, c.qkv_bias)?;
        let k = linear(w, &format!("{p}.self_attn.k_proj"), c.num_kv_heads * d, hidden, c.qkv_bias)?;
        let v = linear(w, &format!("{p}.self_attn.v_proj"), c.num_kv_heads * d, hidden, c.qkv_bias)?;
        let o = linear(w, &format!("{p}.self_attn.o_proj"), hidden, c.num_heads * d, c.o_bias)?;
        let gate = linear(w, &format!("{p}.mlp.gate_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let up = linear(w, &format!("{p}.mlp.up_proj"), c.intermediate_size, hidden, c.mlp_bias)?;
        let down = linear(w, &format!("{p}.mlp.down_proj"), hidden, c.intermediate_size, c.mlp_bias)?;
        blocks.push(Block {
            attn_norm: rms(&format!("{p}.input_layernorm.weight"))?,
            qkv: Linear::fuse(&[q, k, v])?,
            o,
            mlp_norm: rms(&format!("{p}.post_attention_layernorm.weight"))?,
            mlp: Mlp::Gated { gate_up: Linear::fuse(&[gate, up])?, down, intermediate: c.intermediate_size },
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
        positions: Positions::Rope(Rope::new(&inv_freq, c.max_position_embeddings)?),
        blocks,
        final_norm: rms("model.norm.weight")?,
        lm_head,
    })
}
