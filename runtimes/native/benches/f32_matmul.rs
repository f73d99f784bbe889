//! The native f32 product on SmolLM2-135M's layer shapes at decode and prefill token counts, on 2 threads: `panels`
//! (packed once at load, what every f32 layer and tied head runs: `kernels::panels`), `gemm` (the `gemm` crate, which
//! the native runtime used before panels, as candle does), and `panels_avx2` (the AVX2 kernel, on a CPU that would take
//! AVX-512's). Criterion reports FLOP/s as elements (2 x t x out x in per product). `fma_peak` measures the machine's f32 FMA peak the same way (12
//! independent chains of fused multiply-adds in registers, AVX-512 where the CPU has it, else AVX2; 1 and 2 threads),
//! so a shape's fraction of it is its figure over that one.
//!
//! `tile_probe` runs the panel product on one thread (the kernel's ceiling, and how far memory keeps it from it).
//!
//! `cargo bench -p nano-vllm-native --bench f32_matmul` (quick with `-- --quick`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nano_vllm_native::kernels::isa::Isa;
use nano_vllm_native::kernels::panels::{self, Panels};

/// `y = x w^T` on the `gemm` crate (`w` `[n, k]` read as `k x n` with column stride `k`), split over `threads`.
fn gemm_crate(x: &[f32], t: usize, w: &[f32], n: usize, k: usize, y: &mut [f32], threads: usize) {
    assert!(x.len() >= t * k && w.len() >= n * k && y.len() >= t * n);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers cover the asserted extents (y t x n, x t x k, w n x k); y does not alias the inputs.
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
        )
    };
}

/// Iterations of the peak probe per thread.
const PEAK_ITERS: usize = 1 << 20;

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// 12 independent FMA chains of 16 lanes, `n` times: 12 x 16 x 2 x n FLOP. Separate variables, so each chain
    /// stays in its register.
    #[target_feature(enable = "avx512f")]
    pub fn zmm(n: usize, seed: f32) -> f32 {
        let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(seed));
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (b, c, b, c, b, c);
        let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (b, c, b, c, b, c);
        for _ in 0..n {
            a0 = _mm512_fmadd_ps(a0, b, c);
            a1 = _mm512_fmadd_ps(a1, b, c);
            a2 = _mm512_fmadd_ps(a2, b, c);
            a3 = _mm512_fmadd_ps(a3, b, c);
            a4 = _mm512_fmadd_ps(a4, b, c);
            a5 = _mm512_fmadd_ps(a5, b, c);
            a6 = _mm512_fmadd_ps(a6, b, c);
            a7 = _mm512_fmadd_ps(a7, b, c);
            a8 = _mm512_fmadd_ps(a8, b, c);
            a9 = _mm512_fmadd_ps(a9, b, c);
            a10 = _mm512_fmadd_ps(a10, b, c);
            a11 = _mm512_fmadd_ps(a11, b, c);
        }
        [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11].iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// The same with 8 lanes (AVX2 + FMA): 12 x 8 x 2 x n FLOP.
    #[target_feature(enable = "avx2,fma")]
    pub fn ymm(n: usize, seed: f32) -> f32 {
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(seed));
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (b, c, b, c, b, c);
        let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (b, c, b, c, b, c);
        for _ in 0..n {
            a0 = _mm256_fmadd_ps(a0, b, c);
            a1 = _mm256_fmadd_ps(a1, b, c);
            a2 = _mm256_fmadd_ps(a2, b, c);
            a3 = _mm256_fmadd_ps(a3, b, c);
            a4 = _mm256_fmadd_ps(a4, b, c);
            a5 = _mm256_fmadd_ps(a5, b, c);
            a6 = _mm256_fmadd_ps(a6, b, c);
            a7 = _mm256_fmadd_ps(a7, b, c);
            a8 = _mm256_fmadd_ps(a8, b, c);
            a9 = _mm256_fmadd_ps(a9, b, c);
            a10 = _mm256_fmadd_ps(a10, b, c);
            a11 = _mm256_fmadd_ps(a11, b, c);
        }
        let mut lanes = [0.0f32; 8];
        let sum = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]
            .iter()
            .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
        // SAFETY: lanes holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

