//! The persistent step batch, as vLLM V1's `InputBatch` keeps it: each running sequence owns a row of the
//! block-table matrix from its admission until it finishes or is aborted, and a step writes only what changed
//! since the last one: the scheduled sequences' new tokens, positions and KV slots, and the blocks their tables
//! gained (one block every `block_size` decode steps). Nothing is copied for a sequence whose table did not grow.
//!
//! A preempted sequence keeps its row while it waits; its next admission rewrites the row whole (its table was
//! rebuilt, prefix hits included). Rows are reused in last-freed-first order.
//!
//! Costs per step: O(scheduled sequences + scheduled tokens + blocks gained); no allocation once the buffers have
//! grown to the largest step.

use crate::batch::{SeqBatchEntry, StepBatch};
use crate::sampling::LogitsCapture;
use crate::scheduler::Scheduled;
use crate::sequence::Sequence;

/// Prefill counts of a built step, for its statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchCounts {
    pub(crate) prefill_seqs: usize,
    pub(crate) prefill_tokens: usize,
}

#[derive(Debug, Default)]
pub(crate) struct InputBatch {
    batch: StepBatch,
    /// Blocks a row can hold: the table of a `max_model_len`-token sequence.
    stride: usize,
    /// Blocks written to each row.
    row_len: Vec<usize>,
    free_rows: Vec<u32>,
    /// The `running()` index of each entry of `batch.seqs`.
    entry_index: Vec<usize>,
}

impl InputBatch {
    pub(crate) fn new(block_size: usize, max_model_len: usize) -> Self {
        Self {
            batch: StepBatch { block_size, ..StepBatch::default() },
            stride: max_model_len.div_ceil(block_size),
            ..Self::default()
        }
    }

    pub(crate) fn batch(&self) -> &StepBatch {
        &self.batch
    }

    /// The `running()` index of each entry of the batch.
    pub(crate) fn entry_index(&self) -> &[usize] {
        &self.entry_index
    }

    /// Packs the scheduled sequences' new tokens and brings their rows up to date.
    pub(crate) fn build(&mut self, running: &mut [Sequence], scheduled: &[Scheduled]) -> BatchCounts {
        let bs = self.batch.block_size;
        self.batch.clear();
        self.entry_index.clear();
        let mut counts = BatchCounts::default();
        for s in scheduled {
            let seq = &mut running[s.index];
            let row = self.sync_row(seq, s.admitted);
            let b = &mut self.batch;
            let (start, n) = (seq.num_computed_tokens, s.num_new_tokens);
            let end = start + n;
            let samples = end == seq.len();
            let is_prefill = n > 1 || seq.num_output_tokens() == 0;
            let query_start = b.token_ids.len();
            if n == 1 {
                // A decode (or a one-token chunk): its position lies in the table's last block, no division needed.
                let block = seq.block_table.len() - 1;
                debug_assert_eq!(block, start / bs, "seq {}: the table covers exactly its scheduled tokens", seq.id);
                b.token_ids.push(seq.token_ids[start]);
                b.positions.push(start as u32);
                b.slot_mapping.push(seq.block_table[block] * bs as u32 + (start - block * bs) as u32);
            } else {
                b.token_ids.extend_from_slice(&seq.token_ids[start..end]);
                b.positions.extend(start as u32..end as u32);
                // One division per sequence; offsets advance from there.
                let (mut block, mut offset) = (start / bs, start % bs);
                for _ in start..end {
                    b.slot_mapping.push(seq.block_table[block] * bs as u32 + offset as u32);
                    offset += 1;
                    if offset == bs {
                        (block, offset) = (block + 1, 0);
                    }
                }
            }
            let logits_start = b.logits_indices.len();
            if seq.params.logits == LogitsCapture::All {
                b.logits_indices.extend((query_start..query_start + n).map(|i| i as u32));
            } else if samples {
                b.logits_indices.push((query_start + n - 1) as u32);
            }
            b.seqs.push(SeqBatchEntry {
                seq_id: seq.id,
                query_start,
                query_len: n,
                num_computed_tokens: start,
                num_cached_tokens: seq.num_cached_tokens,
                block_table_start: row * self.stride,
                block_table_len: seq.block_table.len(),
                logits_start,
                num_logits: b.logits_indices.len() - logits_start,
                samples,
                is_prefill,
            });
            self.entry_index.push(s.index);
            if is_prefill {
                counts.prefill_seqs += 1;
                counts.prefill_tokens += n;
            }
        }
        counts
    }

