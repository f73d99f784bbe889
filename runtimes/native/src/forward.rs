//! One engine step through the model: embed the packed tokens, run every layer (keys and values written into the
//! paged pool at the step's slots, attention read through each sequence's block table), and compute logits only at
//! the rows the step asks for. Buffers live in a [`Workspace`] that grows to the largest step and is then reused.

use nano_vllm_engine::{BatchLimits, StepBatch};

use crate::error::NativeError;
use crate::kernels::attention::{self, Heads, attend_head, key_index};
use crate::kernels::isa::Isa;
use crate::kernels::panels;
use crate::kernels::{OutPtr, for_each_task, gelu_erf, gelu_tanh, gelu_tanh_mul, silu_mul};
use crate::model::{Embedding, Mlp, Model};
use nano_vllm_bundle::Activation;

/// The paged KV cache: per layer, values `[slot][kv_head][head_dim]` and keys by block, transposed
/// (`[block][kv_head][head_dim][block_size]`, [`key_index`]).
#[derive(Debug)]
pub struct KvPool {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub num_slots: usize,
    pub block_size: usize,
}

impl KvPool {
    pub fn new(model: &Model, num_blocks: usize, block_size: usize) -> Self {
        let num_slots = num_blocks * block_size;
        let per_layer = num_slots * model.config.num_kv_heads * model.config.head_dim;
        let n = model.config.num_layers;
        Self {
            k: (0..n).map(|_| vec![0.0; per_layer]).collect(),
            v: (0..n).map(|_| vec![0.0; per_layer]).collect(),
            num_slots,
            block_size,
        }
    }
}

