//! The three loops of [`super::attend_head`] on each instruction set: the same operations in the same order, so the
//! AVX-512, AVX2 and portable builds give the same bits.

use super::super::isa::{Isa, Kind};
use super::{GROUPS, KEYS, exp};

/// `out[i * KEYS + l] = chain_d fma(q[d], k_i[d * strides[i] + l], acc)` from 0, for groups `i < gn`, lanes
/// `l < KEYS`, where `k_i` is `ptrs[i]`.
///
/// # Safety
/// Each `ptrs[i]` (`i < gn`) must be valid for reads at `d * strides[i] + l` for `d < q.len()`, `l < KEYS`;
/// `out.len() >= gn * KEYS`; `1 <= gn <= GROUPS`.
pub(super) unsafe fn scores(
    isa: Isa,
    q: &[f32],
    ptrs: [*const f32; GROUPS],
    strides: [usize; GROUPS],
    gn: usize,
    out: &mut [f32],
) {
    assert!(out.len() >= gn * KEYS && (1..=GROUPS).contains(&gn));
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx512 is made only after the CPU was found to have AVX-512F; extents as this
        // function's contract.
        Kind::Avx512 => unsafe { x86::scores_avx512(q, ptrs, strides, gn, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Kind::Avx2 => unsafe { x86::scores_avx2(q, ptrs, strides, gn, out) },
        Kind::Portable => {
            for i in 0..gn {
                for l in 0..KEYS {
                    let mut acc = 0.0f32;
                    for (dim, &qd) in q.iter().enumerate() {
                        // SAFETY: the caller's contract.
                        acc = qd.mul_add(unsafe { *ptrs[i].add(dim * strides[i] + l) }, acc);
                    }
                    out[i * KEYS + l] = acc;
                }
            }
        }
    }
}

/// `group[l] = exp(group[l] - max)` for `l < valid`, 0 for the lanes past the context's end.
pub(super) fn weights(isa: Isa, group: &mut [f32], max: f32, valid: usize) {
    assert_eq!(group.len(), KEYS);
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx512 is made only after the CPU was found to have AVX-512F.
        Kind::Avx512 => unsafe { x86::weights_avx512(group, max) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Kind::Avx2 => unsafe { x86::weights_avx2(group, max) },
        Kind::Portable => group.iter_mut().for_each(|s| *s = exp(*s - max)),
    }
    if valid < KEYS {
        group[valid..].fill(0.0);
    }
}

/// `out[d] = chain_j fma(p[j], v[slots[j] * row + off + d], acc)` from 0, positions `j` in order.
///
/// # Safety
/// `v` must hold `slots[j] * row + off + out.len()` values for every `j`; `p.len() == slots.len()`.
pub(super) unsafe fn weighted_values(
    isa: Isa,
    p: &[f32],
    slots: &[u32],
    v: &[f32],
    row: usize,
    off: usize,
    out: &mut [f32],
) {
    assert_eq!(p.len(), slots.len());
    let base = |j: usize| slots[j] as usize * row + off;
    let mut dim = 0;
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx512 is made only after the CPU was found to have AVX-512F; extents as this
        // function's contract.
        Kind::Avx512 => dim = unsafe { x86::weighted_values_avx512(p, slots, v.as_ptr(), row, off, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Kind::Avx2 => dim = unsafe { x86::weighted_values_avx2(p, slots, v.as_ptr(), row, off, out) },
        Kind::Portable => {}
    }
    for (d, o) in out.iter_mut().enumerate().skip(dim) {
        let mut acc = 0.0f32;
        for (j, &pj) in p.iter().enumerate() {
            acc = pj.mul_add(v[base(j) + d], acc);
        }
        *o = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::exp_consts::*;
    use super::{GROUPS, KEYS};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_avx512(
        q: &[f32],
        ptrs: [*const f32; GROUPS],
        strides: [usize; GROUPS],
        gn: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { by_count!(gn, scores512, [1, 2, 3, 4, 5, 6, 7, 8], (q, ptrs, strides, out)) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn scores512<const G: usize>(
        q: &[f32],
        ptrs: [*const f32; GROUPS],
        strides: [usize; GROUPS],
        out: &mut [f32],
    ) {
        let mut acc = [_mm512_setzero_ps(); G];
        for (dim, &qd) in q.iter().enumerate() {
            let qv = _mm512_set1_ps(qd);
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: the caller's contract: KEYS lanes at dim * stride from each group's pointer.
                *a = _mm512_fmadd_ps(qv, unsafe { _mm512_loadu_ps(ptrs[i].add(dim * strides[i])) }, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: out holds G * KEYS values (asserted by the caller).
            unsafe { _mm512_storeu_ps(out[i * KEYS..].as_mut_ptr(), *a) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_avx2(
        q: &[f32],
        ptrs: [*const f32; GROUPS],
        strides: [usize; GROUPS],
        gn: usize,
        out: &mut [f32],
    ) {
        // Four groups (eight registers of accumulators) at a time.
        for i0 in (0..gn).step_by(4) {
            let n = 4.min(gn - i0);
            let p: [*const f32; GROUPS] = std::array::from_fn(|i| ptrs[(i0 + i).min(GROUPS - 1)]);
            let s: [usize; GROUPS] = std::array::from_fn(|i| strides[(i0 + i).min(GROUPS - 1)]);
            // SAFETY: the caller's contract, for groups i0..i0 + n.
            unsafe { by_count!(n, scores256, [1, 2, 3, 4], (q, p, s, &mut out[i0 * KEYS..])) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn scores256<const G: usize>(
        q: &[f32],
        ptrs: [*const f32; GROUPS],
        strides: [usize; GROUPS],
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for (dim, &qd) in q.iter().enumerate() {
            let qv = _mm256_set1_ps(qd);
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: the caller's contract: KEYS lanes at dim * stride from each group's pointer.
                unsafe {
                    let k = ptrs[i].add(dim * strides[i]);
                    a[0] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k), a[0]);
                    a[1] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add(8)), a[1]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: out holds G * KEYS values (asserted by the caller).
            unsafe {
                _mm256_storeu_ps(out[i * KEYS..].as_mut_ptr(), a[0]);
                _mm256_storeu_ps(out[i * KEYS + 8..].as_mut_ptr(), a[1]);
            }
        }
    }

    /// [`super::super::exp`], 16 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp512(x: __m512) -> __m512 {
        // max_ps(c, x) is `c > x ? c : x`, as the scalar clamp (a NaN passes).
        let x = _mm512_max_ps(_mm512_set1_ps(LO), x);
        let x = _mm512_min_ps(_mm512_set1_ps(HI), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(LOG2E),
        ));
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
        let mut p = _mm512_set1_ps(P0);
        for c in [P1, P2, P3, P4, P5] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
        _mm512_mul_ps(y, _mm512_castsi512_ps(e))
    }

    /// [`super::super::exp`], 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp256(x: __m256) -> __m256 {
        let x = _mm256_max_ps(_mm256_set1_ps(LO), x);
        let x = _mm256_min_ps(_mm256_set1_ps(HI), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(LOG2E),
        ));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(P0);
        for c in [P1, P2, P3, P4, P5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weights_avx512(group: &mut [f32], max: f32) {
        // SAFETY: group holds KEYS = 16 values (asserted by the caller).
        unsafe {
            let s = _mm512_loadu_ps(group.as_ptr());
            _mm512_storeu_ps(group.as_mut_ptr(), exp512(_mm512_sub_ps(s, _mm512_set1_ps(max))));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weights_avx2(group: &mut [f32], max: f32) {
        for half in group.chunks_exact_mut(8) {
            // SAFETY: 8 values.
            unsafe {
                let s = _mm256_loadu_ps(half.as_ptr());
                _mm256_storeu_ps(half.as_mut_ptr(), exp256(_mm256_sub_ps(s, _mm256_set1_ps(max))));
            }
        }
    }

    /// The leading dimensions of [`super::weighted_values`] in registers: chunks of 8, 4, 2 and 1 vectors of 16;
    /// returns how many dimensions it did (the rest is scalar).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values_avx512(
        p: &[f32],
        slots: &[u32],
        v: *const f32,
        row: usize,
        off: usize,
        out: &mut [f32],
    ) -> usize {
        let d = out.len();
        let mut dim = 0;
        for width in [8, 4, 2, 1] {
            while d - dim >= width * 16 {
                // SAFETY: the caller's contract covers every value row's dimensions dim..dim + 16 width <= d.
                unsafe { by_count!(width, values512, [1, 2, 4, 8], (p, slots, v, row, off + dim, &mut out[dim..])) };
                dim += width * 16;
            }
        }
        dim
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn values512<const V: usize>(
        p: &[f32],
        slots: &[u32],
        v: *const f32,
        row: usize,
        off: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm512_setzero_ps(); V];
        for (&pj, &s) in p.iter().zip(slots) {
            let pv = _mm512_set1_ps(pj);
            // SAFETY: the caller's contract: V * 16 values from this row's offset.
            let r = unsafe { v.add(s as usize * row + off) };
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(pv, unsafe { _mm512_loadu_ps(r.add(16 * c)) }, *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: out holds at least V * 16 values (the caller's loop bound).
            unsafe { _mm512_storeu_ps(out[16 * c..].as_mut_ptr(), *a) };
        }
    }

    /// As [`weighted_values_avx512`], in chunks of 8, 4, 2 and 1 vectors of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_values_avx2(
        p: &[f32],
        slots: &[u32],
        v: *const f32,
        row: usize,
        off: usize,
        out: &mut [f32],
    ) -> usize {
        let d = out.len();
        let mut dim = 0;
        for width in [8, 4, 2, 1] {
            while d - dim >= width * 8 {
                // SAFETY: the caller's contract covers every value row's dimensions dim..dim + 8 width <= d.
                unsafe { by_count!(width, values256, [1, 2, 4, 8], (p, slots, v, row, off + dim, &mut out[dim..])) };
                dim += width * 8;
            }
        }
        dim
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn values256<const V: usize>(
        p: &[f32],
        slots: &[u32],
        v: *const f32,
        row: usize,
        off: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); V];
        for (&pj, &s) in p.iter().zip(slots) {
            let pv = _mm256_set1_ps(pj);
            // SAFETY: the caller's contract: V * 8 values from this row's offset.
            let r = unsafe { v.add(s as usize * row + off) };
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, unsafe { _mm256_loadu_ps(r.add(8 * c)) }, *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: out holds at least V * 8 values (the caller's loop bound).
            unsafe { _mm256_storeu_ps(out[8 * c..].as_mut_ptr(), *a) };
        }
    }
}
