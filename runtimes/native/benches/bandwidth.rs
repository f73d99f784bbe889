//! The machine's streaming read bandwidth, the bound of a one-token decode (every weight byte read once per token):
//! a 512 MiB buffer (far past any L3 this project runs on) summed with 1 and 2 threads, each thread its own
//! contiguous half, as the native kernels split a matrix's rows. Criterion reports the bytes per second; a decode
//! step's fraction of the bound is its weight bytes per token over this figure.
//!
//! `cargo bench -p nano-vllm-native --bench bandwidth` (quick with `-- --quick`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

const BYTES: usize = 512 << 20;

/// Sum of the words, in eight independent lanes (the compiler keeps them in vector registers).
fn sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in words.chunks_exact(8) {
        for (a, &w) in acc.iter_mut().zip(chunk) {
            *a = a.wrapping_add(w);
        }
    }
    acc.iter().fold(0, |s, &a| s.wrapping_add(a))
}

fn bandwidth(c: &mut Criterion) {
    // Every page written once, so the reads below touch memory, not the shared zero page.
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("bandwidth");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(20);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        g.bench_with_input(BenchmarkId::new("read", threads), &threads, |b, &threads| {
            b.iter(|| {
                pool.install(|| {
                    let part = words.len().div_ceil(threads);
                    black_box(words.par_chunks(part).map(sum).reduce(|| 0, u64::wrapping_add))
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
