//! One token against eight rows of a 32-block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) at once, AVX2: the one-token
//! product of `avx2.rs`'s row loop, with the scale work shared by eight rows. Only called through an `Isa` that found
//! AVX2, FMA and F16C (isa.rs).

use std::arch::x86_64::*;

use super::Q8Row;
use super::avx2::{PREFETCH, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, bits_to_bytes, block_bytes, decode32, nibbles};

/// Eight rows of 32-blocks of type `T` against one activation row. Per block, each row's integer products are
/// summed to eight i32 lanes as `avx2.rs` sums one row's, then the eight rows' vectors are reduced together (a tree
/// of horizontal adds) to one vector whose lane `r` is row `r`'s block sum, so the scale work (eight f16 scales
/// widened at once, times the activation's) and the f32 accumulation run once per eight rows instead of once per row.
/// Q4_0's and Q5_0's quants stay unsigned (`q`, not `q - 8` or `q - 16`): the block's `8 * sum x` (`16 * sum x`) is
/// taken off every lane before the reduction, which leaves the same integer sums with fewer operations a row.
///
/// # Safety
/// AVX2/FMA/F16C; each of `w` whole blocks of `T`, as many as `a` has.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot<const T: u8>(w: [&[u8]; 8], a: Q8Row<'_>) -> [f32; 8] {
    let bb = block_bytes(T);
    let blocks = a.d.len().min(w[0].len() / bb);
    assert!(w.iter().all(|row| row.len() >= blocks * bb) && a.qs.len() >= 32 * blocks && a.s.len() >= blocks);
    let row_bytes = w[0].len();
    let ahead = PREFETCH.div_ceil((8 * row_bytes).max(1)).max(1) * 8 * row_bytes;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut off = _mm256_setzero_ps();
    let ptrs: [*const u8; 8] = std::array::from_fn(|r| w[r].as_ptr());
    for b in 0..blocks {
        // SAFETY (every load below): block `b` of each row lies within the row (asserted above), and `a` has
        // 32 quants and a scale for block `b`.
        unsafe {
            let xv = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b).cast());
            // Q4_0's and Q5_0's correction: 8 (or 16) * (sum of the block's x), spread over the lanes as each
            // row's sum is.
            let xsum = || _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), xv), ones);
            let x8 = match T {
                Q4_0 => _mm256_slli_epi32(xsum(), 3),
                Q5_0 => _mm256_slli_epi32(xsum(), 4),
                _ => _mm256_setzero_si256(),
            };
            let mut sums = [_mm256_setzero_si256(); 8];
            for (r, sum) in sums.iter_mut().enumerate() {
                let blk = ptrs[r].add(bb * b);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(ahead).cast());
                *sum = match T {
                    Q8_0 => {
                        let q = _mm256_loadu_si256(blk.add(2).cast());
                        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q)), ones)
                    }
                    Q4_0 => {
                        _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(blk.add(2)), xv), ones), x8)
                    }
                    // Q5_0 unsigned too: nibble | fifth bit * 16, less 16 * sum x.
                    Q5_0 => {
                        let hi = bits_to_bytes(blk.add(2).cast::<u32>().read_unaligned());
                        let q = _mm256_or_si256(nibbles(blk.add(6)), _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
                        _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones), x8)
                    }
                    _ => {
                        let (q, signed, _, _) = decode32::<T>(std::slice::from_raw_parts(blk, bb));
                        let p = if signed {
                            _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q))
                        } else {
                            _mm256_maddubs_epi16(q, xv)
                        };
                        _mm256_madd_epi16(p, ones)
                    }
                };
            }
            // Lane r of `v` = row r's block sum: pairs, then fours, within each 128-bit half; then the halves.
            let h01 = _mm256_hadd_epi32(sums[0], sums[1]);
            let h23 = _mm256_hadd_epi32(sums[2], sums[3]);
            let h45 = _mm256_hadd_epi32(sums[4], sums[5]);
            let h67 = _mm256_hadd_epi32(sums[6], sums[7]);
            let h0123 = _mm256_hadd_epi32(h01, h23);
            let h4567 = _mm256_hadd_epi32(h45, h67);
            let v = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(h0123, h4567),
                _mm256_permute2x128_si256::<0x31>(h0123, h4567),
            );
            let dw = _mm256_cvtph_ps(halves8(ptrs, bb * b));
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[b]));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
            if T == Q4_1 || T == Q5_1 {
                let mw = _mm256_cvtph_ps(halves8(ptrs, bb * b + 2));
                off = _mm256_add_ps(off, _mm256_mul_ps(mw, _mm256_set1_ps(a.s[b])));
            }
        }
    }
    let mut out = [0.0f32; 8];
    // SAFETY: out holds 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc, off)) };
    out
}

/// The f16 at byte offset `at` of each of eight rows, as eight 16-bit lanes.
///
/// # Safety
/// AVX2; each `p[r] + at` points at two readable bytes.
#[inline(always)]
unsafe fn halves8(p: [*const u8; 8], at: usize) -> __m128i {
    // SAFETY: the caller guarantees the reads.
    unsafe {
        let h = |r: usize| p[r].add(at).cast::<u16>().read_unaligned() as i32;
        let v = _mm_cvtsi32_si128(h(0));
        let v = _mm_insert_epi16::<1>(v, h(1));
        let v = _mm_insert_epi16::<2>(v, h(2));
        let v = _mm_insert_epi16::<3>(v, h(3));
        let v = _mm_insert_epi16::<4>(v, h(4));
        let v = _mm_insert_epi16::<5>(v, h(5));
        let v = _mm_insert_epi16::<6>(v, h(6));
        _mm_insert_epi16::<7>(v, h(7))
    }
}
