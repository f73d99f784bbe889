//! Activations quantized on the fly as ggml quantizes them before an integer product. [`Q8Acts`]: 8-bit blocks of 32
//! for the Q8_0 / Q4_0 / Q4_1 / Q5_x / IQ4_NL weights: per block `d = amax / 127`, `q = round(x / d)` (ties to even,
//! like ggml's AVX2 `quantize_row_q8_0`), `d` kept as the f16 ggml stores, and `s = d * sum(q)` (ggml's Q8_1, for
//! Q4_1's offset term), also rounded through f16. [`Q8KActs`]: ggml's Q8_K blocks of 256 for the K-quants and IQ4_XS
//! (`quantize_row_q8_K_ref`): the value of largest magnitude maps to -127, `d = 1 / iscale` kept f32, and the sums of
//! each 16 quants (`bsums`, for the K-quants' mins and offsets).

use half::f16;

/// Rounds to the nearest integer, ties to even, for |v| < 2^22: ggml's `nearest_int` (adding 1.5 * 2^23 leaves the
/// rounded value in the low mantissa bits). Written out because `round_ties_even` calls libm's `rintf` on the x86-64
/// baseline (no SSE4.1 `roundps`), which dominated the quantization.
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let f = v + 12_582_912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// One block of 32 as ggml's Q8_0: its quants in `q`; returns the scale (before f16 rounding) and the quants' sum.
#[inline]
fn q8_0_block(x: &[f32], q: &mut [i8; 32]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_int(v * id) as i8;
        sum += *q as i32;
    }
    (d, sum)
}

/// One block of 256 as ggml's Q8_K: its quants in `q`; returns the scale (0 for a block of zeros).
#[inline]
fn q8k_block(x: &[f32], q: &mut [i8; 256]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    1.0 / iscale
}

/// `t` rows of `k` activations, quantized.
#[derive(Debug, Clone, Default)]
pub struct Q8Acts {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One row of [`Q8Acts`].
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

impl Q8Acts {
    /// Quantizes `x` (`[t, k]`, `k` a multiple of 32).
    pub fn quantize(x: &[f32], t: usize, k: usize) -> Self {
        let mut a = Self::default();
        a.quantize_into(x, t, k);
        a
    }

    /// [`Q8Acts::quantize`] into these buffers (no allocation once they are large enough).
    pub fn quantize_into(&mut self, x: &[f32], t: usize, k: usize) {
        assert!(k.is_multiple_of(32) && x.len() >= t * k, "Q8Acts::quantize: {t} x {k} from {} values", x.len());
        let blocks = t * k / 32;
        self.k = k;
        self.qs.resize(t * k, 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        for (b, (xb, qb)) in x[..t * k].chunks_exact(32).zip(self.qs.chunks_exact_mut(32)).enumerate() {
            let (d, sum) = q8_0_block(xb, qb.try_into().expect("blocks of 32"));
            self.d[b] = f16::from_f32(d).to_f32();
            self.s[b] = f16::from_f32(d * sum as f32).to_f32();
        }
    }

    pub fn row(&self, i: usize) -> Q8Row<'_> {
        let nb = self.k / 32;
        Q8Row {
            qs: &self.qs[i * self.k..(i + 1) * self.k],
            d: &self.d[i * nb..(i + 1) * nb],
            s: &self.s[i * nb..(i + 1) * nb],
        }
    }
}

/// `t` rows of `k` activations as Q8_K blocks (`k` a multiple of 256).
#[derive(Debug, Clone, Default)]
pub struct Q8KActs {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i16>,
}

/// One row of [`Q8KActs`]: per block of 256, its quants, scale and the 16 sums of 16 quants.
#[derive(Debug, Clone, Copy)]
pub struct Q8KRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub bsums: &'a [i16],
}

impl Q8KActs {
    /// Quantizes `x` (`[t, k]`, `k` a multiple of 256).
    pub fn quantize(x: &[f32], t: usize, k: usize) -> Self {
        let mut a = Self::default();
        a.quantize_into(x, t, k);
        a
    }

