//! The decoder every supported architecture reduces to: embeddings (plus learned positions for GPT-2), pre-norm
//! blocks of attention (fused q/k/v, RoPE for the Llama family) and MLP with residuals, a final norm and the LM head.
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
}

/// A loaded model.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    pub heads: Heads,
    /// Per layer: whether it applies the model's sliding window.
    pub windowed: Vec<bool>,
    pub embed: Tensor,
    pub positions: Positions,
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
            if let Some(rope) = &rope {
                q = rope.apply(&q)?;
                k = rope.apply(&k)?;
            }
            kv.write(layer, &step.write_index, &k, &v)?;
            let attn = step.attend(layer, self.windowed[layer], &q, kv, self.heads)?;
            x = (x + block.o.forward(&attn)?)?;
            x = (&x + block.mlp.forward(&block.mlp_norm.forward(&x)?)?)?;
        }
        let rows = x.index_select(&step.logits_rows, 0)?;
        self.lm_head.forward(&self.final_norm.forward(&rows)?)
    }
}
