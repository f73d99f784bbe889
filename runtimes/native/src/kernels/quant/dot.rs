//! Per-row products, portable versions: the integer block products ggml computes for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1
//! and IQ4_NL weights against Q8 activations (`ggml_vec_dot_q8_0_q8_0`, `_q4_0_q8_0`, `_q4_1_q8_1`, `_q5_0_q8_0`,
//! `_q5_1_q8_1`, `_iq4_nl_q8_0`), the super-block types against Q8_K activations (`kquant.rs`), and, for F16 and F32
//! parts, a dequantized row against f32 activations. The AVX2 versions (`avx2.rs`, `avx2_k.rs`) compute the same
//! integer sums; a test holds the two together.

use half::f16;
use nano_vllm_bundle::gguf::{GgmlType, IQ4NL_VALUES, dequantize};

use super::kquant;
use super::{Isa, Q8Acts, Q8KActs, Q8Row, QMatrix};
use crate::kernels::isa::Kind;

/// Whether products with `ty` take Q8 activations in blocks of 32 (integer products).
pub fn wants_q8(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | IQ4NL)
}

/// The activations of one product, quantized once for every part that takes them; the buffers are kept from one
/// product to the next.
#[derive(Debug, Default)]
pub struct Acts {
    q8: Q8Acts,
    q8k: Q8KActs,
    has_q8: bool,
    has_q8k: bool,
}

impl Acts {
    /// `x` (`[t, k]`) quantized as the `types` take it.
    pub fn for_types(types: impl Iterator<Item = GgmlType> + Clone, x: &[f32], t: usize, k: usize) -> Self {
        let mut a = Self::default();
        a.fill(types, x, t, k);
        a
    }

    /// [`Acts::for_types`] into these buffers.
    pub fn fill(&mut self, types: impl Iterator<Item = GgmlType> + Clone, x: &[f32], t: usize, k: usize) {
        self.has_q8 = types.clone().any(wants_q8);
        self.has_q8k = types.clone().any(kquant::wants_q8k);
        if self.has_q8 {
            self.q8.quantize_into(x, t, k);
        }
        if self.has_q8k {
            self.q8k.quantize_into(x, t, k);
        }
    }

    /// The Q8_0 blocks, when a type of the product takes them.
    pub fn q8(&self) -> Option<&Q8Acts> {
        self.has_q8.then_some(&self.q8)
    }

    /// The Q8_K blocks, when a type of the product takes them.
    pub fn q8k(&self) -> Option<&Q8KActs> {
        self.has_q8k.then_some(&self.q8k)
    }
}

pub(super) fn half(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `vals[r * t + i]` = row `r0 + r` of `part` times token `i`, for `rows` rows and `t` tokens. `acts` are `x`
/// quantized (as [`Acts::for_types`] of the part's type); `scratch` holds a dequantized row on the f32 path.
#[allow(clippy::too_many_arguments)]
pub fn rows(
    part: &QMatrix,
    r0: usize,
    rows: usize,
    x: &[f32],
    acts: &Acts,
    t: usize,
    vals: &mut [f32],
    scratch: &mut Vec<f32>,
    isa: Isa,
) {
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx2 or Avx512 is only made after the CPU was found to have AVX2, FMA and F16C
        // (isa.rs).
        Kind::Avx2 | Kind::Avx512 => unsafe { super::avx2::rows(part, r0, rows, x, acts, t, vals, scratch) },
        Kind::Portable => rows_portable(part, r0, rows, x, acts, t, vals, scratch),
    }
}

#[allow(clippy::too_many_arguments)]
fn rows_portable(
    part: &QMatrix,
    r0: usize,
    rows: usize,
    x: &[f32],
    acts: &Acts,
    t: usize,
    vals: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let k = part.cols;
    for r in 0..rows {
        let w = part.row(r0 + r);
        match (part.ty, acts.q8(), acts.q8k()) {
            (GgmlType::Q8_0, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = q8_0(w, a.row(i))),
            (GgmlType::Q4_0, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = q4_0(w, a.row(i))),
            (GgmlType::Q4_1, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = q4_1(w, a.row(i))),
            (GgmlType::Q5_0, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = q5(w, a.row(i), false)),
            (GgmlType::Q5_1, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = q5(w, a.row(i), true)),
            (GgmlType::IQ4NL, Some(a), _) => (0..t).for_each(|i| vals[r * t + i] = iq4_nl(w, a.row(i))),
            (ty, _, Some(a)) if kquant::wants_q8k(ty) => {
                (0..t).for_each(|i| vals[r * t + i] = kquant::dot(ty, w, a.row(i)))
            }
            _ => {
                scratch.clear();
                dequantize(part.ty, w, scratch);
                (0..t).for_each(|i| vals[r * t + i] = f32_dot(scratch, &x[i * k..(i + 1) * k]));
            }
        }
    }
}

