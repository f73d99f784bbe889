//! The paged KV cache's bookkeeping: fixed-size blocks, a free queue, reference counts, one block table per
//! sequence, and hash-based prefix caching. Follows nano-vllm's `block_manager.py` and vLLM's `KVCacheManager`.
//!
//! Prefix caching: a full block's key is xxhash64 of its token ids, seeded with the previous block's key, so a key
//! names the whole prefix up to the block's end. A block is registered under its key only once its keys and values
//! are computed (a block whose prefill chunk is still pending is never hit). A hit is confirmed by comparing tokens.
//! A freed block keeps its key until it is reused, so later requests can still hit it; such a block is counted once,
//! as free, and taking it for a hit consumes a free block like any allocation.
//!
//! Costs: `lookup_prefix` is O(prompt blocks) hash-map probes; `allocate`, `may_append` and `deallocate` are O(blocks
//! touched); nothing scans the whole cache.

use rustc_hash::FxHashMap;
use xxhash_rust::xxh64::xxh64;

use crate::free_list::FreeList;
use crate::sequence::Sequence;

/// A block's index in the KV pool; slot `block * block_size + offset` holds one token's keys and values.
pub type BlockId = u32;

/// The chained prefix-cache key of a full block: xxhash64 of its tokens, seeded with the previous block's key (a
/// fixed seed for the first block), so the key names the whole prefix up to the block's end.
pub fn block_hash(prev: Option<u64>, tokens: &[u32]) -> u64 {
    const ROOT_SEED: u64 = 0x6E61_6E6F_2D76_6C6C;
    // Native byte order: keys only have to agree within one process.
    xxh64(bytemuck::cast_slice(tokens), prev.unwrap_or(ROOT_SEED))
}

#[derive(Debug, Clone)]
struct Block {
    ref_count: u32,
    /// The prefix-cache key, kept after the block is freed until it is reused.
    hash: Option<u64>,
    /// The key of the block before it in the prefix (`None` for a first block): with `tokens` it reproduces `hash`.
    parent: Option<u64>,
}

/// What the prefix cache holds for a sequence about to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixHit {
    /// Leading full blocks found in the cache.
    pub blocks: usize,
    /// Of those, blocks that are free now (cached but unreferenced): taking them consumes free blocks.
    pub free_blocks: usize,
}

/// Which cached blocks a lookup may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitPolicy {
    /// Any cached block (the runtime's KV lives in the engine's blocks, so a freed block still holds its data).
    Any,
    /// Only blocks some running sequence holds (a runtime that copies the prefix from the sequence holding it).
    LiveOnly,
}

#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// The tokens behind each registered block's key, to confirm hits: `block_size` per block, one allocation.
    block_tokens: Vec<u32>,
    free: FreeList,
    cached: FxHashMap<u64, BlockId>,
    prefix_caching: Option<HitPolicy>,
}

impl BlockManager {
    /// `prefix_caching`: `None` turns it off.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: Option<HitPolicy>) -> Self {
        assert!(block_size > 0 && num_blocks < u32::MAX as usize);
        Self {
            block_size,
            blocks: vec![Block { ref_count: 0, hash: None, parent: None }; num_blocks],
            block_tokens: vec![0; num_blocks * block_size],
            free: FreeList::full(num_blocks),
            // At most one key per block: sized once, never rehashed.
            cached: FxHashMap::with_capacity_and_hasher(
                if prefix_caching.is_some() { num_blocks } else { 0 },
                Default::default(),
            ),
            prefix_caching,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }
    pub fn num_free_blocks(&self) -> usize {
        self.free.len()
    }
    pub fn num_used_blocks(&self) -> usize {
        self.blocks.len() - self.free.len()
    }
    fn tokens_of(&self, id: BlockId) -> &[u32] {
        let start = id as usize * self.block_size;
        &self.block_tokens[start..start + self.block_size]
    }

    pub fn prefix_caching(&self) -> Option<HitPolicy> {
        self.prefix_caching
    }

    /// Extends the sequence's chained block keys over its full blocks.
    fn update_hashes(&self, seq: &mut Sequence) {
        let bs = self.block_size;
        if seq.block_hashes.capacity() == 0 {
            seq.block_hashes.reserve(seq.max_len() / bs);
        }
        while (seq.block_hashes.len() + 1) * bs <= seq.token_ids.len() {
            let i = seq.block_hashes.len();
            let prev = i.checked_sub(1).map(|p| seq.block_hashes[p]);
            seq.block_hashes.push(block_hash(prev, &seq.token_ids[i * bs..(i + 1) * bs]));
        }
    }