    /// The sequence's row, holding its whole block table: a new row at its first admission, rewritten whole at any
    /// admission, else extended by the blocks gained since the last step.
    fn sync_row(&mut self, seq: &mut Sequence, admitted: bool) -> usize {
        let row = match seq.batch_row {
            Some(row) => row as usize,
            None => {
                let row = self.take_row();
                seq.batch_row = Some(row as u32);
                row
            }
        };
        if admitted {
            self.row_len[row] = 0;
        }
        let have = self.row_len[row];
        let table = &seq.block_table;
        if table.len() > have {
            // The engine refuses sequences longer than max_model_len, whose tables fit a row.
            assert!(
                table.len() <= self.stride,
                "seq {}: {} blocks exceed a row of {}",
                seq.id,
                table.len(),
                self.stride
            );
            let base = row * self.stride;
            self.batch.block_tables[base + have..base + table.len()].copy_from_slice(&table[have..]);
            self.row_len[row] = table.len();
        }
        row
    }

    fn take_row(&mut self) -> usize {
        if let Some(row) = self.free_rows.pop() {
            return row as usize;
        }
        let row = self.row_len.len();
        self.row_len.push(0);
        self.batch.block_tables.resize((row + 1) * self.stride, 0);
        row
    }

    /// The sequence left for good (finished or aborted): its row is free for another.
    pub(crate) fn release(&mut self, seq: &mut Sequence) {
        if let Some(row) = seq.batch_row.take() {
            self.row_len[row as usize] = 0;
            self.free_rows.push(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sampling::SamplingParams;

    fn seq(id: u64, tokens: Vec<u32>, table: Vec<u32>, computed: usize) -> Sequence {
        let mut s = Sequence::new(id, tokens, SamplingParams::greedy(4), Instant::now());
        s.block_table = table;
        s.num_computed_tokens = computed;
        s
    }

    #[test]
    fn rows_persist_and_grow_by_the_blocks_gained() {
        let mut ib = InputBatch::new(4, 16);
        let mut running = vec![seq(1, (0..6).collect(), vec![7, 3], 0), seq(2, (0..3).collect(), vec![5], 0)];
        let admit = [
            Scheduled { index: 0, num_new_tokens: 6, admitted: true },
            Scheduled { index: 1, num_new_tokens: 3, admitted: true },
        ];
        let counts = ib.build(&mut running, &admit);
        assert_eq!(counts, BatchCounts { prefill_seqs: 2, prefill_tokens: 9 });
        let b = ib.batch();
        assert_eq!(b.slot_mapping, [28, 29, 30, 31, 12, 13, 20, 21, 22]);
        assert_eq!((b.block_table(&b.seqs[0]), b.block_table(&b.seqs[1])), (&[7, 3][..], &[5][..]));
        assert_eq!(b.logits_indices, [5, 8]);
        // Decode steps for the second only: position 3 ends its first block, position 4 needs a second.
        running[1].num_computed_tokens = 3;
        running[1].token_ids.push(9);
        ib.build(&mut running, &[Scheduled { index: 1, num_new_tokens: 1, admitted: false }]);
        let b = ib.batch();
        assert_eq!(
            (b.token_ids.as_slice(), b.positions.as_slice(), b.slot_mapping.as_slice()),
            (&[9][..], &[3][..], &[23][..])
        );
        assert!(!b.seqs[0].is_prefill && b.seqs[0].samples);
        running[1].num_computed_tokens = 4;
        running[1].token_ids.push(8);
        running[1].block_table.push(2);
        ib.build(&mut running, &[Scheduled { index: 1, num_new_tokens: 1, admitted: false }]);
        let b = ib.batch();
        assert_eq!((b.positions.as_slice(), b.slot_mapping.as_slice()), (&[4][..], &[8][..]));
        assert_eq!(b.block_table(&b.seqs[0]), [5, 2]);
        // Readmitted with another table (after a preemption): the row is rewritten whole.
        running[0].block_table = vec![1];
        running[0].num_computed_tokens = 0;
        ib.build(&mut running, &[Scheduled { index: 0, num_new_tokens: 4, admitted: true }]);
        assert_eq!(ib.batch().block_table(&ib.batch().seqs[0]), [1]);
        // A released row is handed to the next new sequence.
        let row = running[0].batch_row;
        ib.release(&mut running[0]);
        let mut third = vec![seq(3, vec![1, 2], vec![6], 0)];
        ib.build(&mut third, &[Scheduled { index: 0, num_new_tokens: 2, admitted: true }]);
        assert_eq!(third[0].batch_row, row);
        assert_eq!(ib.batch().block_table(&ib.batch().seqs[0]), [6]);
    }
}
