//! Serving prefix-cache hits by copying keys and values from a sequence that holds them
//! (`PrefixReuse::CopyFromHolder`).
//!
//! The engine reports a hit on a sequence's first blocks only when each of those blocks is held, at the same place
//! of its table, by some running sequence that computed it (the blocks' contents are identified by their chained
//! hashes, so any such holder has the same keys and values). Consecutive blocks may be held by different sequences
//! (two sequences that computed the same prefix each have their own copy). This runtime sees every scheduled
//! sequence's block table each step and remembers the latest one per sequence until `release`; a running sequence's
//! table only grows, so a remembered table's prefix stays valid. A new sequence with `num_cached_tokens = c` is
//! served by copying the first `c` tokens of past from one sequence whose table starts with the same block ids when
//! there is one, and otherwise block by block from each block's holder. Cost: one copy of `c` tokens of keys and
//! values either way.

use std::collections::HashMap;

use nano_vllm_engine::SeqId;

/// The latest block table of every sequence the runtime holds keys and values for.
#[derive(Debug, Clone, Default)]
pub struct BlockTables {
    tables: HashMap<SeqId, Vec<u32>>,
}

impl BlockTables {
    /// Remembers `seq_id`'s table as given in this step.
    pub fn record(&mut self, seq_id: SeqId, table: &[u32]) {
        let stored = self.tables.entry(seq_id).or_default();
        stored.clear();
        stored.extend_from_slice(table);
    }

    pub fn forget(&mut self, seq_id: SeqId) {
        self.tables.remove(&seq_id);
    }

    /// A sequence other than `seq_id` whose table starts with `blocks` and for which `computed(id)` is at least
    /// `tokens`; the smallest such id, so that the choice is deterministic.
    pub fn holder(
        &self,
        seq_id: SeqId,
        blocks: &[u32],
        tokens: usize,
        computed: impl Fn(SeqId) -> usize,
    ) -> Option<SeqId> {
        self.tables
            .iter()
            .filter(|(id, table)| **id != seq_id && table.starts_with(blocks) && computed(**id) >= tokens)
            .map(|(id, _)| *id)
            .min()
    }
}

impl BlockTables {
    /// A sequence other than `seq_id` that has `block` at `index` of its table and has computed at least `tokens`;
    /// the smallest such id.
    pub fn block_holder(
        &self,
        seq_id: SeqId,
        index: usize,
        block: u32,
        tokens: usize,
        computed: impl Fn(SeqId) -> usize,
    ) -> Option<SeqId> {
        self.tables
            .iter()
            .filter(|(id, table)| **id != seq_id && table.get(index) == Some(&block) && computed(**id) >= tokens)
            .map(|(id, _)| *id)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_the_same_blocks_that_computed_them() {
        let mut t = BlockTables::default();
        t.record(1, &[4, 5, 6]);
        t.record(2, &[4, 5, 9, 10]);
        t.record(3, &[7, 5]);
        let computed = |id: SeqId| [0, 48, 40, 32][id as usize];
        // Seq 9 hits blocks [4, 5] (32 tokens of block size 16): seqs 1 and 2 hold them; the smaller id is taken.
        assert_eq!(t.holder(9, &[4, 5], 32, computed), Some(1));
        // Blocks [4, 5, 9]: only seq 2.
        assert_eq!(t.holder(9, &[4, 5, 9], 48, |id| if id == 2 { 48 } else { 0 }), Some(2));
        // Seq 2 has computed only 40 of the 48 tokens.
        assert_eq!(t.holder(9, &[4, 5, 9], 48, computed), None);
        // Never the sequence itself; a forgotten one is gone.
        assert_eq!(t.holder(3, &[7], 16, computed), None);
        t.forget(1);
        assert_eq!(t.holder(9, &[4, 5], 32, computed), Some(2));
        // Block by block: [4, 5, 9] is held by seq 2 at 0..3; [4, 7] has no holder for block 7 at index 1.
        assert_eq!(t.block_holder(9, 2, 9, 48, |_| 48), Some(2));
        assert_eq!(t.block_holder(9, 1, 7, 32, |_| 48), None);
        // A table is replaced, not appended to.
        t.record(2, &[8]);
        assert_eq!(t.holder(9, &[4, 5], 32, computed), None);
    }
}
