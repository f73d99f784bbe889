//! AVX2/FMA/F16C versions of the products in `dot.rs`: the same integer sums per block (ggml's
//! `mul_sum_i8_pairs_float` idiom: `maddubs` of |w| and sign-adjusted x, then `madd` to i32), scaled and accumulated
//! in eight f32 lanes. The 32-block types are here, the super-block types in `avx2_k.rs`; each type's loops are
//! compiled for it (a constant `T`, chosen once per task). One token takes rows eight at a time, their block sums
//! gathered into one vector so the scale work runs once per eight rows (`avx2_rows8.rs`), and the rest in pairs; more
//! tokens share each decoded block, [`TOKENS`] at a time. Only called through an `Isa` that found the features
//! (isa.rs).

use std::arch::x86_64::*;

use nano_vllm_bundle::gguf::{GgmlType, IQ4NL_VALUES, dequantize};

use super::avx2_k::{self, TOKENS};
use super::dot::{Acts, f32_dot};
use super::{Q8Acts, Q8KActs, Q8Row, QMatrix, kquant};

/// As `dot::rows_portable`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows(
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
    // SAFETY (each call): this function runs only where AVX2/FMA/F16C exist; each row is whole blocks of the type
    // (checked by `QMatrix::new`) and each activation row holds `k` values, so every load stays in bounds.
    match (part.ty, acts.q8(), acts.q8k()) {
        (ty, Some(a), _) if super::dot::wants_q8(ty) => unsafe { q8_rows(part, r0, rows, a, t, vals) },
        (ty, _, Some(a)) if kquant::wants_q8k(ty) => unsafe {
            match ty {
                GgmlType::Q2K => k_rows::<{ avx2_k::Q2_K }>(part, r0, rows, a, t, vals),
                GgmlType::Q3K => k_rows::<{ avx2_k::Q3_K }>(part, r0, rows, a, t, vals),
                GgmlType::Q4K => k_rows::<{ avx2_k::Q4_K }>(part, r0, rows, a, t, vals),
                GgmlType::Q5K => k_rows::<{ avx2_k::Q5_K }>(part, r0, rows, a, t, vals),
                GgmlType::Q6K => k_rows::<{ avx2_k::Q6_K }>(part, r0, rows, a, t, vals),
                _ => k_rows::<{ avx2_k::IQ4_XS }>(part, r0, rows, a, t, vals),
            }
        },
        _ => {
            for r in 0..rows {
                scratch.clear();
                dequantize(part.ty, part.row(r0 + r), scratch);
                (0..t).for_each(|i| vals[r * t + i] = f32_dot(scratch, &x[i * k..(i + 1) * k]));
            }
        }
    }
}

/// Rows `r0..r0 + rows` of 32-blocks against every token (`vals[r * t + i]`).
///
/// # Safety
/// AVX2/FMA/F16C; `a` rows of the part's width.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_rows(part: &QMatrix, r0: usize, rows: usize, a: &Q8Acts, t: usize, vals: &mut [f32]) {
    // SAFETY: as this function's contract. The type becomes a constant here, once per task, so the loops below have
    // no branch on it.
    unsafe {
        match part.ty {
            GgmlType::Q8_0 => q8_rows_of::<Q8_0>(part, r0, rows, a, t, vals),
            GgmlType::Q4_0 => q8_rows_of::<Q4_0>(part, r0, rows, a, t, vals),
            GgmlType::Q4_1 => q8_rows_of::<Q4_1>(part, r0, rows, a, t, vals),
            GgmlType::Q5_0 => q8_rows_of::<Q5_0>(part, r0, rows, a, t, vals),
            GgmlType::Q5_1 => q8_rows_of::<Q5_1>(part, r0, rows, a, t, vals),
            _ => q8_rows_of::<IQ4_NL>(part, r0, rows, a, t, vals),
        }
    }
}

