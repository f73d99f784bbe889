//! The decoder every supported architecture reduces to: embeddings (plus learned positions for GPT-2; scaled for
//! Gemma), pre-norm blocks of attention (fused q/k/v, RoPE for the Llama family, QK-norm for Qwen3 and Gemma 3) and
//! MLP with residuals (Gemma 3: their outputs normed too), a final norm and the LM head.
//! The loaders in `llama.rs` and `gpt2.rs` build it from safetensors; `forward` runs one packed engine step.

use candle_core::{Result, Tensor};

use crate::attention::{Heads, StepTensors};
use crate::kv::PagedKv;
use crate::layers::{Linear, Mlp, Norm};
use crate::rope::Rope;

/// How positions enter the model.
#[derive(Debug, Clone)]
pub(crate) enum Positions {
    /// Rotary embedding of q and k (Llama, Mistral, Qwen2).
    Rope(Rope),
    /// A learned table added to the token embeddings (GPT-2), `[max_positions, hidden]`.
    Learned(Tensor),
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub attn_norm: Norm,
    /// q, k and v stacked: `[(heads + 2 * kv_heads) * head_dim, hidden]`.
    pub qkv: Linear,
    pub o: Linear,
    pub mlp_norm: Norm,
    pub mlp: Mlp,
    /// Qwen3 / Gemma 3: RMSNorm of each query and key head before RoPE.
    pub qk_norm: Option<(Norm, Norm)>,
    /// Gemma 3: norms of the attention and MLP outputs, before their residual adds.
    pub post_norms: Option<(Norm, Norm)>,
}

/// A loaded model.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    pub heads: Heads,
    /// Per layer: whether it applies the model's sliding window.
    pub windowed: Vec<bool>,
    pub embed: Tensor,
    /// Gemma: token embeddings times this.
    pub embed_scale: Option<f64>,
    pub positions: Positions,
    /// Gemma 3: the sliding-window layers' RoPE (their own base).
    pub local_rope: Option<Rope>,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    pub lm_head: Linear,
}

impl Transformer {
    /// Runs one step: writes the new tokens' keys and values into `kv` and returns the logits of the rows
    /// `step.logits_rows` asks for, `[rows, vocab]`.
    pub(crate) fn forward(&self, step: &StepTensors, kv: &PagedKv) -> Result<Tensor> {
        let Heads { heads, kv_heads, head_dim, .. } = self.heads;
        let mut x = self.embed.index_select(&step.tokens, 0)?;
        if let Some(scale) = self.embed_scale {
            x = x.affine(scale, 0.0)?;
        }
        let local_rope = self.local_rope.as_ref().map(|r| r.rows(&step.positions)).transpose()?;
        let rope = match &self.positions {
            Positions::Rope(rope) => Some(rope.rows(&step.positions)?),
            Positions::Learned(table) => {
                x = (x + table.index_select(&step.positions, 0)?)?;
                None
            }
        };
        let t = x.dim(0)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let qkv = block.qkv.forward(&block.attn_norm.forward(&x)?)?;
            let mut q = qkv.narrow(1, 0, heads * head_dim)?.reshape((t, heads, head_dim))?;
            let mut k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim)?.reshape((t, kv_heads, head_dim))?;
            let v =
                qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim)?.reshape((t, kv_heads, head_dim))?;
            if let Some((q_norm, k_norm)) = &block.qk_norm {
                q = q_norm.forward(&q)?;
                k = k_norm.forward(&k)?;
            }
            let rope = match &local_rope {
                Some(local) if self.windowed[layer] => Some(local),
                _ => rope.as_ref(),
            };
            if let Some(rope) = rope {
                q = rope.apply(&q)?;
                k = rope.apply(&k)?;
            }
            kv.write(layer, &step.write_index, &k, &v)?;
            let attn = step.attend(layer, self.windowed[layer], &q, kv, self.heads)?;
            let mut attn = block.o.forward(&attn)?;
            if let Some((post_attn, _)) = &block.post_norms {
                attn = post_attn.forward(&attn)?;
            }
            x = (x + attn)?;
            let mut mlp = block.mlp.forward(&block.mlp_norm.forward(&x)?)?;
            if let Some((_, post_mlp)) = &block.post_norms {
                mlp = post_mlp.forward(&mlp)?;
            }
            x = (&x + mlp)?;
        }
        let rows = x.index_select(&step.logits_rows, 0)?;
        self.lm_head.forward(&self.final_norm.forward(&rows)?)
    }
}
