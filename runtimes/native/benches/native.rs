//! Native runtime throughput, through the engine: decode steps at batch 1, 8 and 32 (contexts of 64 to 128
//! tokens) and one 128-token prefill, in tokens/s, on tiny-llama and on the `--preset bench` model (f32, and with
//! f16 and bf16 weight storage)
//! (`fixtures/bench`, made by `.venv/bin/python fixtures/generate.py --preset bench`; skipped with a note if absent).
//!
//! Bounds on the 2-core machine (`../shared/RUNTIME-NOTES.md`): batch-1 decode <= 22.7e9 / weight bytes tokens/s;
//! compute-bound work <= 183e9 / (2 x parameters) tokens/s. The bench prints each model's bounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nano_vllm_bundle::fixtures_dir;
use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
use nano_vllm_native::{NativeOptions, NativeRuntime, WeightDtype};

const PROMPT: usize = 64;
const DECODE_STEPS: usize = 64;

fn engine(dir: &std::path::Path, seqs: usize, dtype: WeightDtype) -> LlmEngine {
    let runtime = NativeRuntime::load(dir, &NativeOptions { weight_dtype: dtype, ..Default::default() }).unwrap();
    let config = Config::builder()
        .max_num_seqs(seqs.max(1))
        .max_num_batched_tokens(4096)
        .max_model_len(256)
        .block_size(16)
        .num_kv_blocks(seqs.max(1) * 16 + 16)
        .build()
        .unwrap();
    LlmEngine::new(config, Box::new(runtime)).unwrap()
}

fn prompt(i: usize, len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|p| ((p * 31 + i * 977 + 5) % (vocab - 2) + 2) as u32).collect()
}

fn bench_model(c: &mut Criterion, name: &str, dir: &std::path::Path, sample_size: usize, dtype: WeightDtype) {
    let probe = NativeRuntime::load(dir, &NativeOptions { weight_dtype: dtype, ..Default::default() }).unwrap();
    let model = probe.model();
    let vocab = model.config.vocab_size;
    let bytes = model.weight_bytes();
    let params = bytes / dtype.bytes();
    eprintln!(
        "{name}: {:.1} M weight parameters read per token ({:.1} MB); batch-1 decode bound {:.0} tok/s, FLOP bound {:.0} tok/s",
        params as f64 / 1e6,
        bytes as f64 / 1e6,
        22.7e9 / bytes as f64,
        183e9 / (2.0 * params as f64)
    );
    drop(probe);

    let mut g = c.benchmark_group(format!("native/{name}/decode"));
    g.sample_size(sample_size);
    for batch in [1usize, 8, 32] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let mut e = engine(dir, batch, dtype);
                    let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(DECODE_STEPS + 2) };
                    for i in 0..batch {
                        e.add_request(prompt(i, PROMPT, vocab), p.clone()).unwrap();
                    }
                    e.step().unwrap(); // the prefill, untimed
                    let k = left.min(DECODE_STEPS);
                    let t = Instant::now();
                    for _ in 0..k {
                        black_box(e.step().unwrap());
                    }
                    total += t.elapsed();
                    left -= k;
                }
                total
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("native/{name}/prefill"));
    g.sample_size(sample_size);
    g.throughput(Throughput::Elements(128));
    g.bench_function("128", |b| {
        let mut e = engine(dir, 1, dtype);
        let mut i = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A new prompt each time (no prefix hit); the request finishes in the timed step.
                e.add_request(prompt(i, 128, vocab), SamplingParams::greedy(1)).unwrap();
                i += 1;
                let t = Instant::now();
                black_box(e.step().unwrap());
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_model(c, "tiny-llama", &fixtures_dir().join("tiny-llama"), 20, WeightDtype::F32);
    let bench = fixtures_dir().join("bench");
    if bench.join("config.json").exists() {
        bench_model(c, "bench", &bench, 10, WeightDtype::F32);
        bench_model(c, "bench-f16", &bench, 10, WeightDtype::F16);
        bench_model(c, "bench-bf16", &bench, 10, WeightDtype::Bf16);
    } else {
        eprintln!(
            "fixtures/bench is absent: skipping the bench-model benchmarks (make it with `.venv/bin/python fixtures/generate.py --preset bench`)"
        );
    }
}

criterion_group!(native, benches);
criterion_main!(native);