/// As [`q8_rows`], for the type `T`.
///
/// # Safety
/// As [`q8_rows`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_rows_of<const T: u8>(part: &QMatrix, r0: usize, rows: usize, a: &Q8Acts, t: usize, vals: &mut [f32]) {
    if t == 1 {
        // One token: eight rows at a time, their block sums gathered into one vector (`avx2_rows8.rs`), then
        // [`ROWS`] rows at a time for the rest, as many weight streams in flight.
        let x = a.row(0);
        let mut r = 0;
        while r + 8 <= rows {
            let w = std::array::from_fn(|i| part.row(r0 + r + i));
            // SAFETY: as this function's contract.
            vals[r..r + 8].copy_from_slice(&unsafe { super::avx2_rows8::dot::<T>(w, x) });
            r += 8;
        }
        while r + ROWS <= rows {
            let w = std::array::from_fn(|i| part.row(r0 + r + i));
            // SAFETY: as this function's contract.
            vals[r..r + ROWS].copy_from_slice(&unsafe { dot_q8_rows::<T, ROWS>(w, x) });
            r += ROWS;
        }
        while r < rows {
            // SAFETY: as this function's contract.
            vals[r] = unsafe { dot_q8::<T>(part.row(r0 + r), x) };
            r += 1;
        }
        return;
    }
    for r in 0..rows {
        // SAFETY: as this function's contract; each row is whole blocks of `T`.
        unsafe { q8_tokens_of::<T>(part.row(r0 + r), a, t, &mut vals[r * t..r * t + t]) };
    }
}

/// Rows a one-token product takes at a time.
const ROWS: usize = 2;
/// Fewest bytes ahead of the block in hand that a one-token product asks the cache for.
pub(super) const PREFETCH: usize = 2048;

/// The 32-block types as constants (`T` below).
pub(super) const Q8_0: u8 = 0;
pub(super) const Q4_0: u8 = 1;
pub(super) const Q4_1: u8 = 2;
pub(super) const Q5_0: u8 = 3;
pub(super) const Q5_1: u8 = 4;
const IQ4_NL: u8 = 5;

/// Bytes of a block of the 32-block type `t`.
pub(super) const fn block_bytes(t: u8) -> usize {
    match t {
        Q8_0 => 34,
        Q4_0 | IQ4_NL => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        _ => 24,
    }
}

/// One row of 32-blocks of type `T` against several tokens, [`TOKENS`] at a time sharing each decoded block (a last
/// single token on the two-accumulator loop); one token alone goes through [`q8_rows_of`]'s row pairs.
///
/// # Safety
/// AVX2/FMA/F16C; `w` whole blocks of `T`, `a` rows of as many blocks, `out` one value per token.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_tokens_of<const T: u8>(w: &[u8], a: &Q8Acts, t: usize, out: &mut [f32]) {
    let mut i = 0;
    // SAFETY (each call): as this function's contract.
    while i + TOKENS <= t {
        let rows = std::array::from_fn(|j| a.row(i + j));
        out[i..i + TOKENS].copy_from_slice(&unsafe { dot_q8_n::<T, TOKENS>(w, rows) });
        i += TOKENS;
    }
    match t - i {
        3 => out[i..].copy_from_slice(&unsafe { dot_q8_n::<T, 3>(w, [a.row(i), a.row(i + 1), a.row(i + 2)]) }),
        2 => out[i..].copy_from_slice(&unsafe { dot_q8_n::<T, 2>(w, [a.row(i), a.row(i + 1)]) }),
        1 => out[i] = unsafe { dot_q8::<T>(w, a.row(i)) },
        _ => {}
    }
}

/// A row of 32-blocks against `N` tokens: each block decoded once ([`decode32`]), then multiplied with every token.
///
/// # Safety
/// AVX2/FMA/F16C; `w` whole blocks of `T` and each row at least as many activation blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_n<const T: u8, const N: usize>(w: &[u8], a: [Q8Row<'_>; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut off = [0.0f32; N];
    for (b, blk) in w.chunks_exact(block_bytes(T)).enumerate() {
        // SAFETY: one whole block of `T`; each activation row's block `b` is 32 bytes.
        let (q, signed, dw, mw) = unsafe { decode32::<T>(blk) };
        let aq = _mm256_sign_epi8(q, q);
        for (i, x) in a.iter().enumerate() {
            let xv = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * b).cast()) };
            let p = if signed { mul_sum_u8_i8(aq, _mm256_sign_epi8(xv, q)) } else { mul_sum_u8_i8(q, xv) };
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[b]), p, acc[i]);
            off[i] += mw * x.s[b];
        }
    }
    let mut out = [0.0; N];
    for i in 0..N {
        out[i] = hsum(acc[i]) + off[i];
    }
    out
}