    /// Leading blocks of a sequence without blocks that the prefix cache can serve. At most `len - 1` tokens are
    /// served, so the last token is always computed and yields logits (a fully cached prompt is otherwise a step
    /// with nothing to compute, which crashed nano-vllm).
    pub fn lookup_prefix(&self, seq: &mut Sequence) -> PrefixHit {
        let Some(policy) = self.prefix_caching else {
            return PrefixHit::default();
        };
        self.update_hashes(seq);
        let bs = self.block_size;
        let max_blocks = (seq.token_ids.len() - 1) / bs;
        let mut hit = PrefixHit::default();
        for (i, hash) in seq.block_hashes.iter().take(max_blocks).enumerate() {
            let Some(&id) = self.cached.get(hash) else {
                break;
            };
            let block = &self.blocks[id as usize];
            if self.tokens_of(id) != &seq.token_ids[i * bs..(i + 1) * bs]
                || (policy == HitPolicy::LiveOnly && block.ref_count == 0)
            {
                break;
            }
            hit.blocks += 1;
            hit.free_blocks += usize::from(block.ref_count == 0);
        }
        hit
    }

    /// Whether a waiting sequence with this prefix hit can be given blocks for its first `num_tokens` tokens.
    pub fn can_allocate(&self, hit: PrefixHit, num_tokens: usize) -> bool {
        let needed = Sequence::blocks_for(num_tokens, self.block_size) - hit.blocks + hit.free_blocks;
        needed <= self.free.len()
    }

    /// Admits a sequence: takes its prefix-hit blocks and fresh blocks up to `num_tokens` tokens, and marks the hit
    /// tokens computed. Call after [`Self::can_allocate`] said yes for the same `hit`.
    pub fn allocate(&mut self, seq: &mut Sequence, hit: PrefixHit, num_tokens: usize) {
        debug_assert!(seq.block_table.is_empty() && self.can_allocate(hit, num_tokens));
        // Room for the table at the sequence's longest, so decoding never reallocates it.
        seq.block_table.reserve(Sequence::blocks_for(seq.max_len(), self.block_size));
        for i in 0..hit.blocks {
            let id = self.cached[&seq.block_hashes[i]];
            let block = &mut self.blocks[id as usize];
            if block.ref_count == 0 {
                self.free.remove(id);
            }
            block.ref_count += 1;
            seq.block_table.push(id);
        }
        seq.num_registered_blocks = hit.blocks;
        seq.num_cached_tokens = hit.blocks * self.block_size;
        seq.num_computed_tokens = seq.num_cached_tokens;
        self.may_append(seq, num_tokens);
    }

    /// Whether a running sequence's table can grow to cover `num_tokens` tokens.
    pub fn can_append(&self, seq: &Sequence, num_tokens: usize) -> bool {
        // The common case (a decode inside the last block) without a division.
        num_tokens <= seq.block_table.len() * self.block_size
            || Sequence::blocks_for(num_tokens, self.block_size) - seq.block_table.len() <= self.free.len()
    }

    /// Grows a sequence's table with fresh blocks to cover `num_tokens` tokens. Call after [`Self::can_append`].
    pub fn may_append(&mut self, seq: &mut Sequence, num_tokens: usize) {
        while seq.block_table.len() * self.block_size < num_tokens {
            let id = self.take_free_block();
            seq.block_table.push(id);
        }
    }

    fn take_free_block(&mut self) -> BlockId {
        let id = self.free.pop_front().expect("can_allocate/can_append was checked");
        let block = &mut self.blocks[id as usize];
        debug_assert_eq!(block.ref_count, 0);
        if let Some(hash) = block.hash.take() {
            // The key now names nothing; drop it unless a newer block took it over.
            if self.cached.get(&hash) == Some(&id) {
                self.cached.remove(&hash);
            }
            block.parent = None;
        }
        block.ref_count = 1;
        id
    }

    /// Releases a sequence's blocks (finish, abort or preemption), last block first so a prefix's tail is evicted
    /// before its head. Freed blocks keep their keys.
    pub fn deallocate(&mut self, seq: &mut Sequence) {
        for &id in seq.block_table.iter().rev() {
            let block = &mut self.blocks[id as usize];
            block.ref_count -= 1;
            if block.ref_count == 0 {
                self.free.push_back(id);
            }
        }
        seq.block_table.clear();
        seq.num_computed_tokens = 0;
        seq.num_registered_blocks = 0;
    }

    /// Whether a computed full block of the sequence is not yet in the prefix cache (most steps fill none: checked
    /// without a division, so callers can skip [`Self::register_computed`]).
    #[inline]
    pub fn has_unregistered_full_block(&self, seq: &Sequence) -> bool {
        self.prefix_caching.is_some() && (seq.num_registered_blocks + 1) * self.block_size <= seq.num_computed_tokens
    }

