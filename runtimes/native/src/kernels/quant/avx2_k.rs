//! AVX2 versions of the super-block products in `kquant.rs`, for up to four tokens at once: each block of 256 is
//! decoded once into eight vectors of 32 quants (unsigned, except IQ4_XS's signed table values) with their 16-bit
//! scales, and every token's Q8_K quants are multiplied against them (`maddubs`, then `madd` with the scales into 32-bit
//! lanes): the integer sums `kquant.rs` computes, with the float steps in eight lanes. Only called through an `Isa`
//! that found AVX2, FMA and F16C (isa.rs).

use std::arch::x86_64::*;

use nano_vllm_bundle::gguf::{GgmlType, IQ4NL_VALUES, q3k_scales, scale_min_k4};

use super::Q8KRow;
use super::avx2::{half, hsum};

/// Bytes ahead of the block in hand that its product asks the cache for.
const PREFETCH: usize = 1024;

/// At most this many tokens share one decode of a weight block.
pub(super) const TOKENS: usize = 4;

/// The super-block types as constants (`T` below), so each kernel is compiled per type with no branch on it.
pub(super) const Q2_K: u8 = 0;
pub(super) const Q3_K: u8 = 1;
pub(super) const Q4_K: u8 = 2;
pub(super) const Q5_K: u8 = 3;
pub(super) const Q6_K: u8 = 4;
pub(super) const IQ4_XS: u8 = 5;

/// The type `t` stands for.
const fn ty(t: u8) -> GgmlType {
    match t {
        Q2_K => GgmlType::Q2K,
        Q3_K => GgmlType::Q3K,
        Q4_K => GgmlType::Q4K,
        Q5_K => GgmlType::Q5K,
        Q6_K => GgmlType::Q6K,
        _ => GgmlType::IQ4XS,
    }
}

/// Bytes of a block of type `t`.
const fn block_bytes(t: u8) -> usize {
    match t {
        Q2_K => 84,
        Q3_K => 110,
        Q4_K => 144,
        Q5_K => 176,
        Q6_K => 210,
        _ => 136,
    }
}

/// Eight 16-bit lanes of `lo` then eight of `hi`: the scales of a vector's two 16-groups, lined up with the 16-bit
/// pair sums `maddubs` leaves (bytes 0..16 in the low lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales2(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// A decoded block: 32 quants per vector, the 16-bit scales lined up with them, the mins per 16, and d, dmin.
struct Decoded {
    q: [__m256i; 8],
    sc: [__m256i; 8],
    min: __m256i,
    d: f32,
    dmin: f32,
    signed: bool,
}

