//! Checking a [`StepBatch`] before a runtime reads it, written once for every runtime: a runtime states its limits
//! ([`BatchLimits`]) and gets a [`BatchError`] naming the sequence and what is wrong, instead of reading out of
//! bounds or computing something else. The engine builds valid batches; this guards against hand-made ones (tests,
//! other drivers) and engine bugs, at O(tokens + blocks) per step.

use crate::batch::{SeqBatchEntry, StepBatch};
use crate::sequence::SeqId;

/// What a runtime accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Token ids must be below this.
    pub vocab_size: usize,
    /// Positions must be below this (a learned position table, a context), if the runtime has such a limit.
    pub max_positions: Option<usize>,
    /// Engine-paged KV: the runtime's pool holds this many slots, and every token's slot must be the one its block
    /// table names. `None`: runtime-owned KV, kept per sequence id, so a sequence may appear only once per step.
    pub kv_slots: Option<usize>,
}

/// Why a step batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the step has {tokens} tokens but {positions} positions")]
    Positions { tokens: usize, positions: usize },
    #[error("the step has {tokens} tokens but {slots} KV slots in its slot mapping")]
    Slots { tokens: usize, slots: usize },
    #[error("sequence {seq_id} appears twice in the step")]
    Duplicate { seq_id: SeqId },
    #[error("sequence {seq_id}: {what}")]
    Malformed { seq_id: SeqId, what: String },
    #[error("sequence {seq_id}: token id {token} is outside the vocabulary ({vocab_size})")]
    TokenOutOfRange { seq_id: SeqId, token: u32, vocab_size: usize },
    #[error("sequence {seq_id}: position {position} is beyond the model's {max_positions} positions")]
    PositionOutOfRange { seq_id: SeqId, position: usize, max_positions: usize },
    #[error("sequence {seq_id}: KV slot {slot} is outside the pool of {num_slots} slots")]
    SlotOutOfRange { seq_id: SeqId, slot: usize, num_slots: usize },
    #[error("the sequences own {owned} logit rows, but the step asks for {rows}")]
    LogitRows { owned: usize, rows: usize },
}

