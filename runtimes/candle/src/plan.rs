//! How one engine step is attended: the bookkeeping between the packed `StepBatch` and the batched attention, with
//! no tensor in sight (so it is checked and tested on its own).
//!
//! Sequences are put in attention groups, each computed as one padded batch: every decode token (query length 1)
//! of the step in one group, and each prefill chunk in a group of its own, so padding costs at most the spread of
//! the decoding sequences' context lengths and nothing for chunks. A group of `n` sequences has `q_len` query rows
//! and `ctx` key positions per sequence (its longest); for each it lists the packed rows of its queries, the KV
//! slots of its keys (read through the block table) and an additive mask: 0 where query position `p` may see key
//! position `c` (`c <= p`, and `p - c < window` with a sliding window), -inf elsewhere. Padding rows and keys repeat
//! the sequence's first real one (so they hold finite values); padding keys are masked, padding query rows see
//! every key and are dropped.
//!
//! Validation: the engine's [`StepBatch::validate`] (ranges, positions, token ids, the model's context, each slot
//! inside the pool and where the block table puts it), then that every packed token belongs to exactly one sequence.

use nano_vllm_engine::{BatchLimits, SeqBatchEntry, StepBatch};

use crate::error::CandleError;

/// What the plan checks a step against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub num_slots: usize,
    pub block_size: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub sliding_window: Option<usize>,
    /// Some layers attend to the whole context although the model has a `sliding_window`: the plan also carries
    /// the full causal mask for them.
    pub full_attention_layers: bool,
}

/// Sequences attended as one padded batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttnGroup {
    pub n: usize,
    pub q_len: usize,
    pub ctx: usize,
    /// `[n * q_len]`: packed token row of each query.
    pub q_rows: Vec<u32>,
    /// `[n * ctx]`: KV slot of each key position.
    pub kv_slots: Vec<u32>,
    /// `[n * q_len * ctx]`: additive mask.
    pub mask: Vec<f32>,
    /// As `mask` without the sliding window, for the layers that have none (only when the model's layers differ).
    pub mask_full: Option<Vec<f32>>,
}

/// One step's attention plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPlan {
    pub num_tokens: usize,
    pub groups: Vec<AttnGroup>,
    /// `[num_tokens]`: for each packed token, its row in the groups' outputs stacked in order.
    pub out_rows: Vec<u32>,
}

fn malformed(msg: String) -> CandleError {
    CandleError::MalformedStep(msg)
}

/// The KV slot of `position` through a block table (validated: the table covers the context, inside the pool).
fn slot_of(table: &[u32], position: usize, block_size: usize) -> u32 {
    table[position / block_size] * block_size as u32 + (position % block_size) as u32
}

impl StepPlan {
    pub(crate) fn new(batch: &StepBatch, limits: &Limits) -> Result<Self, CandleError> {
        if batch.block_size != limits.block_size {
            return Err(CandleError::BlockSizeMismatch { prepared: limits.block_size, got: batch.block_size });
        }
        batch.validate(&BatchLimits {
            vocab_size: limits.vocab_size,
            max_positions: Some(limits.max_positions),
            kv_slots: Some(limits.num_slots),
        })?;
        let t = batch.token_ids.len();
        let (decodes, chunks): (Vec<&SeqBatchEntry>, Vec<&SeqBatchEntry>) =
            batch.seqs.iter().partition(|e| e.query_len == 1);
        let mut groups = Vec::with_capacity(chunks.len() + 1);
        if !decodes.is_empty() {
            groups.push(group(batch, &decodes, limits));
        }
        for e in chunks {
            groups.push(group(batch, &[e], limits));
        }
        // Which output row each packed token lands in.
        let mut out_rows = vec![u32::MAX; t];
        let mut base = 0usize;
        for g in &groups {
            for s in 0..g.n {
                for i in 0..g.q_len {
                    let row = g.q_rows[s * g.q_len + i] as usize;
                    // Padding rows repeat a real row of their sequence, which was already placed.
                    if out_rows[row] == u32::MAX {
                        out_rows[row] = (base + s * g.q_len + i) as u32;
                    }
                }
            }
            base += g.n * g.q_len;
        }
        if let Some(row) = out_rows.iter().position(|&r| r == u32::MAX) {
            return Err(malformed(format!("packed token {row} belongs to no sequence")));
        }
        let claimed: usize = batch.seqs.iter().map(|e| e.query_len).sum();
        if claimed != t {
            return Err(malformed(format!("sequences claim {claimed} tokens, the step packs {t}")));
        }
        Ok(Self { num_tokens: t, groups, out_rows })
    }
}