/// Decodes one block of type `T` as `KBlock::decode` does, into vectors.
///
/// # Safety
/// AVX2/FMA/F16C; `b` one whole block of `T`.
#[inline(always)]
unsafe fn decode<const T: u8>(b: &[u8]) -> Decoded {
    let ty = ty(T);
    // SAFETY: every load reads 32 (or 16) bytes inside the block, whose size the match arm's type fixes
    // (84, 110, 144, 176, 210, 136 bytes), as the offsets below show.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut k = Decoded { q: [zero; 8], sc: [zero; 8], min: zero, d: 0.0, dmin: 0.0, signed: false };
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm256_set1_epi8(0x0F);
        let load = |at: usize| _mm256_loadu_si256(b.as_ptr().add(at).cast());
        match ty {
            GgmlType::Q2K => {
                (k.d, k.dmin) = (half(b, 80), half(b, 82));
                let mut mins = [0i16; 16];
                for (g, m) in mins.iter_mut().enumerate() {
                    *m = (b[g] >> 4) as i16;
                }
                k.min = _mm256_loadu_si256(mins.as_ptr().cast());
                for n in 0..2 {
                    let v = load(16 + 32 * n);
                    for j in 0..4 {
                        let c = 4 * n + j;
                        k.q[c] = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * j as i32)), m3);
                        k.sc[c] = scales2((b[2 * c] & 0x0F) as i16, (b[2 * c + 1] & 0x0F) as i16);
                    }
                }
            }
            GgmlType::Q3K => {
                k.d = half(b, 108);
                k.dmin = k.d;
                let s = q3k_scales(&b[96..108]);
                let mut mins = [0i16; 16];
                for (m, &s) in mins.iter_mut().zip(&s) {
                    *m = 4 * (s as i16 - 32);
                }
                k.min = _mm256_loadu_si256(mins.as_ptr().cast());
                let hm = load(0);
                for n in 0..2 {
                    let v = load(32 + 32 * n);
                    for j in 0..4 {
                        let c = 4 * n + j;
                        let low = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * j as i32)), m3);
                        let bit = _mm256_set1_epi8((1u8 << c) as i8);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                        k.q[c] = _mm256_or_si256(low, _mm256_and_si256(set, _mm256_set1_epi8(4)));
                        k.sc[c] = scales2(s[2 * c] as i16 - 32, s[2 * c + 1] as i16 - 32);
                    }
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                (k.d, k.dmin) = (half(b, 0), half(b, 2));
                let five = ty == GgmlType::Q5K;
                let qs = if five { 48 } else { 16 };
                let hb = if five { load(16) } else { zero };
                let mut mins = [0i16; 16];
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    k.sc[j] = _mm256_set1_epi16(sc as i16);
                    mins[2 * j] = m as i16;
                    mins[2 * j + 1] = m as i16;
                }
                k.min = _mm256_loadu_si256(mins.as_ptr().cast());
                for p in 0..4 {
                    let v = load(qs + 32 * p);
                    k.q[2 * p] = _mm256_and_si256(v, m4);
                    k.q[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    if five {
                        for h in 0..2 {
                            let bit = _mm256_set1_epi8((1u8 << (2 * p + h)) as i8);
                            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
                            k.q[2 * p + h] =
                                _mm256_or_si256(k.q[2 * p + h], _mm256_and_si256(set, _mm256_set1_epi8(16)));
                        }
                    }
                }
            }
            GgmlType::Q6K => {
                k.d = half(b, 208);
                k.dmin = k.d;
                let sc8 = _mm_loadu_si128(b.as_ptr().add(192).cast());
                k.min = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 5);
                for h in 0..2 {
                    let (l0, l1, qh) = (load(64 * h), load(64 * h + 32), load(128 + 32 * h));
                    let high = |shift: i32| {
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift)), m3), 4)
                    };
                    k.q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), high(0));
                    k.q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), high(2));
                    k.q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), high(4));
                    k.q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), high(6));
                    for c in 0..4 {
                        let g = 8 * h + 2 * c;
                        k.sc[4 * h + c] = scales2(b[192 + g] as i8 as i16, b[193 + g] as i8 as i16);
                    }
                }
            }
            // IQ4_XS: signed table values, no mins.
            _ => {
                k.d = half(b, 0);
                k.signed = true;
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr().cast()));
                let sh = u16::from_le_bytes([b[2], b[3]]);
                for ib in 0..8 {
                    let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F) as i16 | (((sh >> (2 * ib)) & 3) << 4) as i16;
                    k.sc[ib] = _mm256_set1_epi16(ls - 32);
                    let raw = _mm_loadu_si128(b.as_ptr().add(8 + 16 * ib).cast());
                    let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
                    k.q[ib] = _mm256_shuffle_epi8(table, nib);
                }
            }
        }
        k
    }
}

/// A row of blocks of type `T` against `N` (1..=[`TOKENS`]) Q8_K activation rows.
///
/// # Safety
/// AVX2/FMA/F16C; `w` whole blocks of `T`, each activation row at least as many blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot<const T: u8, const N: usize>(w: &[u8], a: [Q8KRow<'_>; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, blk) in w.chunks_exact(block_bytes(T)).enumerate() {
        // The bytes PREFETCH ahead in the matrix (rows are contiguous: this row's later blocks or the next rows'),
        // a cache line at a time; past the matrix's end a prefetch is a hint, never a fault.
        for line in (0..block_bytes(T)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH + line).cast());
        }
        // SAFETY: `blk` is one block of `T` and this function runs only where AVX2/FMA/F16C exist.
        let k = unsafe { decode::<T>(blk) };
        for (i, x) in a.iter().enumerate() {
            let qx = &x.qs[256 * b..256 * b + 256];
            let mut isum = _mm256_setzero_si256();
            for c in 0..8 {
                // SAFETY: 32 bytes of the block's 256 activation quants.
                let xv = unsafe { _mm256_loadu_si256(qx.as_ptr().add(32 * c).cast()) };
                let pairs = if k.signed {
                    _mm256_maddubs_epi16(_mm256_sign_epi8(k.q[c], k.q[c]), _mm256_sign_epi8(xv, k.q[c]))
                } else {
                    _mm256_maddubs_epi16(k.q[c], xv)
                };
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, k.sc[c]));
            }
            let dx = x.d[b];
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(k.d * dx), acc[i]);
            if k.dmin != 0.0 {
                // SAFETY: the block's 16 sums.
                let bs = unsafe { _mm256_loadu_si256(x.bsums.as_ptr().add(16 * b).cast()) };
                let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(k.min, bs));
                acc[i] = _mm256_fnmadd_ps(m, _mm256_set1_ps(k.dmin * dx), acc[i]);
            }
        }
    }
    let mut out = [0.0; N];
    for (o, v) in out.iter_mut().zip(acc) {
        *o = hsum(v);
    }
    out
}
