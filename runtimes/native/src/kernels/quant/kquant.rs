//! The super-block types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) against Q8_K activations, portable version: each
//! block of 256 is decoded to one common form ([`KBlock`]: integer quants, an integer scale per 16 and an integer
//! min per 16) and dotted in integers, as ggml's `ggml_vec_dot_*_q8_K` do:
//!
//! `d * dx * sum_g sc_g * sum_{e in g} q_e x_e  -  dmin * dx * sum_g min_g * bsum_g`
//!
//! where `bsum_g` is the sum of the activation quants of the 16-group `g` (kept with the Q8_K block). The types with a
//! constant offset fold it into the mins: Q6_K's `q - 32` is `q` with `min_g = 32 sc_g` and `dmin = d`, Q3_K's
//! `q - 4` likewise. The AVX2 kernels (`avx2_k.rs`) compute the same integer sums.

use nano_vllm_bundle::gguf::{GgmlType, IQ4NL_VALUES, q3k_scales, scale_min_k4};

use super::Q8KRow;
use super::dot::half;

/// Whether products with `ty` take Q8_K activations.
pub fn wants_q8k(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS)
}

/// One block of 256 weights in the common form: weight `e` is `d * sc[e / 16] * q[e] - dmin * min[e / 16]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KBlock {
    pub q: [i8; 256],
    pub sc: [i16; 16],
    pub min: [i16; 16],
    pub d: f32,
    pub dmin: f32,
}

impl KBlock {
    /// Decodes one block of `ty` (one of [`wants_q8k`]).
    pub fn decode(ty: GgmlType, b: &[u8]) -> Self {
        let mut k = KBlock { q: [0; 256], sc: [0; 16], min: [0; 16], d: 0.0, dmin: 0.0 };
        match ty {
            // 4-bit scale (low) and min (high) per 16; in each half of 128, byte l holds elements l + 32 j at shift 2 j.
            GgmlType::Q2K => {
                (k.d, k.dmin) = (half(b, 80), half(b, 82));
                for (g, &s) in b[..16].iter().enumerate() {
                    (k.sc[g], k.min[g]) = ((s & 0x0F) as i16, (s >> 4) as i16);
                }
                for e in 0..256 {
                    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
                    k.q[e] = ((b[16 + 32 * n + l] >> (2 * j)) & 3) as i8;
                }
            }
            // 2 low bits as Q2_K, the third from the high-bit mask; q - 4 where that bit is clear, i.e. q' - 4 with
            // q' = low + 4 * bit; scales are 6 bits with an offset of 32.
            GgmlType::Q3K => {
                k.d = half(b, 108);
                k.dmin = k.d;
                for (g, &s) in q3k_scales(&b[96..108]).iter().enumerate() {
                    k.sc[g] = s as i16 - 32;
                    k.min[g] = 4 * k.sc[g];
                }
                for e in 0..256 {
                    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
                    let low = (b[32 + 32 * n + l] >> (2 * j)) & 3;
                    let bit = (b[l] >> (4 * n + j)) & 1;
                    k.q[e] = (low + 4 * bit) as i8;
                }
            }
            // Eight sub-blocks of 32 with 6-bit scales and mins; pairs of sub-blocks share 32 bytes (low, high
            // nibbles); Q5_K adds a fifth bit, bit j of byte l for element l of sub-block j.
            GgmlType::Q4K | GgmlType::Q5K => {
                (k.d, k.dmin) = (half(b, 0), half(b, 2));
                let five = ty == GgmlType::Q5K;
                let qs = if five { &b[48..176] } else { &b[16..144] };
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    k.sc[2 * j..2 * j + 2].fill(sc as i16);
                    k.min[2 * j..2 * j + 2].fill(m as i16);
                    for l in 0..32 {
                        let nib = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
                        let hi = if five { ((b[16 + l] >> j) & 1) << 4 } else { 0 };
                        k.q[32 * j + l] = (nib | hi) as i8;
                    }
                }
            }
            // Halves of 128: 64 bytes of low nibbles, 32 of 2-bit high pairs; signed 8-bit scales per 16; q - 32.
            GgmlType::Q6K => {
                k.d = half(b, 208);
                k.dmin = k.d;
                for (g, &s) in b[192..208].iter().enumerate() {
                    k.sc[g] = s as i8 as i16;
                    k.min[g] = 32 * k.sc[g];
                }
                for e in 0..256 {
                    let (h, c, l) = (e / 128, (e % 128) / 32, e % 32);
                    let ql = b[64 * h + 32 * (c % 2) + l];
                    let nib = if c < 2 { ql & 0x0F } else { ql >> 4 };
                    let hi = (b[128 + 32 * h + l] >> (2 * c)) & 3;
                    k.q[e] = (nib | (hi << 4)) as i8;
                }
            }
            // IQ4_NL's table per nibble, a 6-bit scale (offset 32) per 32, no mins.
            GgmlType::IQ4XS => {
                k.d = half(b, 0);
                let sh = u16::from_le_bytes([b[2], b[3]]);
                for ib in 0..8 {
                    let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F) as i16 | (((sh >> (2 * ib)) & 3) << 4) as i16;
                    k.sc[2 * ib..2 * ib + 2].fill(ls - 32);
                    for j in 0..16 {
                        let v = b[8 + 16 * ib + j];
                        k.q[32 * ib + j] = IQ4NL_VALUES[(v & 0x0F) as usize];
                        k.q[32 * ib + j + 16] = IQ4NL_VALUES[(v >> 4) as usize];
                    }
                }
            }
            other => panic!("KBlock::decode: {other} is not a super-block type"),
        }
        k
    }

    /// This block against Q8_K block `b` of `a`.
    pub fn dot(&self, a: Q8KRow<'_>, b: usize) -> f32 {
        let qx = &a.qs[256 * b..256 * b + 256];
        let mut isum = 0i32;
        for g in 0..16 {
            let s: i32 = (0..16).map(|e| self.q[16 * g + e] as i32 * qx[16 * g + e] as i32).sum();
            isum += self.sc[g] as i32 * s;
        }
        let msum: i32 = (0..16).map(|g| self.min[g] as i32 * a.bsums[16 * b + g] as i32).sum();
        a.d[b] * (self.d * isum as f32 - self.dmin * msum as f32)
    }
}

/// A row of `ty` blocks against a Q8_K activation row.
pub fn dot(ty: GgmlType, w: &[u8], a: Q8KRow<'_>) -> f32 {
    w.chunks_exact(ty.block_bytes()).enumerate().map(|(b, blk)| KBlock::decode(ty, blk).dot(a, b)).sum()
}
