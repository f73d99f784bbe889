//! Dense layers: `y[t, o] = sum_i x[t, i] * w[o, i] + b[o]`, with `w` in Hugging Face's `[out, in]` layout.
//! The product runs on the `gemm` crate, whose AVX2/FMA (and AVX-512) kernels are chosen at run time, split over
//! the runtime's threads.

/// A dense layer's weights.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, row-major.
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
    pub out: usize,
    pub inp: usize,
}

impl Linear {
    pub fn new(w: Vec<f32>, b: Option<Vec<f32>>, out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp);
        if let Some(b) = &b {
            assert_eq!(b.len(), out);
        }
        Self { w, b, out, inp }
    }

    /// Several layers with the same input, stacked along `out` (q/k/v, gate/up), so one product serves them all.
    pub fn stack(parts: Vec<Linear>) -> Self {
        let inp = parts[0].inp;
        assert!(parts.iter().all(|p| p.inp == inp));
        let out = parts.iter().map(|p| p.out).sum();
        let any_bias = parts.iter().any(|p| p.b.is_some());
        let b = any_bias.then(|| parts.iter().flat_map(|p| p.b.clone().unwrap_or_else(|| vec![0.0; p.out])).collect());
        let w = parts.into_iter().flat_map(|p| p.w).collect();
        Self::new(w, b, out, inp)
    }

    /// `y = x w^T + b` for `t` rows of `x`.
    pub fn forward(&self, x: &[f32], t: usize, y: &mut [f32], threads: usize) {
        matmul_t(x, t, &self.w, self.out, self.inp, y, threads);
        if let Some(b) = &self.b {
            for row in y[..t * self.out].chunks_exact_mut(self.out) {
                for (v, &bias) in row.iter_mut().zip(b) {
                    *v += bias;
                }
            }
        }
    }
}

/// `y[t, n] = x[t, k] * w[n, k]^T`, all row-major.
pub fn matmul_t(x: &[f32], t: usize, w: &[f32], n: usize, k: usize, y: &mut [f32], threads: usize) {
    assert!(x.len() >= t * k && w.len() >= n * k && y.len() >= t * n, "matmul_t: operand too small");
    if t == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers cover the asserted extents: dst is t x n with row stride n; lhs is t x k with row stride
    // k; rhs is w viewed as k x n with column stride k (element (i, j) = w[j * k + i]). dst does not alias the inputs
    // (it is a &mut borrow). read_dst = false, so dst = 1.0 * lhs * rhs.
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_with_bias() {
        let (t, k, n) = (3, 5, 4);
        let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let lin = Linear::new(w.clone(), Some(b.clone()), n, k);
        let mut y = vec![0.0; t * n];
        lin.forward(&x, t, &mut y, 2);
        for r in 0..t {
            for o in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum::<f32>() + b[o];
                assert!((y[r * n + o] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn stacking_equals_separate_layers() {
        let a = Linear::new(vec![1.0, 2.0, 3.0, 4.0], Some(vec![0.5, 0.5]), 2, 2);
        let b = Linear::new(vec![5.0, 6.0], None, 1, 2);
        let s = Linear::stack(vec![a, b]);
        let mut y = vec![0.0; 3];
        s.forward(&[1.0, 1.0], 1, &mut y, 1);
        assert_eq!(y, [3.5, 7.5, 11.0]);
    }
}