    /// [`Q8KActs::quantize`] into these buffers (no allocation once they are large enough).
    pub fn quantize_into(&mut self, x: &[f32], t: usize, k: usize) {
        assert!(k.is_multiple_of(256) && x.len() >= t * k, "Q8KActs::quantize: {t} x {k} from {} values", x.len());
        let blocks = t * k / 256;
        self.k = k;
        self.qs.resize(t * k, 0);
        self.d.resize(blocks, 0.0);
        self.bsums.resize(16 * blocks, 0);
        for (b, (xb, qb)) in x[..t * k].chunks_exact(256).zip(self.qs.chunks_exact_mut(256)).enumerate() {
            self.d[b] = q8k_block(xb, qb.try_into().expect("blocks of 256"));
            for (s, g) in self.bsums[16 * b..16 * b + 16].iter_mut().zip(qb.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
        }
    }

    pub fn row(&self, i: usize) -> Q8KRow<'_> {
        let nb = self.k / 256;
        Q8KRow {
            qs: &self.qs[i * self.k..(i + 1) * self.k],
            d: &self.d[i * nb..(i + 1) * nb],
            bsums: &self.bsums[16 * i * nb..16 * (i + 1) * nb],
        }
    }
}

/// How ggml rounds the activations before a product with weights of a given type (the weight type's `vec_dot_type`):
/// Q8_0 blocks (Q8_0, Q4_0, Q5_0, IQ4_NL weights; Q8_1 for Q4_1 and Q5_1 has the same values), Q8_K blocks of 256
/// (the K-quants, IQ4_XS), f16 (F16 weights), bf16 (BF16 weights), or not at all (F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActRounding {
    None,
    Q8_0,
    Q8K,
    F16,
    Bf16,
}

impl ActRounding {
    pub fn of(ty: nano_vllm_bundle::gguf::GgmlType) -> Self {
        use nano_vllm_bundle::gguf::GgmlType::*;
        match ty {
            Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | IQ4NL => Self::Q8_0,
            Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS => Self::Q8K,
            F16 => Self::F16,
            BF16 => Self::Bf16,
            _ => Self::None,
        }
    }

    /// `x` with this rounding applied (quantized and read back), so an f32 product computes what ggml's does.
    pub fn apply(self, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        self.apply_into(x, &mut out);
        out
    }

    /// [`ActRounding::apply`], appended to `out` (no allocation once it is large enough).
    pub fn apply_into(self, x: &[f32], out: &mut Vec<f32>) {
        match self {
            Self::None => out.extend_from_slice(x),
            Self::F16 => out.extend(x.iter().map(|&v| f16::from_f32(v).to_f32())),
            // Round to nearest, ties to even, as ggml's GGML_FP32_TO_BF16.
            Self::Bf16 => out.extend(x.iter().map(|&v| half::bf16::from_f32(v).to_f32())),
            Self::Q8_0 => {
                assert!(x.len().is_multiple_of(32), "Q8_0 rounding of a row of {} values", x.len());
                let mut q = [0i8; 32];
                for xb in x.chunks_exact(32) {
                    let d = f16::from_f32(q8_0_block(xb, &mut q).0).to_f32();
                    out.extend(q.iter().map(|&q| q as f32 * d));
                }
            }
            // Blocks of 256; a row that is not whole blocks has no K-quant weights, but is rounded as if padded.
            Self::Q8K => {
                let (mut q, mut padded) = ([0i8; 256], [0.0f32; 256]);
                for xb in x.chunks(256) {
                    padded[..xb.len()].copy_from_slice(xb);
                    padded[xb.len()..].fill(0.0);
                    let d = q8k_block(&padded, &mut q);
                    out.extend(q[..xb.len()].iter().map(|&q| q as f32 * d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scale_to_127_and_keep_their_sum() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.1).collect();
        let a = Q8Acts::quantize(&x, 2, 32);
        let r = a.row(1);
        // Block 2: values 1.2 .. 4.3, amax 4.3 -> the last is 127.
        assert_eq!(r.qs[31], 127);
        assert!((r.d[0] - 4.3 / 127.0).abs() < 4.3 / 127.0 * 1e-3);
        let sum: i32 = r.qs.iter().map(|&q| q as i32).sum();
        assert!((r.s[0] - r.d[0] * sum as f32).abs() < 1e-2 * r.s[0].abs());
        // All-zero blocks quantize to zeros with d = 0 (no division by zero).
        // Ties go to even, as ggml's nearest_int.
        assert_eq!([nearest_int(2.5), nearest_int(-2.5), nearest_int(3.5), nearest_int(-127.0)], [2, -2, 4, -127]);
        let z = Q8Acts::quantize(&[0.0; 32], 1, 32);
        assert_eq!((z.row(0).d[0], z.row(0).qs[5]), (0.0, 0));
    }
}
