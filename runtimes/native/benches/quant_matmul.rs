//! The quantized matmul's two paths side by side, to place `MAX_INT_TOKENS` (kernels/quant/mod.rs): integer products
//! (each block decoded once per group of tokens, 8-bit activations) against dequantized tiles packed into panels, for the block
//! types of the common GGUF files, at 1 to 256 tokens, on a 1024 x 1024 matrix (a 0.3-1B model's attention
//! projection) and 2 threads. Random blocks (`quant::synthetic`): the timing does not depend on the values.
//!
//! `cargo bench -p nano-vllm-native --bench quant_matmul` (criterion; quick with `-- --quick`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nano_vllm_bundle::gguf::GgmlType;
use nano_vllm_native::kernels::quant::{Isa, Scratch, matmul_parts_up_to, synthetic};

const N: usize = 1024;
const K: usize = 1024;
const THREADS: usize = 2;

fn paths(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().unwrap();
    let isa = Isa::detect();
    let mut scratch = Scratch::default();
    let mut g = c.benchmark_group("quant_matmul");
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        let m = synthetic(ty, N, K);
        for t in [1usize, 16, 64, 128, 256] {
            let x: Vec<f32> = (0..t * K).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let mut y = vec![0.0f32; t * N];
            g.throughput(Throughput::Elements((t * N * K) as u64));
            for (path, max_int) in [("int", usize::MAX), ("tiles", 0)] {
                if t == 1 && path == "tiles" {
                    continue;
                }
                g.bench_with_input(BenchmarkId::new(format!("{ty}/{path}"), t), &t, |b, &t| {
                    b.iter(|| {
                        pool.install(|| {
                            matmul_parts_up_to(
                                std::slice::from_ref(&m),
                                &x,
                                t,
                                &mut y,
                                N,
                                THREADS,
                                isa,
                                max_int,
                                &mut scratch,
                            )
                        });
                        black_box(&y);
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, paths);
criterion_main!(benches);
