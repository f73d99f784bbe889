//! RMSNorm (Llama family) and LayerNorm (GPT-2), row by row, computed as transformers does in f32.
//!
//! Row sums go over 8 partial sums (as torch's reductions do), not one sequential chain: a row's error in its sum
//! of squares scales the whole normalised row by one common factor, which the next matmul does not average out, and
//! models with outlier dimensions (SmolLM2: one x_i^2 is often a third of its row's sum) lose the small terms' low
//! bits in a sequential f32 sum. Measured on SmolLM2-135M against a float64 reference: sequential sums put native's
//! logits 1.29e-4 (max) / 1.26e-5 (rms) from float64, 8 partial sums 6.98e-5 / 9.01e-6, level with torch float32
//! (6.51e-5 / 8.00e-6).

#[derive(Debug, Clone)]
pub enum Norm {
    Rms { w: Vec<f32>, eps: f32 },
    Layer { w: Vec<f32>, b: Vec<f32>, eps: f32 },
}

/// Sum of `f(x_i)` over 8 partial sums, lane `i % 8` (see the module docs); a vector add per 8 elements.
fn sum8(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f(v);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

impl Norm {
    /// As [`Norm::forward`], in place: each row of `x` (`w.len()` values: Qwen3's and Gemma's per-head QK-norm, Gemma's
    /// post-norms). A row's statistics are taken before it is written, so no copy is needed (this runs per token and
    /// head in every layer).
    pub fn forward_in_place(&self, x: &mut [f32]) {
        match self {
            Self::Rms { w, eps } => {
                for xr in x.chunks_exact_mut(w.len()) {
                    let inv = 1.0 / (sum8(xr, |v| v * v) / w.len() as f32 + eps).sqrt();
                    for (v, &g) in xr.iter_mut().zip(w) {
                        *v = g * (*v * inv);
                    }
                }
            }
            Self::Layer { w, b, eps } => {
                let n = w.len() as f32;
                for xr in x.chunks_exact_mut(w.len()) {
                    let mean = sum8(xr, |v| v) / n;
                    let inv = 1.0 / (sum8(xr, |v| (v - mean) * (v - mean)) / n + eps).sqrt();
                    for ((v, &g), &bb) in xr.iter_mut().zip(w).zip(b) {
                        *v = (*v - mean) * inv * g + bb;
                    }
                }
            }
        }
    }

    /// Normalises each row of `x` (`rows` of `w.len()`) into `y`.
    pub fn forward(&self, x: &[f32], y: &mut [f32]) {
        match self {
            Self::Rms { w, eps } => {
                for (xr, yr) in x.chunks_exact(w.len()).zip(y.chunks_exact_mut(w.len())) {
                    let ms = sum8(xr, |v| v * v) / w.len() as f32;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                        *o = g * (v * inv);
                    }
                }
            }
            Self::Layer { w, b, eps } => {
                let n = w.len() as f32;
                for (xr, yr) in x.chunks_exact(w.len()).zip(y.chunks_exact_mut(w.len())) {
                    let mean = sum8(xr, |v| v) / n;
                    let var = sum8(xr, |v| (v - mean) * (v - mean)) / n;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, &v), &g), &bb) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = (v - mean) * inv * g + bb;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_and_layer_norm() {
        let mut y = [0.0; 2];
        Norm::Rms { w: vec![1.0, 2.0], eps: 0.0 }.forward(&[3.0, 4.0], &mut y);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
        Norm::Layer { w: vec![1.0, 1.0], b: vec![0.5, 0.0], eps: 0.0 }.forward(&[1.0, 3.0], &mut y);
        assert!((y[0] + 0.5).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn in_place_is_bit_identical_to_forward_row_by_row() {
        let x: Vec<f32> = (0..48).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.37).collect();
        let w: Vec<f32> = (0..16).map(|i| 0.5 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..16).map(|i| i as f32 * -0.05).collect();
        for norm in [Norm::Rms { w: w.clone(), eps: 1e-6 }, Norm::Layer { w: w.clone(), b, eps: 1e-5 }] {
            let mut want = vec![0.0; x.len()];
            norm.forward(&x, &mut want);
            let mut got = x.clone();
            norm.forward_in_place(&mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn partial_sums_keep_small_terms_next_to_an_outlier() {
        // One outlier and 575 small terms: the 8-lane sum is closer to the exact (f64) sum than a sequential one.
        let x: Vec<f32> = std::iter::once(3000.0f32).chain((0..575).map(|i| 0.1 + (i % 7) as f32 * 0.013)).collect();
        let exact: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        let sequential = x.iter().map(|v| v * v).sum::<f32>() as f64;
        let partial = sum8(&x, |v| v * v) as f64;
        assert!((partial - exact).abs() < (sequential - exact).abs(), "{partial} {sequential} {exact}");
    }
}