fn group(batch: &StepBatch, entries: &[&SeqBatchEntry], limits: &Limits) -> AttnGroup {
    let n = entries.len();
    let q_len = entries.iter().map(|e| e.query_len).max().unwrap_or(1);
    let ctx = entries.iter().map(|e| e.context_len()).max().unwrap_or(1);
    let mut g = AttnGroup {
        n,
        q_len,
        ctx,
        q_rows: Vec::with_capacity(n * q_len),
        kv_slots: Vec::with_capacity(n * ctx),
        mask: Vec::with_capacity(n * q_len * ctx),
        mask_full: None,
    };
    let mixed = limits.sliding_window.is_some() && limits.full_attention_layers;
    let mut full = Vec::with_capacity(if mixed { n * q_len * ctx } else { 0 });
    for e in entries {
        let table = batch.block_table(e);
        let context = e.context_len();
        for i in 0..q_len {
            g.q_rows.push((e.query_start + i.min(e.query_len - 1)) as u32);
        }
        let first = slot_of(table, 0, limits.block_size);
        for c in 0..ctx {
            g.kv_slots.push(if c < context { slot_of(table, c, limits.block_size) } else { first });
        }
        for i in 0..q_len {
            if i >= e.query_len {
                g.mask.extend(std::iter::repeat_n(0.0, ctx));
                if mixed {
                    full.extend(std::iter::repeat_n(0.0, ctx));
                }
                continue;
            }
            let p = e.num_computed_tokens + i;
            g.mask.extend((0..ctx).map(|c| {
                let visible = c <= p && limits.sliding_window.is_none_or(|w| p - c < w);
                if visible { 0.0 } else { f32::NEG_INFINITY }
            }));
            if mixed {
                full.extend((0..ctx).map(|c| if c <= p { 0.0 } else { f32::NEG_INFINITY }));
            }
        }
    }
    g.mask_full = mixed.then_some(full);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        num_slots: 64,
        block_size: 4,
        vocab_size: 100,
        max_positions: 32,
        sliding_window: None,
        full_attention_layers: false,
    };

    fn entry(
        seq_id: u64,
        query_start: usize,
        query_len: usize,
        computed: usize,
        table: (usize, usize),
        logits_start: usize,
    ) -> SeqBatchEntry {
        SeqBatchEntry {
            seq_id,
            query_start,
            query_len,
            num_computed_tokens: computed,
            num_cached_tokens: 0,
            block_table_start: table.0,
            block_table_len: table.1,
            logits_start,
            num_logits: 1,
            samples: true,
            is_prefill: query_len > 1,
        }
    }

    /// Seq 7: a 3-token chunk after 2 computed tokens, blocks [5, 2]. Seq 9: one decode token at position 4 (after 4
    /// computed), blocks [1, 3]. Seq 11: a decode token at position 0, block [6].
    fn mixed() -> StepBatch {
        StepBatch {
            block_size: 4,
            seqs: vec![entry(7, 0, 3, 2, (0, 2), 0), entry(9, 3, 1, 4, (2, 2), 1), entry(11, 4, 1, 0, (4, 1), 2)],
            token_ids: vec![10, 11, 12, 13, 14],
            positions: vec![2, 3, 4, 4, 0],
            slot_mapping: vec![22, 23, 8, 12, 24],
            block_tables: vec![5, 2, 1, 3, 6],
            logits_indices: vec![2, 3, 4],
        }
    }

    #[test]
    fn decodes_share_a_group_and_chunks_get_their_own() {
        let plan = StepPlan::new(&mixed(), &LIMITS).unwrap();
        assert_eq!(plan.groups.len(), 2);
        let d = &plan.groups[0];
        assert_eq!((d.n, d.q_len, d.ctx), (2, 1, 5));
        assert_eq!(d.q_rows, [3, 4]);
        // Seq 9 reads positions 0..5 through [1, 3]; seq 11 has one key (slot 24), padded with it.
        assert_eq!(d.kv_slots, [4, 5, 6, 7, 12, 24, 24, 24, 24, 24]);
        let inf = f32::NEG_INFINITY;
        assert_eq!(d.mask, [0., 0., 0., 0., 0., 0., inf, inf, inf, inf]);
        let c = &plan.groups[1];
        assert_eq!((c.n, c.q_len, c.ctx), (1, 3, 5));
        assert_eq!(c.q_rows, [0, 1, 2]);
        assert_eq!(c.kv_slots, [20, 21, 22, 23, 8]);
        // Causal within the chunk, full view of the 2 computed tokens.
        assert_eq!(c.mask, [0., 0., 0., inf, inf, 0., 0., 0., 0., inf, 0., 0., 0., 0., 0.]);
        // Decode rows come first in the output: tokens 3, 4 -> rows 0, 1; the chunk's tokens 0..3 -> rows 2..5.
        assert_eq!(plan.out_rows, [2, 3, 4, 0, 1]);
    }

    #[test]
    fn sliding_window_hides_keys_a_window_back() {
        let limits = Limits { sliding_window: Some(2), ..LIMITS };
        let plan = StepPlan::new(&mixed(), &limits).unwrap();
        let inf = f32::NEG_INFINITY;
        // Seq 9 at position 4 sees positions 3 and 4 only.
        assert_eq!(&plan.groups[0].mask[..5], [inf, inf, inf, 0., 0.]);
        // Seq 7's chunk at positions 2, 3, 4.
        let rows = [inf, 0., 0., inf, inf, inf, inf, 0., 0., inf, inf, inf, inf, 0., 0.];
        assert_eq!(plan.groups[1].mask, rows);
        // Every layer windowed: no second mask.
        assert!(plan.groups.iter().all(|g| g.mask_full.is_none()));
    }

    #[test]
    fn layers_without_the_window_get_the_causal_mask_beside_it() {
        let limits = Limits { sliding_window: Some(2), full_attention_layers: true, ..LIMITS };
        let plan = StepPlan::new(&mixed(), &limits).unwrap();
        let windowed = StepPlan::new(&mixed(), &Limits { sliding_window: Some(2), ..LIMITS }).unwrap();
        let causal = StepPlan::new(&mixed(), &LIMITS).unwrap();
        for ((g, w), c) in plan.groups.iter().zip(&windowed.groups).zip(&causal.groups) {
            assert_eq!(g.mask, w.mask);
            assert_eq!(g.mask_full.as_ref(), Some(&c.mask));
        }
    }

    #[test]
    fn bad_steps_are_errors_naming_what_is_wrong() {
        let err = |f: &dyn Fn(&mut StepBatch)| {
            let mut b = mixed();
            f(&mut b);
            StepPlan::new(&b, &LIMITS).unwrap_err().to_string()
        };
        assert_eq!(err(&|b| b.token_ids[1] = 100), "sequence 7: token id 100 is outside the vocabulary (100)");
        assert_eq!(
            err(&|b| b.slot_mapping[0] = 21),
            "sequence 7: position 2 has KV slot 21, but its block table puts it at 22"
        );
        assert_eq!(err(&|b| b.block_tables[4] = 16), "sequence 11: KV slot 64 is outside the pool of 64 slots");
        assert_eq!(
            err(&|b| b.seqs[1].block_table_len = 1),
            "sequence 9: position 4 is beyond its block table of 1 blocks"
        );
        assert_eq!(err(&|b| b.seqs[0].query_len = 6), "sequence 7: query 0..+6 is outside the step's 5 tokens");
        assert_eq!(err(&|b| b.logits_indices.push(4)), "the sequences own 3 logit rows, but the step asks for 4");
        assert_eq!(
            err(&|b| b.positions[3] = 5),
            "sequence 9: token 0 is at position 5, expected 4 (computed tokens + index)"
        );
        assert_eq!(err(&|b| b.block_size = 8), "step block size 8 differs from the prepared block size 4");
        let short = Limits { max_positions: 4, ..LIMITS };
        let e = StepPlan::new(&mixed(), &short).unwrap_err().to_string();
        assert_eq!(e, "sequence 7: position 4 is beyond the model's 4 positions");
    }
}