impl StepBatch {
    /// Checks the batch against the runtime's limits: every range inside the packed arrays, positions that continue
    /// each sequence's computed tokens, token ids in the vocabulary, positions in range, logit rows owned by their
    /// sequence (in order, each row once, each index one of the sequence's tokens), and (engine-paged) each slot
    /// inside the pool and where the block table puts it, or (runtime-owned) each sequence once.
    pub fn validate(&self, limits: &BatchLimits) -> Result<(), BatchError> {
        let tokens = self.token_ids.len();
        if self.positions.len() != tokens {
            return Err(BatchError::Positions { tokens, positions: self.positions.len() });
        }
        if limits.kv_slots.is_some() && self.slot_mapping.len() != tokens {
            return Err(BatchError::Slots { tokens, slots: self.slot_mapping.len() });
        }
        if limits.kv_slots.is_none() {
            let mut ids: Vec<SeqId> = self.seqs.iter().map(|e| e.seq_id).collect();
            ids.sort_unstable();
            if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                return Err(BatchError::Duplicate { seq_id: w[0] });
            }
        }
        let mut owned = 0;
        for e in &self.seqs {
            // Each entry owns the logit rows after the previous entry's: no row is owned twice.
            if e.logits_start != owned {
                return Err(BatchError::Malformed {
                    seq_id: e.seq_id,
                    what: format!(
                        "its logit rows start at {}, not right after the previous entry's ({owned})",
                        e.logits_start
                    ),
                });
            }
            self.check_entry(e, limits)?;
            owned += e.num_logits;
        }
        if owned != self.logits_indices.len() {
            return Err(BatchError::LogitRows { owned, rows: self.logits_indices.len() });
        }
        Ok(())
    }

    fn check_entry(&self, e: &SeqBatchEntry, limits: &BatchLimits) -> Result<(), BatchError> {
        let seq_id = e.seq_id;
        let malformed = |what: String| BatchError::Malformed { seq_id, what };
        let within = |start: usize, len: usize, total: usize| start.checked_add(len).is_some_and(|end| end <= total);
        if e.query_len == 0 || !within(e.query_start, e.query_len, self.token_ids.len()) {
            return Err(malformed(format!(
                "query {}..+{} is outside the step's {} tokens",
                e.query_start,
                e.query_len,
                self.token_ids.len()
            )));
        }
        if !within(e.block_table_start, e.block_table_len, self.block_tables.len()) {
            return Err(malformed(format!(
                "block table {}..+{} is outside the step's {} table entries",
                e.block_table_start,
                e.block_table_len,
                self.block_tables.len()
            )));
        }
        if !within(e.logits_start, e.num_logits, self.logits_indices.len()) {
            return Err(malformed(format!(
                "logit rows {}..+{} are outside the step's {} rows",
                e.logits_start,
                e.num_logits,
                self.logits_indices.len()
            )));
        }
        if e.num_computed_tokens.checked_add(e.query_len).is_none_or(|end| end > u32::MAX as usize) {
            return Err(malformed(format!(
                "{} computed tokens + {} new ones overflow",
                e.num_computed_tokens, e.query_len
            )));
        }
        for (j, (&token, &position)) in self.tokens(e).iter().zip(self.positions_of(e)).enumerate() {
            let expected = e.num_computed_tokens + j;
            if position as usize != expected {
                return Err(malformed(format!(
                    "token {j} is at position {position}, expected {expected} (computed tokens + index)"
                )));
            }
            if token as usize >= limits.vocab_size {
                return Err(BatchError::TokenOutOfRange { seq_id, token, vocab_size: limits.vocab_size });
            }
            if let Some(max_positions) = limits.max_positions.filter(|&m| expected >= m) {
                return Err(BatchError::PositionOutOfRange { seq_id, position: expected, max_positions });
            }
        }
        if let Some(num_slots) = limits.kv_slots {
            self.check_slots(e, num_slots)?;
        }
        let query = e.query_start..e.query_start + e.query_len;
        let indices = &self.logits_indices[e.logits_start..e.logits_start + e.num_logits];
        if let Some(i) = indices.iter().find(|&&i| !query.contains(&(i as usize))) {
            return Err(malformed(format!("logits index {i} is not one of its tokens {query:?}")));
        }
        Ok(())
    }

    /// Engine-paged: every block of the table inside the pool, and every token's slot where the table puts it.
    fn check_slots(&self, e: &SeqBatchEntry, num_slots: usize) -> Result<(), BatchError> {
        let (seq_id, bs) = (e.seq_id, self.block_size);
        if bs == 0 {
            return Err(BatchError::Malformed { seq_id, what: "the step's block size is 0".into() });
        }
        let table = self.block_table(e);
        if let Some(&block) = table.iter().find(|&&b| (b as usize + 1).saturating_mul(bs) > num_slots) {
            return Err(BatchError::SlotOutOfRange { seq_id, slot: block as usize * bs, num_slots });
        }
        for (j, &slot) in self.slots(e).iter().enumerate() {
            let position = e.num_computed_tokens + j;
            let Some(&block) = table.get(position / bs) else {
                return Err(BatchError::Malformed {
                    seq_id,
                    what: format!("position {position} is beyond its block table of {} blocks", table.len()),
                });
            };
            let expected = block as usize * bs + position % bs;
            if slot as usize != expected {
                return Err(BatchError::Malformed {
                    seq_id,
                    what: format!("position {position} has KV slot {slot}, but its block table puts it at {expected}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences, engine-paged with block size 4: seq 1 prefills 3 tokens in block 2, seq 2 decodes its
    /// position 5 (block table [0, 1]).
    fn batch() -> StepBatch {
        let entry = |seq_id, query_start, query_len, computed, table_start, logits_start| SeqBatchEntry {
            seq_id,
            query_start,
            query_len,
            num_computed_tokens: computed,
            num_cached_tokens: 0,
            block_table_start: table_start,
            block_table_len: if seq_id == 1 { 1 } else { 2 },
            logits_start,
            num_logits: 1,
            samples: true,
            is_prefill: seq_id == 1,
        };
        StepBatch {
            block_size: 4,
            seqs: vec![entry(1, 0, 3, 0, 0, 0), entry(2, 3, 1, 5, 1, 1)],
            token_ids: vec![7, 8, 9, 4],
            positions: vec![0, 1, 2, 5],
            slot_mapping: vec![8, 9, 10, 5],
            block_tables: vec![2, 0, 1],
            logits_indices: vec![2, 3],
        }
    }

    const PAGED: BatchLimits = BatchLimits { vocab_size: 10, max_positions: Some(16), kv_slots: Some(12) };
    const OWNED: BatchLimits = BatchLimits { kv_slots: None, ..PAGED };

    fn err(limits: &BatchLimits, edit: impl Fn(&mut StepBatch)) -> String {
        let mut b = batch();
        edit(&mut b);
        b.validate(limits).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_batch_passes_and_each_fault_is_named() {
        batch().validate(&PAGED).unwrap();
        batch().validate(&OWNED).unwrap();
        assert_eq!(err(&PAGED, |b| b.positions.pop().map(drop).unwrap()), "the step has 4 tokens but 3 positions");
        assert_eq!(
            err(&PAGED, |b| b.seqs[1].logits_start = 0),
            "sequence 2: its logit rows start at 0, not right after the previous entry's (1)"
        );
        assert_eq!(err(&OWNED, |b| b.seqs[1].seq_id = 1), "sequence 1 appears twice in the step");
        assert_eq!(err(&PAGED, |b| b.seqs[1].query_len = 2), "sequence 2: query 3..+2 is outside the step's 4 tokens");
        assert_eq!(
            err(&PAGED, |b| b.positions[1] = 5),
            "sequence 1: token 1 is at position 5, expected 1 (computed tokens + index)"
        );
        assert_eq!(err(&PAGED, |b| b.token_ids[3] = 10), "sequence 2: token id 10 is outside the vocabulary (10)");
        assert_eq!(
            err(&BatchLimits { max_positions: Some(5), ..PAGED }, |_| ()),
            "sequence 2: position 5 is beyond the model's 5 positions"
        );
        assert_eq!(err(&PAGED, |b| b.block_tables[0] = 3), "sequence 1: KV slot 12 is outside the pool of 12 slots");
        assert_eq!(
            err(&PAGED, |b| b.slot_mapping[3] = 6),
            "sequence 2: position 5 has KV slot 6, but its block table puts it at 5"
        );
        assert_eq!(
            err(&PAGED, |b| b.logits_indices[0] = 3),
            "sequence 1: logits index 3 is not one of its tokens 0..3"
        );
        assert_eq!(
            err(&PAGED, |b| b.logits_indices.push(3)),
            "the sequences own 2 logit rows, but the step asks for 3"
        );
        // Runtime-owned KV does not read the slots.
        let mut b = batch();
        b.slot_mapping.clear();
        b.validate(&OWNED).unwrap();
    }
}