    /// Registers the sequence's newly computed full blocks in the prefix cache.
    pub fn register_computed(&mut self, seq: &mut Sequence) {
        if !self.has_unregistered_full_block(seq) {
            return;
        }
        let full = seq.num_computed_tokens / self.block_size;
        self.update_hashes(seq);
        let bs = self.block_size;
        for i in seq.num_registered_blocks..full {
            let id = seq.block_table[i];
            let block = &mut self.blocks[id as usize];
            if block.hash.is_none() {
                let hash = seq.block_hashes[i];
                block.hash = Some(hash);
                block.parent = i.checked_sub(1).map(|p| seq.block_hashes[p]);
                let start = id as usize * bs;
                self.block_tokens[start..start + bs].copy_from_slice(&seq.token_ids[i * bs..(i + 1) * bs]);
                self.cached.insert(hash, id);
            }
        }
        seq.num_registered_blocks = full;
    }

    /// Checks the manager's invariants against the block tables of every sequence that holds blocks.
    pub fn check_invariants<'a>(&self, seqs: impl IntoIterator<Item = &'a Sequence>) -> Result<(), String> {
        let bs = self.block_size;
        let mut holders = vec![0u32; self.blocks.len()];
        for seq in seqs {
            let table = &seq.block_table;
            let mut seen = std::collections::HashSet::new();
            for &id in table {
                if id as usize >= self.blocks.len() {
                    return Err(format!("seq {}: block id {id} out of range", seq.id));
                }
                if !seen.insert(id) {
                    return Err(format!("seq {}: block {id} twice in one table", seq.id));
                }
                holders[id as usize] += 1;
            }
            let expected = Sequence::blocks_for(seq.num_computed_tokens, bs);
            if seq.status == crate::SequenceStatus::Running && table.len() != expected {
                return Err(format!(
                    "seq {}: table has {} blocks for {} computed tokens (block size {bs}, expected {expected})",
                    seq.id,
                    table.len(),
                    seq.num_computed_tokens
                ));
            }
        }
        let mut free_count = 0;
        for (id, block) in self.blocks.iter().enumerate() {
            if block.ref_count != holders[id] {
                return Err(format!("block {id}: ref_count {} but {} tables hold it", block.ref_count, holders[id]));
            }
            let free = self.free.contains(id as u32);
            if free != (block.ref_count == 0) {
                return Err(format!("block {id}: ref_count {} but free list membership {free}", block.ref_count));
            }
            free_count += usize::from(free);
        }
        if free_count != self.free.len() || self.free.len() + self.num_used_blocks() != self.blocks.len() {
            return Err(format!("free list length {} but {free_count} free blocks", self.free.len()));
        }
        // Every key maps to a block that holds it and whose tokens, chained to its parent key, produce it.
        for (&hash, &id) in &self.cached {
            let block = &self.blocks[id as usize];
            if block.hash != Some(hash) {
                return Err(format!("key {hash:#x} maps to block {id}, which holds key {:?}", block.hash));
            }
            if block_hash(block.parent, self.tokens_of(id)) != hash {
                return Err(format!("key {hash:#x} maps to block {id}, whose tokens and parent key give another key"));
            }
        }
        Ok(())
    }

    /// Checks that every registered block of a sequence's table is cached under the key of that sequence's prefix.
    pub fn check_chain(&self, seq: &Sequence) -> Result<(), String> {
        let bs = self.block_size;
        let mut prev = None;
        for (i, &id) in seq.block_table.iter().take(seq.num_registered_blocks).enumerate() {
            let key = block_hash(prev, &seq.token_ids[i * bs..(i + 1) * bs]);
            let block = &self.blocks[id as usize];
            if block.hash != Some(key) {
                return Err(format!(
                    "seq {}: registered block {i} (id {id}) has key {:?}, its prefix gives {key:#x}",
                    seq.id, block.hash
                ));
            }
            if self.tokens_of(id) != &seq.token_ids[i * bs..(i + 1) * bs] {
                return Err(format!("seq {}: registered block {i} (id {id}) holds other tokens", seq.id));
            }
            prev = Some(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sampling::SamplingParams;

    fn seq(id: u64, tokens: Vec<u32>) -> Sequence {
        Sequence::new(id, tokens, SamplingParams::default(), Instant::now())
    }

    fn admit(bm: &mut BlockManager, s: &mut Sequence) -> PrefixHit {
        let hit = bm.lookup_prefix(s);
        assert!(bm.can_allocate(hit, s.len()));
        bm.allocate(s, hit, s.len());
        s.num_computed_tokens = s.len();
        s.status = crate::SequenceStatus::Running;
        bm.register_computed(s);
        hit
    }

    #[test]
    fn hash_chains_through_the_prefix() {
        let a = block_hash(None, &[1, 2]);
        assert_eq!(a, block_hash(None, &[1, 2]));
        assert_ne!(block_hash(Some(a), &[3, 4]), block_hash(None, &[3, 4]));
        assert_ne!(a, block_hash(None, &[2, 1]));
    }

    #[test]
    fn shared_prefix_is_hit_and_refcounted() {
        let mut bm = BlockManager::new(8, 4, Some(HitPolicy::Any));
        let mut a = seq(1, (0..10).collect());
        assert_eq!(admit(&mut bm, &mut a), PrefixHit::default());
        assert_eq!(a.block_table, [0, 1, 2]);
        // Shares the first two full blocks (8 tokens), then differs.
        let mut b = seq(2, (0..8).chain([99, 98, 97]).collect());
        assert_eq!(admit(&mut bm, &mut b), PrefixHit { blocks: 2, free_blocks: 0 });
        assert_eq!(b.block_table, [0, 1, 3]);
        assert_eq!(b.num_cached_tokens, 8);
        bm.check_invariants([&a, &b]).unwrap();
        assert_eq!(bm.num_used_blocks(), 4);
        bm.deallocate(&mut a);
        bm.deallocate(&mut b);
        assert_eq!(bm.num_free_blocks(), 8);
        bm.check_invariants([]).unwrap();
    }

    #[test]
    fn freed_blocks_keep_their_keys_and_count_once() {
        let mut bm = BlockManager::new(4, 4, Some(HitPolicy::Any));
        let mut a = seq(1, (0..9).collect());
        admit(&mut bm, &mut a);
        bm.deallocate(&mut a);
        // All 4 blocks free; 2 of them still cached.
        let mut b = seq(2, (0..16).collect());
        let hit = bm.lookup_prefix(&mut b);
        assert_eq!(hit, PrefixHit { blocks: 2, free_blocks: 2 });
        // 16 tokens need 4 blocks: 2 hits (taken from the free list) + 2 fresh = 4 free blocks, not 6 or 2.
        assert!(bm.can_allocate(hit, 16));
        assert!(!bm.can_allocate(hit, 17));
        bm.allocate(&mut b, hit, 16);
        assert_eq!(bm.num_free_blocks(), 0);
        assert_eq!(b.num_computed_tokens, 8);
    }

    #[test]
    fn fully_cached_prompt_still_computes_its_last_token() {
        let mut bm = BlockManager::new(8, 4, Some(HitPolicy::Any));
        let mut a = seq(1, (0..8).collect());
        admit(&mut bm, &mut a);
        let mut b = seq(2, (0..8).collect());
        let hit = bm.lookup_prefix(&mut b);
        // Only the first block: the second would leave nothing to compute.
        assert_eq!(hit.blocks, 1);
        bm.allocate(&mut b, hit, 8);
        assert_eq!(b.num_computed_tokens, 4);
        assert_ne!(b.block_table[1], a.block_table[1]);
    }

    #[test]
    fn reused_block_drops_its_old_key() {
        let mut bm = BlockManager::new(2, 2, Some(HitPolicy::Any));
        let mut a = seq(1, vec![5, 6, 7]);
        admit(&mut bm, &mut a);
        bm.deallocate(&mut a);
        let mut b = seq(2, vec![1, 2, 3, 4]);
        assert_eq!(admit(&mut bm, &mut b).blocks, 0);
        bm.deallocate(&mut b);
        // [5, 6]'s block was reused for [1, 2] or [3, 4]; no key may point at it any longer.
        let mut c = seq(3, vec![5, 6, 9]);
        assert_eq!(bm.lookup_prefix(&mut c).blocks, 0);
        bm.check_invariants([]).unwrap();
    }

    #[test]
    fn live_only_policy_ignores_freed_blocks() {
        let mut bm = BlockManager::new(4, 2, Some(HitPolicy::LiveOnly));
        let mut a = seq(1, vec![1, 2, 3]);
        admit(&mut bm, &mut a);
        let mut b = seq(2, vec![1, 2, 4]);
        assert_eq!(bm.lookup_prefix(&mut b).blocks, 1);
        bm.deallocate(&mut a);
        assert_eq!(bm.lookup_prefix(&mut b).blocks, 0);
    }

    #[test]
    fn no_prefix_caching_means_no_hits() {
        let mut bm = BlockManager::new(4, 2, None);
        let mut a = seq(1, vec![1, 2, 3]);
        admit(&mut bm, &mut a);
        let mut b = seq(2, vec![1, 2, 3]);
        assert_eq!(bm.lookup_prefix(&mut b), PrefixHit::default());
    }
}
