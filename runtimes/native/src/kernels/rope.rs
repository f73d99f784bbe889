//! Rotary position embeddings in Hugging Face's layout (`rotate_half`: the first half of a head rotates with the
//! second), with tables computed as transformers does: f32 inverse frequencies, f32 angle `position * inv_freq`.

#[derive(Debug, Clone)]
pub struct Rope {
    half: usize,
    inv: Vec<f32>,
    /// `[positions, half]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Most positions tabled (32 MiB for a 128-wide head): a model's context can be millions of positions (or, in a
/// broken config, 10^15), and positions past the table are computed when used, with the same arithmetic.
pub const TABLE_POSITIONS: usize = 1 << 16;

impl Rope {
    /// Tables for the first `positions` positions (at most [`TABLE_POSITIONS`]) from the config's inverse
    /// frequencies (`head_dim / 2` of them).
    pub fn new(inv_freq: &[f64], positions: usize) -> Self {
        let half = inv_freq.len();
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let positions = positions.min(TABLE_POSITIONS);
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            let (c, s) = Self::angles(&inv, p);
            cos.extend(c);
            sin.extend(s);
        }
        Self { half, inv, cos, sin }
    }

    /// cos and sin of `position * inv_freq`, as transformers computes them: an f32 angle, rounded from f64.
    fn angles(inv: &[f32], position: usize) -> (Vec<f32>, Vec<f32>) {
        inv.iter()
            .map(|&f| {
                let angle = (position as f32 * f) as f64;
                (angle.cos() as f32, angle.sin() as f32)
            })
            .unzip()
    }

    /// Positions held in the table.
    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// The cos and sin rows of `position`: from the table, or computed past it.
    fn rows(&self, position: usize) -> (std::borrow::Cow<'_, [f32]>, std::borrow::Cow<'_, [f32]>) {
        let h = self.half;
        if position < self.positions() {
            let range = position * h..(position + 1) * h;
            (self.cos[range.clone()].into(), self.sin[range].into())
        } else {
            let (c, s) = Self::angles(&self.inv, position);
            (c.into(), s.into())
        }
    }

    /// Rotates each head (`head_dim = 2 * half` values) of `x` for `position`.
    pub fn apply(&self, x: &mut [f32], position: usize) {
        let h = self.half;
        let (cos, sin) = self.rows(position);
        for head in x.chunks_exact_mut(2 * h) {
            let (a, b) = head.split_at_mut(h);
            for i in 0..h {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }

    /// As [`Rope::apply`] with ggml's pairing (`rope_type` NORM): element `2i` rotates with `2i + 1`, at frequency
    /// `i`. This is what q and k rows in a GGUF's order need (llama.cpp's converter permutes them so), and the
    /// attention scores are the same: q and k are permuted alike within each head.
    pub fn apply_adjacent(&self, x: &mut [f32], position: usize) {
        let h = self.half;
        let (cos, sin) = self.rows(position);
        for head in x.chunks_exact_mut(2 * h) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (x1, x2) = (pair[0], pair[1]);
                pair[0] = x1 * cos[i] - x2 * sin[i];
                pair[1] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_halves_by_position_times_frequency() {
        let rope = Rope::new(&[1.0, 0.5], 4);
        let mut x = [1.0, 0.0, 0.0, 1.0]; // pairs (x0, x2) = (1, 0) and (x1, x3) = (0, 1)
        rope.apply(&mut x, 2);
        // pair 0 rotated by 2 rad, pair 1 by 1 rad.
        assert!((x[0] - 2f32.cos()).abs() < 1e-6 && (x[2] - 2f32.sin()).abs() < 1e-6);
        assert!((x[1] + 1f32.sin()).abs() < 1e-6 && (x[3] - 1f32.cos()).abs() < 1e-6);
        // Adjacent pairs: the same rotation on the interleaved layout (x0, x2, x1, x3).
        let mut z = [1.0, 0.0, 0.0, 1.0];
        rope.apply_adjacent(&mut z, 2);
        assert_eq!(z, [x[0], x[2], x[1], x[3]]);
        let mut y = [0.3, -0.7, 1.1, 0.2];
        let before = y;
        rope.apply(&mut y, 0);
        assert_eq!(y, before);
        // Past the table: computed, the same values.
        let short = Rope::new(&[1.0, 0.5], 2);
        let (mut a, mut b) = ([0.3, -0.7, 1.1, 0.2], [0.3, -0.7, 1.1, 0.2]);
        rope.apply(&mut a, 3);
        short.apply(&mut b, 3);
        assert_eq!(a, b);
        let huge = Rope::new(&[1.0, 0.5], 1 << 50);
        assert_eq!(huge.positions(), TABLE_POSITIONS);
    }
}
