//! Small-batch products: `y[t, o] = x[t] . w[o]` for a few tokens (decode), each weight row streamed once and widened
//! to f32 in registers right before its FMA, so the weights are read once, at their stored width (2 bytes for f16 and
//! bf16). The AVX2 + FMA (+ F16C for f16) path is chosen at run time; elsewhere a portable loop does the
//! same arithmetic. Rows are split over the runtime's threads in tasks of `ROWS` rows.
//!
//! The f16 and bf16 layers take it up to [`MAX_TOKENS`] tokens (f32 layers are packed into panels at load,
//! [`super::panels`], whose product serves every batch size).

use half::{bf16, f16};

use super::OutPtr;

/// Most tokens this kernel takes; larger batches are compute-bound and go to tiles packed into panels.
pub const MAX_TOKENS: usize = 8;

/// A storage type of weight rows.
pub trait GemvWeight: Copy + Send + Sync + 'static {
    fn widen(self) -> f32;
    #[cfg(target_arch = "x86_64")]
    /// Eight weights at `p` widened to f32 lanes.
    ///
    /// # Safety
    /// `p` must point at 8 readable values and the CPU must have AVX2 and F16C.
    unsafe fn widen8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl GemvWeight for f32 {
    fn widen(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn widen8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable values and AVX.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl GemvWeight for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn widen8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable values and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

impl GemvWeight for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn widen8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable values and AVX2. bf16 is the top half of an f32.
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)), 16))
        }
    }
}

/// Dot products of one weight row with up to `MAX_TOKENS` input rows: `out[tt] = w . x[tt]`.
fn row_portable<W: GemvWeight>(w: &[W], x: &[f32], t: usize, k: usize, out: &mut [f32]) {
    for (tt, o) in out[..t].iter_mut().enumerate() {
        let xr = &x[tt * k..(tt + 1) * k];
        let mut acc = [0.0f32; 8];
        for (wc, xc) in w.chunks_exact(8).zip(xr.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += wc[i].widen() * xc[i];
            }
        }
        let tail = k / 8 * 8;
        let mut s: f32 = acc.iter().sum();
        for i in tail..k {
            s += w[i].widen() * xr[i];
        }
        *o = s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn row_avx2<W: GemvWeight>(w: &[W], x: &[f32], t: usize, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // Two independent accumulator sets, so consecutive FMAs (and the widening before them) overlap.
    let mut acc = [[_mm256_setzero_ps(); 2]; MAX_TOKENS];
    let chunks = k / 8;
    let pairs = chunks / 2;
    for c in 0..pairs {
        // SAFETY: (2c + 2) * 8 <= k = w.len(), and this function runs only with AVX2, FMA and F16C (checked by
        // the caller through `Isa`); x holds t rows of k.
        unsafe {
            let w0 = W::widen8(w.as_ptr().add(c * 16));
            let w1 = W::widen8(w.as_ptr().add(c * 16 + 8));
            for (tt, a) in acc.iter_mut().enumerate().take(t) {
                let xp = x.as_ptr().add(tt * k + c * 16);
                a[0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), a[0]);
                a[1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(8)), a[1]);
            }
        }
    }
    if chunks % 2 == 1 {
        let c = chunks - 1;
        // SAFETY: as above, for the last full chunk of 8.
        unsafe {
            let w0 = W::widen8(w.as_ptr().add(c * 8));
            for (tt, a) in acc.iter_mut().enumerate().take(t) {
                a[0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(tt * k + c * 8)), a[0]);
            }
        }
    }
    let acc: [__m256; MAX_TOKENS] = std::array::from_fn(|tt| _mm256_add_ps(acc[tt][0], acc[tt][1]));
    for (tt, o) in out[..t].iter_mut().enumerate() {
        let mut lanes = [0.0f32; 8];
        // SAFETY: lanes holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[tt]) };
        let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        for i in chunks * 8..k {
            s += w[i].widen() * x[tt * k + i];
        }
        *o = s;
    }
}

/// Rows per task: enough work to amortise scheduling, enough tasks to balance.
const ROWS: usize = 64;

/// `y[t, n] = x[t, k] * w[n, k]^T` for `t <= MAX_TOKENS`, rows in parallel on the current rayon pool (`threads > 1`).
pub fn matmul_t_small<W: GemvWeight>(x: &[f32], t: usize, w: &[W], n: usize, k: usize, y: &mut [f32], threads: usize) {
    assert!(t <= MAX_TOKENS && x.len() >= t * k && w.len() >= n * k && y.len() >= t * n);
    // One check for every storage type: the row kernel is compiled with AVX2, FMA and F16C enabled.
    #[cfg(target_arch = "x86_64")]
    let simd = super::isa::Isa::detect().has_avx2();
    let y_ptr = OutPtr(y.as_mut_ptr());
    super::for_each_task(n.div_ceil(ROWS), threads, |chunk| {
        let mut out = [0.0f32; MAX_TOKENS];
        for o in chunk * ROWS..((chunk + 1) * ROWS).min(n) {
            let row = &w[o * k..(o + 1) * k];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the CPU has AVX2, FMA and F16C (an `Isa` is SIMD only after checking all three).
                unsafe { row_avx2(row, x, t, k, &mut out) };
            } else {
                row_portable(row, x, t, k, &mut out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            row_portable(row, x, t, k, &mut out);
            for (tt, &v) in out[..t].iter().enumerate() {
                // SAFETY: tt * n + o < t * n <= y.len() (asserted); each o belongs to one chunk, so no two tasks
                // write the same element, and `y` is borrowed mutably for the whole loop.
                unsafe { *y_ptr.get().add(tt * n + o) = v };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_agree_with_a_naive_product() {
        let (k, n) = (77, 130);
        for t in [1, 3, 8] {
            let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.29).sin()).collect();
            let wf: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.13).cos()).collect();
            let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
            let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let mut y = vec![0.0; t * n];
            matmul_t_small(&x, t, &w16, n, k, &mut y, 2);
            let mut yb = vec![0.0; t * n];
            matmul_t_small(&x, t, &wb, n, k, &mut yb, 2);
            let mut yf = vec![0.0; t * n];
            matmul_t_small(&x, t, &wf, n, k, &mut yf, 2);
            let mut portable = vec![0.0; t];
            for o in 0..n {
                row_portable(&w16[o * k..(o + 1) * k], &x, t, k, &mut portable);
                for tt in 0..t {
                    let want: f32 = (0..k).map(|i| w16[o * k + i].to_f32() * x[tt * k + i]).sum();
                    assert!((y[tt * n + o] - want).abs() < 1e-4, "t {t} o {o}: {} vs {want}", y[tt * n + o]);
                    assert!((portable[tt] - want).abs() < 1e-4);
                    let want_b: f32 = (0..k).map(|i| wb[o * k + i].to_f32() * x[tt * k + i]).sum();
                    assert!((yb[tt * n + o] - want_b).abs() < 1e-4);
                    let want_f: f32 = (0..k).map(|i| wf[o * k + i] * x[tt * k + i]).sum();
                    assert!((yf[tt * n + o] - want_f).abs() < 1e-4);
                }
            }
        }
    }
}