/// One 32-block's quants as bytes (signed, or unsigned for the types with a min), its scale and its min (0 without).
///
/// # Safety
/// AVX2/FMA/F16C; `blk` one whole block of `T`.
#[inline(always)]
pub(super) unsafe fn decode32<const T: u8>(blk: &[u8]) -> (__m256i, bool, f32, f32) {
    // SAFETY: the offsets of each type's quants inside its block, as in `block`.
    unsafe {
        match T {
            Q8_0 => (_mm256_loadu_si256(blk.as_ptr().add(2).cast()), true, half(blk, 0), 0.0),
            Q4_0 => (_mm256_sub_epi8(nibbles(blk.as_ptr().add(2)), _mm256_set1_epi8(8)), true, half(blk, 0), 0.0),
            Q4_1 => (nibbles(blk.as_ptr().add(4)), false, half(blk, 0), half(blk, 2)),
            Q5_0 => {
                let hi = bits_to_bytes(u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]));
                let w = _mm256_or_si256(
                    nibbles(blk.as_ptr().add(6)),
                    _mm256_andnot_si256(hi, _mm256_set1_epi8(0xF0u8 as i8)),
                );
                (w, true, half(blk, 0), 0.0)
            }
            IQ4_NL => {
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr().cast()));
                (_mm256_shuffle_epi8(table, nibbles(blk.as_ptr().add(2))), true, half(blk, 0), 0.0)
            }
            _ => {
                let hi = bits_to_bytes(u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]));
                let w = _mm256_or_si256(nibbles(blk.as_ptr().add(8)), _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
                (w, false, half(blk, 0), half(blk, 2))
            }
        }
    }
}

/// Rows `r0..r0 + rows` of super-blocks of type `T` against every token (`vals[r * t + i]`), [`TOKENS`] at a time.
///
/// # Safety
/// AVX2/FMA/F16C; the part's type is `T`, `a` rows of its width.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_rows<const T: u8>(part: &QMatrix, r0: usize, rows: usize, a: &Q8KActs, t: usize, vals: &mut [f32]) {
    for r in 0..rows {
        let (w, out) = (part.row(r0 + r), &mut vals[r * t..r * t + t]);
        let mut i = 0;
        // SAFETY (each call): as this function's contract.
        while i + TOKENS <= t {
            let rows = std::array::from_fn(|j| a.row(i + j));
            out[i..i + TOKENS].copy_from_slice(&unsafe { avx2_k::dot::<T, TOKENS>(w, rows) });
            i += TOKENS;
        }
        match t - i {
            3 => out[i..].copy_from_slice(&unsafe { avx2_k::dot::<T, 3>(w, [a.row(i), a.row(i + 1), a.row(i + 2)]) }),
            2 => out[i..].copy_from_slice(&unsafe { avx2_k::dot::<T, 2>(w, [a.row(i), a.row(i + 1)]) }),
            1 => out[i..].copy_from_slice(&unsafe { avx2_k::dot::<T, 1>(w, [a.row(i)]) }),
            _ => {}
        }
    }
}

/// The f16 at byte `i` of `b`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn half(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Unsigned bytes times signed bytes, summed in pairs then fours, as f32 (no saturation: |u| <= 128, |s| <= 127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_u8_i8(u: __m256i, s: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Signed times signed: |x| against y carrying x's sign.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
    mul_sum_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// 32 nibbles of a Q4 block as bytes: low nibbles (elements 0..16) in the low lane, high nibbles (16..32) high.
///
/// # Safety
/// `p` points at 16 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes (unaligned load).
    let lo = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(lo, 4), lo), _mm256_set1_epi8(0x0F))
}

/// One block's product: `(d_w d_x) * sum(q_w q_x)` in eight lanes, plus the scalar offset term (Q4_1).
///
/// # Safety
/// AVX2/FMA/F16C; `blk` one whole block of `T` and `qx` its 32 activations.
#[inline(always)]
unsafe fn block<const T: u8>(blk: &[u8], qx: &[i8], dx: f32, sx: f32) -> (__m256, f32) {
    // SAFETY: Q8_0 blocks are 34 bytes (32 from offset 2), Q4 blocks hold 16 nibble bytes at offset 2 (Q4_0) or 4
    // (Q4_1), Q5 blocks at offset 6 (Q5_0) or 8 (Q5_1) after 4 bytes of high bits; `qx` is 32 bytes.
    unsafe {
        let x = _mm256_loadu_si256(qx.as_ptr().cast());
        match T {
            Q8_0 => {
                let w = _mm256_loadu_si256(blk.as_ptr().add(2).cast());
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_i8(w, x)), 0.0)
            }
            Q4_0 => {
                let w = _mm256_sub_epi8(nibbles(blk.as_ptr().add(2)), _mm256_set1_epi8(8));
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_i8(w, x)), 0.0)
            }
            Q4_1 => {
                let w = nibbles(blk.as_ptr().add(4));
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_u8_i8(w, x)), half(blk, 2) * sx)
            }
            // Q5_0: nibble | (1 - bit) * 0xF0 as a signed byte is q - 16 (ggml's `ggml_vec_dot_q5_0_q8_0`).
            Q5_0 => {
                let hi = bits_to_bytes(u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]));
                let w = _mm256_or_si256(
                    nibbles(blk.as_ptr().add(6)),
                    _mm256_andnot_si256(hi, _mm256_set1_epi8(0xF0u8 as i8)),
                );
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_i8(w, x)), 0.0)
            }
            // IQ4_NL: the nibbles index ggml's table (signed values).
            IQ4_NL => {
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr().cast()));
                let w = _mm256_shuffle_epi8(table, nibbles(blk.as_ptr().add(2)));
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_i8(w, x)), 0.0)
            }
            // Q5_1: nibble | bit * 16, unsigned.
            _ => {
                let hi = bits_to_bytes(u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]));
                let w = _mm256_or_si256(nibbles(blk.as_ptr().add(8)), _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
                (_mm256_mul_ps(_mm256_set1_ps(half(blk, 0) * dx), mul_sum_u8_i8(w, x)), half(blk, 2) * sx)
            }
        }
    }
}

