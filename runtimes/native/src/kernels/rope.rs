//! Rotary position embeddings in Hugging Face's layout (`rotate_half`: the first half of a head rotates with the
//! second), with tables computed as transformers does: f32 inverse frequencies, f32 angle `position * inv_freq`.

#[derive(Debug, Clone)]
pub struct Rope {
    half: usize,
    /// `[positions, half]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Tables for `positions` positions from the config's inverse frequencies (`head_dim / 2` of them).
    pub fn new(inv_freq: &[f64], positions: usize) -> Self {
        let half = inv_freq.len();
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Self { half, cos, sin }
    }

    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates each head (`head_dim = 2 * half` values) of `x` for `position`.
    pub fn apply(&self, x: &mut [f32], position: usize) {
        let h = self.half;
        let (cos, sin) = (&self.cos[position * h..(position + 1) * h], &self.sin[position * h..(position + 1) * h]);
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
        let (cos, sin) = (&self.cos[position * h..(position + 1) * h], &self.sin[position * h..(position + 1) * h]);
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
    }
}
