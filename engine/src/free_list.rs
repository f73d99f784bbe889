//! The free block queue: a doubly linked list threaded through two index arrays, as vLLM's
//! `FreeKVCacheBlockQueue`. Freed blocks go to the back and allocation takes from the front, so the block freed
//! longest ago (least likely to be hit again) is evicted first, and a prefix hit can pull a free block out of the
//! middle in O(1).

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct FreeList {
    prev: Vec<u32>,
    next: Vec<u32>,
    in_list: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeList {
    /// A list holding every block, in id order.
    pub(crate) fn full(num_blocks: usize) -> Self {
        let mut list = Self {
            prev: vec![NIL; num_blocks],
            next: vec![NIL; num_blocks],
            in_list: vec![false; num_blocks],
            head: NIL,
            tail: NIL,
            len: 0,
        };
        for id in 0..num_blocks as u32 {
            list.push_back(id);
        }
        list
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, id: u32) -> bool {
        self.in_list[id as usize]
    }

    pub(crate) fn push_back(&mut self, id: u32) {
        debug_assert!(!self.in_list[id as usize], "block {id} freed twice");
        let i = id as usize;
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            self.next[self.tail as usize] = id;
        }
        self.tail = id;
        self.in_list[i] = true;
        self.len += 1;
    }

    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let id = self.head;
        if id == NIL {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    pub(crate) fn remove(&mut self, id: u32) {
        let i = id as usize;
        debug_assert!(self.in_list[i], "block {id} is not free");
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.in_list[i] = false;
        self.len -= 1;
    }

    /// Front to back.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors((self.head != NIL).then_some(self.head), |&id| {
            let n = self.next[id as usize];
            (n != NIL).then_some(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_removal_from_the_middle() {
        let mut l = FreeList::full(4);
        assert_eq!(l.iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        l.remove(2);
        assert_eq!(l.iter().collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(l.pop_front(), Some(0));
        l.push_back(0);
        l.push_back(2);
        assert_eq!(l.iter().collect::<Vec<_>>(), [1, 3, 0, 2]);
        l.remove(2);
        l.remove(1);
        assert_eq!(l.iter().collect::<Vec<_>>(), [3, 0]);
        assert_eq!(l.len(), 2);
        assert!(!l.contains(1) && l.contains(3));
        assert_eq!((l.pop_front(), l.pop_front(), l.pop_front()), (Some(3), Some(0), None));
    }
}
