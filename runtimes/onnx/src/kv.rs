//! Runtime-owned keys and values of one sequence (`KvCacheKind::RuntimeOwned`).
//!
//! The graph takes the past as `[batch, kv_heads, past, head_dim]` per layer and returns `present` =
//! `[batch, kv_heads, past + seq, head_dim]`. A sequence's past is kept as one buffer laid out
//! `[2 * layers][kv_heads][capacity][head_dim]` (keys and values of each layer in turn), so that for a fixed tensor and
//! head its tokens are contiguous, as they are in the graph's tensors: writing a sequence into a batch's past and
//! appending the new tokens of a present are one copy per (tensor, head). Capacity doubles when it runs out.
//!
//! Costs per step: [`SeqKv::write_past`] copies the whole past (the graph wants it as an input every step),
//! [`SeqKv::append_present`] copies only the new tokens, growth re-lays the buffer (amortised O(1) per token).

/// Layers and per-token sizes of a model's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// Number of past/present tensors: keys and values of every layer.
    pub fn tensors(&self) -> usize {
        2 * self.layers
    }
}

/// One sequence's keys and values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqKv {
    len: usize,
    capacity: usize,
    data: Vec<f32>,
}

impl SeqKv {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn reserve(&mut self, shape: &KvShape, tokens: usize) {
        if tokens <= self.capacity {
            return;
        }
        let capacity = tokens.max(2 * self.capacity).max(16);
        let (hd, old) = (shape.head_dim, self.capacity);
        let mut data = vec![0.0; shape.tensors() * shape.kv_heads * capacity * hd];
        for th in 0..shape.tensors() * shape.kv_heads {
            data[th * capacity * hd..][..self.len * hd].copy_from_slice(&self.data[th * old * hd..][..self.len * hd]);
        }
        self.data = data;
        self.capacity = capacity;
    }

    /// Writes this past into row `row` of a batch's past tensors (`past[t]` is `[batch, kv_heads, past_len,
    /// head_dim]`), left-padded: the row's first `past_len - self.len()` tokens are zeros, then this past. Every value
    /// of the row is written, so the buffers need no clearing between steps.
    pub fn write_past(&self, shape: &KvShape, past: &mut [Vec<f32>], row: usize, past_len: usize) {
        let (hd, cap) = (shape.head_dim, self.capacity);
        let pad = past_len - self.len;
        for (t, dst) in past.iter_mut().enumerate() {
            for h in 0..shape.kv_heads {
                let to = (row * shape.kv_heads + h) * past_len * hd;
                dst[to..to + pad * hd].fill(0.0);
                let from = (t * shape.kv_heads + h) * cap * hd;
                dst[to + pad * hd..to + past_len * hd].copy_from_slice(&self.data[from..from + self.len * hd]);
            }
        }
    }

    /// Appends `count` tokens from row `row` of a run's present tensors (`present[t]` is `[batch, kv_heads, total,
    /// head_dim]`), starting at token `start`.
    pub fn append_present(
        &mut self,
        shape: &KvShape,
        present: &[&[f32]],
        row: usize,
        total: usize,
        start: usize,
        count: usize,
    ) {
        self.reserve(shape, self.len + count);
        let (hd, cap) = (shape.head_dim, self.capacity);
        for (t, src) in present.iter().enumerate() {
            for h in 0..shape.kv_heads {
                let from = ((row * shape.kv_heads + h) * total + start) * hd;
                let to = ((t * shape.kv_heads + h) * cap + self.len) * hd;
                self.data[to..to + count * hd].copy_from_slice(&src[from..from + count * hd]);
            }
        }
        self.len += count;
    }

    /// Appends tokens `start..end` of `src` (this sequence must hold exactly `start` tokens): a prefix-cache hit
    /// whose blocks are held by different sequences is assembled run by run.
    pub fn extend_from(&mut self, shape: &KvShape, src: &SeqKv, start: usize, end: usize) {
        assert!(
            self.len == start && end <= src.len && start <= end,
            "extend_from: {start}..{end} onto {} of {}",
            self.len,
            src.len
        );
        self.reserve(shape, end);
        let (hd, cap, scap) = (shape.head_dim, self.capacity, src.capacity);
        for th in 0..shape.tensors() * shape.kv_heads {
            self.data[(th * cap + start) * hd..(th * cap + end) * hd]
                .copy_from_slice(&src.data[(th * scap + start) * hd..(th * scap + end) * hd]);
        }
        self.len = end;
    }

