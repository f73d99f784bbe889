//! The AVX-512 and AVX2 tile kernels of [`super::tile_product`]: the same chains as `tile_portable`, in registers.

use std::arch::x86_64::*;

use super::{LANES, Tile};

/// # Safety
/// The CPU must have AVX2 and FMA; `x` must hold `rows` rows of `kc` values at stride `ldx`, `w` `kc` lines of
/// 16; `rows <= 6`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(rows: usize, x: *const f32, ldx: usize, w: *const f32, kc: usize, tile: &mut Tile) {
    // SAFETY: as this function's contract.
    unsafe { by_count!(rows, avx2_rows, [1, 2, 3, 4, 5, 6], (x, ldx, w, kc, tile)) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_rows<const MR: usize>(x: *const f32, ldx: usize, w: *const f32, kc: usize, tile: &mut Tile) {
    // SAFETY: the caller's contract: kc lines of 16 at w, MR rows of kc at x (stride ldx); the tile is 12 x 32.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm256_loadu_ps(tile[r].as_ptr());
            a[1] = _mm256_loadu_ps(tile[r].as_ptr().add(8));
        }
        for i in 0..kc {
            let line = w.add(i * LANES);
            let b0 = _mm256_load_ps(line);
            let b1 = _mm256_load_ps(line.add(8));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*x.add(r * ldx + i));
                a[0] = _mm256_fmadd_ps(v, b0, a[0]);
                a[1] = _mm256_fmadd_ps(v, b1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile[r].as_mut_ptr(), a[0]);
            _mm256_storeu_ps(tile[r].as_mut_ptr().add(8), a[1]);
        }
    }
}

/// # Safety
/// The CPU must have AVX-512F; `x` must hold `rows` rows of `kc` values at stride `ldx`, `w[p]` `kc` lines of
/// 16 for `p < panels`; `rows <= 12`, `panels` 1 or 2.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512(
    rows: usize,
    panels: usize,
    x: *const f32,
    ldx: usize,
    w: [*const f32; 2],
    kc: usize,
    tile: &mut Tile,
) {
    // SAFETY: as this function's contract.
    unsafe {
        if panels == 2 {
            by_count!(rows, avx512_two, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], (x, ldx, w, kc, tile))
        } else {
            by_count!(rows, avx512_one, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], (x, ldx, w[0], kc, tile))
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_two<const MR: usize>(x: *const f32, ldx: usize, w: [*const f32; 2], kc: usize, tile: &mut Tile) {
    // SAFETY: the caller's contract: kc lines of 16 at w[0] and w[1], MR rows of kc at x (stride ldx).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_loadu_ps(tile[r].as_ptr());
            a[1] = _mm512_loadu_ps(tile[r].as_ptr().add(LANES));
        }
        for i in 0..kc {
            let b0 = _mm512_load_ps(w[0].add(i * LANES));
            let b1 = _mm512_load_ps(w[1].add(i * LANES));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*x.add(r * ldx + i));
                a[0] = _mm512_fmadd_ps(v, b0, a[0]);
                a[1] = _mm512_fmadd_ps(v, b1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile[r].as_mut_ptr(), a[0]);
            _mm512_storeu_ps(tile[r].as_mut_ptr().add(LANES), a[1]);
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_one<const MR: usize>(x: *const f32, ldx: usize, w: *const f32, kc: usize, tile: &mut Tile) {
    // SAFETY: the caller's contract: kc lines of 16 at w, MR rows of kc at x (stride ldx).
    unsafe {
        let mut acc = [_mm512_setzero_ps(); MR];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(tile[r].as_ptr());
        }
        for i in 0..kc {
            let b = _mm512_load_ps(w.add(i * LANES));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * ldx + i)), b, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile[r].as_mut_ptr(), *a);
        }
    }
}