/// Q8_0 weights (d, 32 signed bytes) against Q8_0 activations: `sum_b d_w d_x sum_j q_w q_x`.
pub fn q8_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let qx = &a.qs[32 * b..32 * b + 32];
        let sumi: i32 = blk[2..].iter().zip(qx).map(|(&q, &x)| q as i8 as i32 * x as i32).sum();
        acc += half(blk, 0) * a.d[b] * sumi as f32;
    }
    acc
}

/// Q4_0 weights (d, 16 bytes: element j low nibble of byte j, j + 16 high) against Q8_0: `(q - 8)` products.
pub fn q4_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    nibble_blocks(w, a, |q| q as i32 - 8)
}

/// Blocks of d and 16 bytes of nibbles (element j low nibble of byte j, j + 16 high), each nibble standing for
/// `value(nibble)`, against Q8_0: `sum_b d_w d_x sum_j value(q_j) x_j` (Q4_0, IQ4_NL).
fn nibble_blocks(w: &[u8], a: Q8Row<'_>, value: impl Fn(u8) -> i32) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let qx = &a.qs[32 * b..32 * b + 32];
        let mut sumi = 0i32;
        for (j, &q) in blk[2..18].iter().enumerate() {
            sumi += value(q & 0x0F) * qx[j] as i32 + value(q >> 4) * qx[j + 16] as i32;
        }
        acc += half(blk, 0) * a.d[b] * sumi as f32;
    }
    acc
}

/// Q4_1 weights (d, m, nibbles) against Q8_1: `d_w d_x sum q_w q_x + m_w s_x`.
pub fn q4_1(w: &[u8], a: Q8Row<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let qx = &a.qs[32 * b..32 * b + 32];
        let mut sumi = 0i32;
        for (j, &q) in blk[4..20].iter().enumerate() {
            sumi += (q & 0x0F) as i32 * qx[j] as i32 + (q >> 4) as i32 * qx[j + 16] as i32;
        }
        acc += half(blk, 0) * a.d[b] * sumi as f32 + half(blk, 2) * a.s[b];
    }
    acc
}

/// Q5_0 (d, 32 high bits, nibbles; `q - 16`) against Q8_0, or Q5_1 (d, m, high bits, nibbles; `q`, plus `m_w s_x`)
/// against Q8_1: element `j`'s fifth bit is bit `j` of the high bits.
pub fn q5(w: &[u8], a: Q8Row<'_>, with_min: bool) -> f32 {
    let (bb, at) = if with_min { (24, 4) } else { (22, 2) };
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let qx = &a.qs[32 * b..32 * b + 32];
        let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
        let offset = if with_min { 0 } else { 16 };
        let mut sumi = 0i32;
        for (j, &q) in blk[at + 4..at + 20].iter().enumerate() {
            let lo = (q & 0x0F) as i32 | (((qh >> j) & 1) << 4) as i32;
            let hi = (q >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
            sumi += (lo - offset) * qx[j] as i32 + (hi - offset) * qx[j + 16] as i32;
        }
        acc += half(blk, 0) * a.d[b] * sumi as f32;
        if with_min {
            acc += half(blk, 2) * a.s[b];
        }
    }
    acc
}

/// IQ4_NL weights (d, nibbles as Q4_0 indexing ggml's non-linear table) against Q8_0.
pub fn iq4_nl(w: &[u8], a: Q8Row<'_>) -> f32 {
    nibble_blocks(w, a, |q| IQ4NL_VALUES[q as usize] as i32)
}

/// f32 dot product with 32 independent lanes (vectorized by the compiler; the same order under every ISA).
#[inline(always)]
pub(super) fn f32_dot(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let (wc, xc) = (w.chunks_exact(32), x.chunks_exact(32));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for l in 0..32 {
            acc[l] += wb[l] * xb[l];
        }
    }
    let mut tail = 0.0f32;
    for (a, b) in wr.iter().zip(xr) {
        tail += a * b;
    }
    let mut s = [0.0f32; 8];
    for (l, v) in acc.iter().enumerate() {
        s[l % 8] += v;
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail
}
