//! Loader of `GPT2LMHeadModel` from Hugging Face safetensors, following transformers'
//! `models/gpt2/modeling_gpt2.py`: learned positions, LayerNorm, `gelu_new`, and `Conv1D` projections whose
//! weights are stored `[in, out]` (transposed against `nn.Linear`); `c_attn` holds q, k and v side by side.
//!
//! Tensor names (the `transformer.` prefix is optional, as in OpenAI's original checkpoints):
//! `transformer.{wte,wpe}.weight`, `transformer.h.{i}.{ln_1,ln_2}.{weight,bias}`,
//! `transformer.h.{i}.attn.{c_attn,c_proj}.{weight,bias}`, `transformer.h.{i}.mlp.{c_fc,c_proj}.{weight,bias}`,
//! `transformer.ln_f.{weight,bias}`, `lm_head.weight` (absent when tied, the usual case).

use nano_vllm_bundle::HfConfig;

use crate::attention::Heads;
use crate::error::CandleError;
use crate::layers::{Linear, Mlp, Norm};
use crate::llama::linear;
use crate::model::{Block, Positions, Transformer};
use crate::weights::Weights;

pub(crate) fn load(c: &HfConfig, w: &Weights) -> Result<Transformer, CandleError> {
    let hidden = c.hidden_size;
    let prefix = if w.contains("wte.weight") && !w.contains("transformer.wte.weight") { "" } else { "transformer." };
    let conv1d = |name: &str, inp: usize, out: usize| -> Result<Linear, CandleError> {
        let weight = w.get(&format!("{prefix}{name}.weight"), &[inp, out])?;
        let bias = w.get(&format!("{prefix}{name}.bias"), &[out])?;
        Ok(Linear::from_conv1d(&weight, Some(bias))?)
    };
    let layer_norm = |name: &str| -> Result<Norm, CandleError> {
        Ok(Norm::Layer {
            weight: w.get(&format!("{prefix}{name}.weight"), &[hidden])?,
            bias: w.get(&format!("{prefix}{name}.bias"), &[hidden])?,
            eps: c.norm_eps as f32,
        })
    };
    let embed = w.get(&format!("{prefix}wte.weight"), &[c.vocab_size, hidden])?;
    let wpe = w.get(&format!("{prefix}wpe.weight"), &[c.max_position_embeddings, hidden])?;
    // Grown as layers load: a config's layer count is not trusted before its tensors are found.
    let mut blocks = Vec::new();
    for i in 0..c.num_layers {
        blocks.push(Block {
            attn_norm: layer_norm(&format!("h.{i}.ln_1"))?,
            qkv: conv1d(&format!("h.{i}.attn.c_attn"), hidden, 3 * hidden)?,
            o: conv1d(&format!("h.{i}.attn.c_proj"), hidden, hidden)?,
            mlp_norm: layer_norm(&format!("h.{i}.ln_2"))?,
            mlp: Mlp::Plain {
                fc: conv1d(&format!("h.{i}.mlp.c_fc"), hidden, c.intermediate_size)?,
                proj: conv1d(&format!("h.{i}.mlp.c_proj"), c.intermediate_size, hidden)?,
                activation: c.activation,
            },
            qk_norm: None,
            post_norms: None,
        });
    }
    let lm_head = if c.tie_word_embeddings {
        Linear::new(embed.clone(), None)
    } else {
        linear(w, "lm_head", c.vocab_size, hidden, false)?
    };
    Ok(Transformer {
        heads: Heads { heads: c.num_heads, kv_heads: c.num_heads, head_dim: c.head_dim, scale: c.attention_scale },
        windowed: vec![false; c.num_layers],
        embed,
        embed_scale: None,
        positions: Positions::Learned(wpe),
        local_rope: None,
        blocks,
        final_norm: layer_norm("ln_f")?,
        lm_head,
    })
}
