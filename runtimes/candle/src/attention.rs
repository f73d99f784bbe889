//! Batched attention over the paged KV cache, following a [`StepPlan`]: per attention group, gather the queries
//! and the keys and values of every sequence's context, `softmax(q k^T * scale + mask) v` as one batched matmul
//! with grouped-query heads, and put the rows back in packed order.

use candle_core::{Device, Result, Tensor};

use crate::kv::PagedKv;
use crate::plan::StepPlan;

/// One attention group's index and mask tensors.
#[derive(Debug)]
struct GroupTensors {
    n: usize,
    q_len: usize,
    ctx: usize,
    q_rows: Tensor,
    kv_slots: Tensor,
    /// `[n, 1, 1, q_len, ctx]`, broadcast over KV heads and the query heads of a group.
    mask: Tensor,
    /// As `mask` without the sliding window, for layers that have none (only when the model's layers differ).
    mask_full: Option<Tensor>,
}

/// Head geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The factor on `q . k` (`HfConfig::attention_scale`).
    pub scale: f64,
}

/// A step plan as tensors, built once per step and used by every layer.
#[derive(Debug)]
pub(crate) struct StepTensors {
    pub tokens: Tensor,
    pub positions: Tensor,
    /// u32 `[tokens, kv_heads, head_dim]`: each token's KV slot, repeated (the index `scatter_set` wants).
    pub write_index: Tensor,
    groups: Vec<GroupTensors>,
    /// `None` when the groups' stacked outputs are already in packed order.
    out_rows: Option<Tensor>,
    /// u32 `[rows]`: packed tokens whose logits are wanted.
    pub logits_rows: Tensor,
}

impl StepTensors {
    pub(crate) fn new(plan: &StepPlan, batch: &nano_vllm_engine::StepBatch, heads: Heads) -> Result<Self> {
        let dev = &Device::Cpu;
        let t = plan.num_tokens;
        let write_index = Tensor::new(batch.slot_mapping.as_slice(), dev)?
            .reshape((t, 1, 1))?
            .broadcast_as((t, heads.kv_heads, heads.head_dim))?
            .contiguous()?;
        let groups = plan
            .groups
            .iter()
            .map(|g| {
                Ok(GroupTensors {
                    n: g.n,
                    q_len: g.q_len,
                    ctx: g.ctx,
                    q_rows: Tensor::new(g.q_rows.as_slice(), dev)?,
                    kv_slots: Tensor::new(g.kv_slots.as_slice(), dev)?,
                    mask: Tensor::from_slice(&g.mask, (g.n, 1, 1, g.q_len, g.ctx), dev)?,
                    mask_full: match &g.mask_full {
                        Some(m) => Some(Tensor::from_slice(m, (g.n, 1, 1, g.q_len, g.ctx), dev)?),
                        None => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let identity = plan.out_rows.iter().enumerate().all(|(i, &r)| i == r as usize);
        Ok(Self {
            tokens: Tensor::new(batch.token_ids.as_slice(), dev)?,
            positions: Tensor::new(batch.positions.as_slice(), dev)?,
            write_index,
            groups,
            out_rows: if identity { None } else { Some(Tensor::new(plan.out_rows.as_slice(), dev)?) },
            logits_rows: Tensor::new(batch.logits_indices.as_slice(), dev)?,
        })
    }

    /// Attention of `layer` for queries `q` (`[tokens, heads, head_dim]`, RoPE applied), once the step's keys and
    /// values are in `kv`; `windowed`: the layer applies the model's sliding window (if it has one). Returns
    /// `[tokens, heads * head_dim]`.
    pub(crate) fn attend(&self, layer: usize, windowed: bool, q: &Tensor, kv: &PagedKv, h: Heads) -> Result<Tensor> {
        let g_heads = h.heads / h.kv_heads;
        let d = h.head_dim;
        let scale = h.scale;
        let mut outs = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let (n, l, c) = (g.n, g.q_len, g.ctx);
            // [n*l, H, D] -> [n, KVH, G*l, D]: query head kvh*G + j uses KV head kvh.
            let qg = q
                .index_select(&g.q_rows, 0)?
                .reshape((n, l, h.kv_heads, g_heads, d))?
                .permute((0, 2, 3, 1, 4))?
                .reshape((n, h.kv_heads, g_heads * l, d))?;
            let (k, v) = kv.gather(layer, &g.kv_slots)?;
            let mut k = k.reshape((n, c, h.kv_heads, d))?.transpose(1, 2)?;
            let mut v = v.reshape((n, c, h.kv_heads, d))?.transpose(1, 2)?;
            if n > 1 {
                // The matmul takes strided matrices but not these strided batch dimensions.
                k = k.contiguous()?;
                v = v.contiguous()?;
            }
            let scores = (qg.matmul(&k.t()?)? * scale)?.reshape((n, h.kv_heads, g_heads, l, c))?.broadcast_add(
                match (&g.mask_full, windowed) {
                    (Some(full), false) => full,
                    _ => &g.mask,
                },
            )?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((n, h.kv_heads, g_heads * l, c))?;
            let out = probs
                .matmul(&v)?
                .reshape((n, h.kv_heads, g_heads, l, d))?
                .permute((0, 3, 1, 2, 4))?
                .reshape((n * l, h.heads * d))?;
            outs.push(out);
        }
        let stacked = if outs.len() == 1 { outs.swap_remove(0) } else { Tensor::cat(&outs, 0)? };
        match &self.out_rows {
            Some(rows) => stacked.index_select(rows, 0),
            None => Ok(stacked),
        }
    }
}