    /// A new sequence's past holding this one's first `tokens` tokens (a prefix-cache hit served by copying).
    pub fn prefix(&self, shape: &KvShape, tokens: usize) -> SeqKv {
        let tokens = tokens.min(self.len);
        let mut out = SeqKv::default();
        out.reserve(shape, tokens);
        let (hd, cap) = (shape.head_dim, self.capacity);
        for th in 0..shape.tensors() * shape.kv_heads {
            out.data[th * out.capacity * hd..][..tokens * hd]
                .copy_from_slice(&self.data[th * cap * hd..][..tokens * hd]);
        }
        out.len = tokens;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape { layers: 2, kv_heads: 3, head_dim: 2 };

    /// A present tensor `[batch, kv_heads, total, head_dim]` whose element encodes (tensor, row, head, token, d).
    fn present(t: usize, batch: usize, total: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for b in 0..batch {
            for h in 0..SHAPE.kv_heads {
                for tok in 0..total {
                    for d in 0..SHAPE.head_dim {
                        v.push((t * 10000 + b * 1000 + h * 100 + tok * 10 + d) as f32);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn append_grow_write_and_prefix_keep_every_value_in_place() {
        let total = 40;
        let tensors: Vec<Vec<f32>> = (0..SHAPE.tensors()).map(|t| present(t, 2, total)).collect();
        let views: Vec<&[f32]> = tensors.iter().map(|v| v.as_slice()).collect();
        let mut kv = SeqKv::default();
        // Row 1, tokens 3..8 then 8..30 (forces growth past the initial 16).
        kv.append_present(&SHAPE, &views, 1, total, 3, 5);
        kv.append_present(&SHAPE, &views, 1, total, 8, 22);
        assert_eq!(kv.len(), 27);

        // Into row 0 of a batch of 2 with past 30: left-padded with 3 zeros.
        let past_len = 30;
        let mut past = vec![vec![-1.0; 2 * SHAPE.kv_heads * past_len * SHAPE.head_dim]; SHAPE.tensors()];
        kv.write_past(&SHAPE, &mut past, 0, past_len);
        for (t, p) in past.iter().enumerate() {
            for h in 0..SHAPE.kv_heads {
                for tok in 0..past_len {
                    for d in 0..SHAPE.head_dim {
                        let got = p[((h * past_len) + tok) * SHAPE.head_dim + d];
                        let want = if tok < 3 { 0.0 } else { (t * 10000 + 1000 + h * 100 + tok * 10 + d) as f32 };
                        assert_eq!(got, want, "t {t} h {h} tok {tok} d {d}");
                    }
                }
            }
            // Row 1 untouched.
            assert!(p[SHAPE.kv_heads * past_len * SHAPE.head_dim..].iter().all(|&x| x == -1.0));
        }

        let pre = kv.prefix(&SHAPE, 10);
        assert_eq!(pre.len(), 10);
        let mut a = vec![vec![0.0; SHAPE.kv_heads * 10 * SHAPE.head_dim]; SHAPE.tensors()];
        let mut b = a.clone();
        pre.write_past(&SHAPE, &mut a, 0, 10);
        let mut full = vec![vec![0.0; SHAPE.kv_heads * 27 * SHAPE.head_dim]; SHAPE.tensors()];
        kv.write_past(&SHAPE, &mut full, 0, 27);
        for t in 0..SHAPE.tensors() {
            for h in 0..SHAPE.kv_heads {
                let n = 10 * SHAPE.head_dim;
                b[t][h * n..(h + 1) * n].copy_from_slice(&full[t][h * 27 * SHAPE.head_dim..][..n]);
            }
        }
        assert_eq!(a, b);
    }

    #[test]
    fn a_prefix_assembled_from_two_holders_equals_one_holders_prefix() {
        let total = 40;
        let tensors: Vec<Vec<f32>> = (0..SHAPE.tensors()).map(|t| present(t, 1, total)).collect();
        let views: Vec<&[f32]> = tensors.iter().map(|v| v.as_slice()).collect();
        let (mut a, mut b) = (SeqKv::default(), SeqKv::default());
        a.append_present(&SHAPE, &views, 0, total, 0, 20);
        b.append_present(&SHAPE, &views, 0, total, 0, 33);
        let mut assembled = SeqKv::default();
        assembled.extend_from(&SHAPE, &a, 0, 16);
        assembled.extend_from(&SHAPE, &b, 16, 30);
        assert_eq!(assembled.len(), 30);
        let (mut x, mut y) =
            (vec![vec![0.0; 3 * 30 * 2]; SHAPE.tensors()], vec![vec![0.0; 3 * 30 * 2]; SHAPE.tensors()]);
        assembled.write_past(&SHAPE, &mut x, 0, 30);
        b.prefix(&SHAPE, 30).write_past(&SHAPE, &mut y, 0, 30);
        assert_eq!(x, y);
    }
}