/// The f32 FMA peak: [`peak`]'s chains on every thread of a pool of 1 and of 2.
fn fma_peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut g = c.benchmark_group("fma_peak");
        g.sample_size(20);
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for (name, lanes, has) in [("zmm", 16, avx512), ("ymm", 8, avx2)] {
                if !has {
                    continue;
                }
                g.throughput(Throughput::Elements((threads * PEAK_ITERS * 12 * lanes * 2) as u64));
                g.bench_function(BenchmarkId::new(name, threads), |b| {
                    b.iter(|| {
                        pool.broadcast(|ctx| {
                            let seed = black_box(1e-7 * (ctx.index() + 1) as f32);
                            // SAFETY: the CPU has the instructions (checked above).
                            black_box(unsafe {
                                if lanes == 16 { peak::zmm(PEAK_ITERS, seed) } else { peak::ymm(PEAK_ITERS, seed) }
                            })
                        });
                    })
                });
            }
        }
        g.finish();
    }
}

fn f32_matmul(c: &mut Criterion) {
    let threads = 2;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let isa = Isa::detect();
    // SmolLM2-135M: q/k/v stacked, gate/up stacked, down.
    for (name, out, k) in [("qkv", 960, 576), ("gate_up", 3072, 576), ("down", 576, 1536)] {
        let w: Vec<f32> = (0..out * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let packed = Panels::pack(&w, out, k);
        let mut g = c.benchmark_group(format!("f32_matmul/{name}"));
        g.sample_size(20);
        for t in [1usize, 8, 32, 128, 512] {
            let x: Vec<f32> = (0..t * k).map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5).collect();
            let mut y = vec![0.0f32; t * out];
            g.throughput(Throughput::Elements((2 * t * out * k) as u64));
            g.bench_with_input(BenchmarkId::new("panels", t), &t, |b, &t| {
                b.iter(|| pool.install(|| panels::matmul(black_box(&x), t, &packed, &mut y, threads, isa)))
            });
            // The AVX2 kernel too where the CPU would run AVX-512's: what a CPU without AVX-512 gets.
            if let Some(avx2) = Isa::avx2().filter(|&a| a != isa) {
                g.bench_with_input(BenchmarkId::new("panels_avx2", t), &t, |b, &t| {
                    b.iter(|| pool.install(|| panels::matmul(black_box(&x), t, &packed, &mut y, threads, avx2)))
                });
            }
            g.bench_with_input(BenchmarkId::new("gemm", t), &t, |b, &t| {
                b.iter(|| pool.install(|| gemm_crate(black_box(&x), t, &w, out, k, &mut y, threads)))
            });
        }
        g.finish();
    }
}

/// The panel product on one thread, against `fma_peak`'s one-thread figure: `12x32x2048` is one register tile whose
/// operands stay in cache (the kernel's own ceiling), `120x3072x512` a prefill product whose weights come from memory
/// once and then from L2, `12x3072x512` a decode-sized tile that reads its weights from memory.
fn tile_probe(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut g = c.benchmark_group("tile_probe");
    for (t, out, k) in [(12usize, 32usize, 2048usize), (120, 3072, 512), (12, 3072, 512)] {
        let w: Vec<f32> = (0..out * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let packed = Panels::pack(&w, out, k);
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5).collect();
        let mut y = vec![0.0f32; t * out];
        g.throughput(Throughput::Elements((2 * t * out * k) as u64));
        g.bench_function(format!("{t}x{out}x{k}"), |b| {
            b.iter(|| panels::matmul(black_box(&x), t, &packed, &mut y, 1, isa))
        });
    }
    g.finish();
}

criterion_group!(benches, fma_peak, f32_matmul, tile_probe);
criterion_main!(benches);