/// 32 bits as 32 bytes, 0xFF where the bit is set (ggml's `bytes_from_bits_32`): byte `j` holds bit `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bits_to_bytes(bits: u32) -> __m256i {
    let shuffle = _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
    let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// `R` rows of 32-blocks of type `T` against one activation row, block by block: each row its own accumulator, `R`
/// weight streams in flight.
///
/// # Safety
/// AVX2/FMA/F16C; each of `w` whole blocks of `T`, as many as `a` has.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_rows<const T: u8, const R: usize>(w: [&[u8]; R], a: Q8Row<'_>) -> [f32; R] {
    let bb = block_bytes(T);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut off = [0.0f32; R];
    let row_bytes = w[0].len();
    // Whole row groups ahead, at least PREFETCH bytes: one group of short rows (SmolLM2's 576 columns of Q4_1 are
    // 360 bytes a row) is too close to hide the memory's latency (SmolLM2 at batch 1, 2 threads: ~10 % faster on
    // Q4_1, Q8_0 and the Q4_K_M mix than one group ahead).
    let ahead = PREFETCH.div_ceil((R * row_bytes).max(1)).max(1) * R * row_bytes;
    for b in 0..a.d.len().min(w[0].len() / bb) {
        let qx = &a.qs[32 * b..32 * b + 32];
        for r in 0..R {
            // The same block of a later group of rows (rows are contiguous in the matrix), fetched ahead: the
            // hardware prefetcher loses the stream at each jump from one row group to the next. A prefetch past
            // the matrix's end is a hint, never a fault.
            _mm_prefetch::<_MM_HINT_T0>(w[r].as_ptr().wrapping_add(bb * b + ahead).cast());
            // SAFETY: as the function's contract; block `b` of row `r`, `qx` its 32 activations.
            let (p, o) = unsafe { block::<T>(&w[r][bb * b..bb * b + bb], qx, a.d[b], a.s[b]) };
            acc[r] = _mm256_add_ps(acc[r], p);
            off[r] += o;
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) + off[r];
    }
    out
}

/// A row of 32-blocks of type `T` against a Q8 activation row: two blocks per iteration into two accumulators held in
/// registers, so consecutive blocks do not wait on each other (a single row: the odd one of a task).
///
/// # Safety
/// AVX2/FMA/F16C; `w` whole blocks of `T` and `a` at least as many activation blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8<const T: u8>(w: &[u8], a: Q8Row<'_>) -> f32 {
    let bb = block_bytes(T);
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut off0, mut off1) = (0.0f32, 0.0f32);
    let pairs = w.chunks_exact(2 * bb);
    let tail = pairs.remainder();
    let mut b = 0;
    for pair in pairs {
        // SAFETY: as the function's contract; each half of `pair` is one block, `b + 1` an activation block.
        let ((p0, o0), (p1, o1)) = unsafe {
            (
                block::<T>(&pair[..bb], &a.qs[32 * b..32 * b + 32], a.d[b], a.s[b]),
                block::<T>(&pair[bb..], &a.qs[32 * b + 32..32 * b + 64], a.d[b + 1], a.s[b + 1]),
            )
        };
        acc0 = _mm256_add_ps(acc0, p0);
        acc1 = _mm256_add_ps(acc1, p1);
        off0 += o0;
        off1 += o1;
        b += 2;
    }
    if !tail.is_empty() {
        // SAFETY: the last, odd block.
        let (p, o) = unsafe { block::<T>(tail, &a.qs[32 * b..32 * b + 32], a.d[b], a.s[b]) };
        acc0 = _mm256_add_ps(acc0, p);
        off0 += o;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + (off0 + off1)
}
