//! The pool of llama.cpp sequence ids.
//!
//! llama.cpp accepts sequence ids below `n_seq_max`; engine sequence ids grow without bound. Each engine sequence in
//! llama.cpp's cache holds one id from this pool until `release`, which first removes its cells. The lowest free id
//! is handed out, so that the ids in use stay dense: with a non-unified cache llama.cpp packs sequences into one
//! micro-batch only when their ids are consecutive.

use std::collections::BTreeSet;

/// Free llama.cpp sequence ids in `0..capacity`.
#[derive(Debug, Clone)]
pub struct SeqIdPool {
    free: BTreeSet<i32>,
    capacity: usize,
}

impl SeqIdPool {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(i32::MAX as usize);
        Self { free: (0..capacity as i32).collect(), capacity }
    }

    /// The lowest free id, or `None` when all `capacity` are in use.
    pub fn acquire(&mut self) -> Option<i32> {
        self.free.pop_first()
    }

    /// Returns `id` to the pool (ids outside it, or already free, are ignored).
    pub fn release(&mut self, id: i32) {
        if id >= 0 && (id as usize) < self.capacity {
            self.free.insert(id);
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_id_and_reuses_released_ones() {
        let mut pool = SeqIdPool::new(3);
        assert_eq!([pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()], [Some(0), Some(1), Some(2), None]);
        assert_eq!(pool.in_use(), 3);
        pool.release(1);
        pool.release(1);
        pool.release(7);
        pool.release(-1);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.acquire(), Some(1));
        pool.release(2);
        pool.release(0);
        assert_eq!((pool.acquire(), pool.acquire(), pool.acquire()), (Some(0), Some(2), None));
    }
}