/// Per-step buffers, reused across steps.
#[derive(Debug, Default)]
pub struct Workspace {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    mlp: Vec<f32>,
    act: Vec<f32>,
    rows: Vec<f32>,
    rows_normed: Vec<f32>,
    /// For each packed token, the range of `ctx_slots` it attends to (its window, where the model has one), widened
    /// back to a multiple of `attention::KEYS` positions, and how many positions that put before the window.
    token_ctx: Vec<(usize, usize, usize)>,
    /// As `token_ctx`, the whole context: for the layers without the window of a model whose layers differ.
    token_ctx_full: Vec<(usize, usize, usize)>,
    /// Per sequence, the slots of its context positions, concatenated.
    ctx_slots: Vec<u32>,
    /// The quantized products' buffers.
    quant: crate::kernels::quant::Scratch,
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Checks the step's inputs against the model and the pool.
fn validate(model: &Model, kv: &KvPool, batch: &StepBatch) -> Result<(), NativeError> {
    let c = &model.config;
    let limits = BatchLimits {
        vocab_size: c.vocab_size,
        max_positions: Some(c.max_position_embeddings),
        kv_slots: Some(kv.num_slots),
    };
    batch.validate(&limits)?;
    if batch.block_size != kv.block_size {
        return Err(NativeError::BlockSize { step: batch.block_size, cache: kv.block_size });
    }
    Ok(())
}

/// Runs one step; returns `[logits_indices.len(), vocab]` logits.
pub fn forward(
    model: &Model,
    kv: &mut KvPool,
    ws: &mut Workspace,
    batch: &StepBatch,
    threads: usize,
) -> Result<Vec<f32>, NativeError> {
    validate(model, kv, batch)?;
    let c = &model.config;
    let (t, hd, d) = (batch.num_tokens(), c.hidden_size, c.head_dim);
    let (nh, nkv) = (c.num_heads, c.num_kv_heads);
    let q_width = nh * d;
    let qkv_width = (nh + 2 * nkv) * d;
    let heads = Heads {
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: d,
        scale: c.attention_scale as f32,
        block_size: batch.block_size,
    };

    // Context slots of every sequence, and each token's window into them.
    let bs = batch.block_size;
    ws.ctx_slots.clear();
    ws.token_ctx.clear();
    ws.token_ctx_full.clear();
    let mixed = c.sliding_window.is_some() && !c.full_attention_layers.is_empty();
    for e in &batch.seqs {
        let start = ws.ctx_slots.len();
        let table = batch.block_table(e);
        for p in 0..e.context_len() {
            ws.ctx_slots.push(table[p / bs] * bs as u32 + (p % bs) as u32);
        }
        for j in 0..e.query_len {
            let p = e.num_computed_tokens + j;
            let first = c.sliding_window.map_or(0, |w| (p + 1).saturating_sub(w));
            let skip = first % attention::KEYS;
            ws.token_ctx.push((start + first - skip, start + p + 1, skip));
            if mixed {
                ws.token_ctx_full.push((start, start + p + 1, 0));
            }
        }
    }

    // Embeddings.
    let x = grow(&mut ws.x, t * hd);
    for (k, row) in x.chunks_exact_mut(hd).enumerate() {
        model.embed.row_into(batch.token_ids[k] as usize, row);
        if let Some(scale) = model.embed_scale {
            row.iter_mut().for_each(|v| *v *= scale);
        }
        if let Some(wpe) = &model.pos_embed {
            let p = batch.positions[k] as usize;
            for (v, &w) in row.iter_mut().zip(&wpe[p * hd..(p + 1) * hd]) {
                *v += w;
            }
        }
    }

    for (li, layer) in model.layers.iter().enumerate() {
        // Attention block.
        let h = grow(&mut ws.h, t * hd);
        layer.attn_norm.forward(&ws.x[..t * hd], h);
        let qkv = grow(&mut ws.qkv, t * qkv_width);
        layer.qkv.forward(&ws.h[..t * hd], t, qkv, threads, &mut ws.quant);
        let (kp, vp) = (&mut kv.k[li], &mut kv.v[li]);
        // Gemma 3's windowed layers rotate with their own base.
        let rope = match &model.rope_local {
            Some(local) if c.window(li).is_some() => Some(local),
            _ => model.rope.as_ref(),
        };
        for (k, row) in qkv.chunks_exact_mut(qkv_width).enumerate() {
            let (q, rest) = row.split_at_mut(q_width);
            let (kk, vv) = rest.split_at_mut(nkv * d);
            if let Some((q_norm, k_norm)) = &layer.qk_norm {
                q_norm.forward_in_place(q);
                k_norm.forward_in_place(kk);
            }
            if let Some(rope) = rope {
                let p = batch.positions[k] as usize;
                if model.rope_adjacent {
                    rope.apply_adjacent(q, p);
                    rope.apply_adjacent(kk, p);
                } else {
                    rope.apply(q, p);
                    rope.apply(kk, p);
                }
            }
            let slot = batch.slot_mapping[k] as usize;
            for (g, key) in kk.chunks_exact(d).enumerate() {
                let base = key_index(&heads, slot, g, 0);
                for (dim, &x) in key.iter().enumerate() {
                    kp[base + dim * bs] = x;
                }
            }
            let s = slot * nkv * d;
            vp[s..s + nkv * d].copy_from_slice(vv);
        }
        let attn = grow(&mut ws.attn, t * q_width);
        // Each token's window, or its whole context in a layer without the window.
        let token_ctx = if mixed && c.window(li).is_none() { &ws.token_ctx_full } else { &ws.token_ctx };
        let (qkv, ctx_slots) = (&ws.qkv[..t * qkv_width], &ws.ctx_slots);
        let (kp, vp) = (&kv.k[li][..], &kv.v[li][..]);
        // One task per (token, head): a decode step's single token spreads its heads over the threads.
        let out = OutPtr(attn.as_mut_ptr());
        for_each_task(t * nh, threads, |i| {
            let (k, h) = (i / nh, i % nh);
            let (a, b, skip) = token_ctx[k];
            let q = &qkv[k * qkv_width + h * d..k * qkv_width + (h + 1) * d];
            // SAFETY: task i writes elements [i * d, (i + 1) * d) of attn (t * nh * d long), which no other task
            // writes; attn is borrowed mutably for the whole loop.
            let out = unsafe { std::slice::from_raw_parts_mut(out.get().add(i * d), d) };
            SCRATCH.with_borrow_mut(|scratch| attend_head(q, h, &ctx_slots[a..b], skip, kp, vp, heads, out, scratch));
        });
        let tmp = grow(&mut ws.tmp, t * hd);
        layer.o.forward(&ws.attn[..t * q_width], t, tmp, threads, &mut ws.quant);
        if let Some((post_attn, _)) = &layer.post_norms {
            post_attn.forward_in_place(&mut ws.tmp[..t * hd]);
        }
        add_into(&mut ws.x[..t * hd], &ws.tmp[..t * hd]);

        // MLP block.
        let h = grow(&mut ws.h, t * hd);
        layer.mlp_norm.forward(&ws.x[..t * hd], h);
        match &layer.mlp {
            Mlp::Gated { gate_up, down, act: activation } => {
                let i = down.inp;
                let mlp = grow(&mut ws.mlp, t * 2 * i);
                gate_up.forward(&ws.h[..t * hd], t, mlp, threads, &mut ws.quant);
                let act = grow(&mut ws.act, t * i);
                for (row, out) in ws.mlp[..t * 2 * i].chunks_exact_mut(2 * i).zip(act.chunks_exact_mut(i)) {
                    let (g, u) = row.split_at_mut(i);
                    match activation {
                        Activation::Silu => silu_mul(g, u),
                        Activation::GeluTanh => gelu_tanh_mul(g, u),
                        Activation::Gelu => {
                            gelu_erf(g);
                            g.iter_mut().zip(&*u).for_each(|(g, &u)| *g *= u);
                        }
                    }
                    out.copy_from_slice(g);
                }
                down.forward(&ws.act[..t * i], t, grow(&mut ws.tmp, t * hd), threads, &mut ws.quant);
            }
            Mlp::Plain { fc, proj, act } => {
                let i = fc.out;
                let mlp = grow(&mut ws.mlp, t * i);
                fc.forward(&ws.h[..t * hd], t, mlp, threads, &mut ws.quant);
                match act {
                    Activation::Gelu => gelu_erf(mlp),
                    Activation::GeluTanh => gelu_tanh(mlp),
                    Activation::Silu => mlp.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp()),
                }
                proj.forward(&ws.mlp[..t * i], t, grow(&mut ws.tmp, t * hd), threads, &mut ws.quant);
            }
        }
        if let Some((_, post_mlp)) = &layer.post_norms {
            post_mlp.forward_in_place(&mut ws.tmp[..t * hd]);
        }
        add_into(&mut ws.x[..t * hd], &ws.tmp[..t * hd]);
    }

