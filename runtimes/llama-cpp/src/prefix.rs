//! Serving prefix-cache hits by copying cells from a sequence that holds them (`PrefixReuse::CopyFromHolder`).
//!
//! The engine reports a hit on a sequence's first blocks only when each of those blocks is held, at the same index
//! of its table, by some running sequence that computed it; consecutive blocks may be held by different sequences
//! (two sequences that computed the same prefix each have their own copy). The runtime sees every scheduled
//! sequence's block table each step and keeps the latest one per sequence it holds; a running sequence's table only
//! grows, so a kept table stays valid.
//!
//! A block's identity covers everything before it: its key is chained over all earlier blocks, so a sequence with
//! block `b` at index `k` has the same tokens at positions `0..(k + 1) * block_size` as every other sequence with
//! `b` at index `k`. So one holder of the *last* hit block serves the whole hit, even when the earlier blocks are
//! held by others: a new sequence with `num_cached_tokens = c` is served from a sequence with the same block at
//! index `(c - 1) / block_size` that has computed at least `c` tokens.
//!
//! With a non-unified KV cache llama.cpp copies between sequences only whole streams (`seq_cp` asserts that the
//! range is the full buffer), so the holder's whole stream is copied and the copy's cells from position `c` on are
//! then removed (`seq_rm`). The copy itself happens at the start of the next `llama_decode`, before that step's new
//! tokens are written. Cost: one copy of the holder's stream (all layers).

/// What [`find_holder`] needs to know of a held sequence.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a, Id> {
    pub id: Id,
    pub table: &'a [u32],
    /// Tokens whose keys and values are in llama.cpp's cache.
    pub computed: usize,
}

/// A candidate with `block` at `index` of its table that has computed at least `tokens`; the smallest such id, so
/// that the choice is deterministic.
pub fn find_holder<'a, Id: Ord + Copy + 'a>(
    candidates: impl IntoIterator<Item = Candidate<'a, Id>>,
    index: usize,
    block: u32,
    tokens: usize,
) -> Option<Id> {
    candidates.into_iter().filter(|c| c.table.get(index) == Some(&block) && c.computed >= tokens).map(|c| c.id).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_smallest_holder_of_the_last_hit_block_that_computed_the_hit() {
        let tables: [(u64, Vec<u32>, usize); 3] =
            [(1, vec![4, 5, 6], 48), (2, vec![8, 5, 9, 10], 40), (3, vec![4, 7], 32)];
        let candidates = || tables.iter().map(|(id, t, c)| Candidate { id: *id, table: t, computed: *c });
        // Block 5 at index 1 (a hit of 32 tokens): seqs 1 and 2 hold it, even with different blocks at index 0.
        assert_eq!(find_holder(candidates(), 1, 5, 32), Some(1));
        assert_eq!(find_holder(candidates().filter(|c| c.id != 1), 1, 5, 32), Some(2));
        // Block 9 at index 2: only seq 2 has it, and it has computed 40 of the 48 tokens.
        assert_eq!(find_holder(candidates(), 2, 9, 48), None);
        assert_eq!(find_holder(candidates(), 2, 9, 40), Some(2));
        // The same block at another index does not count.
        assert_eq!(find_holder(candidates(), 0, 5, 16), None);
        assert_eq!(find_holder(candidates(), 1, 8, 16), None);
    }
}