    // Logits only where asked.
    let r = batch.logits_indices.len();
    let rows = grow(&mut ws.rows, r * hd);
    for (row, &i) in rows.chunks_exact_mut(hd).zip(&batch.logits_indices) {
        row.copy_from_slice(&ws.x[i as usize * hd..(i as usize + 1) * hd]);
    }
    let normed = grow(&mut ws.rows_normed, r * hd);
    model.final_norm.forward(&ws.rows[..r * hd], normed);
    let v = c.vocab_size;
    let mut logits = vec![0.0f32; r * v];
    match (&model.lm_head, &model.embed) {
        (Some(head), _) => head.forward(&ws.rows_normed[..r * hd], r, &mut logits, threads, &mut ws.quant),
        (None, Embedding::F32(e)) => {
            panels::matmul(&ws.rows_normed[..r * hd], r, e, &mut logits, threads, Isa::detect());
            debug_assert_eq!(e.out(), v);
        }
        (None, Embedding::Quant(_)) => unreachable!("a quantized embedding always has its head (Model::llama, gpt2)"),
    }
    Ok(logits)
}

thread_local! {
    /// A worker's attention buffers, kept for the thread's life.
    static SCRATCH: std::cell::RefCell<attention::Scratch> = std::cell::RefCell::new(attention::Scratch::default());
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
