//! Candle runtime throughput, through the engine: decode steps at batch 1, 8 and 32 (contexts of 64 to 128 tokens)
//! and one 128-token prefill, in tokens/s, on tiny-llama and on the `--preset bench` model (`fixtures/bench`, made
//! by `.venv/bin/python fixtures/generate.py --preset bench`; skipped with a note if absent). Same workload as the
//! native runtime's bench, so the two compare directly.
//!
//! Bounds on the 2-core machine (`../shared/RUNTIME-NOTES.md`): batch-1 decode <= 22.7e9 / weight bytes tokens/s;
//! compute-bound work <= 183e9 / (2 x parameters) tokens/s. The bench prints each model's bounds.
//! Threads: `CANDLE_BENCH_THREADS` (default: candle's own count). When absent, `RAYON_NUM_THREADS` is set to
//! candle's thread count (else candle parses /proc/cpuinfo on every matmul) and `CANDLE_NUM_THREADS` to 1 (else
//! candle's spinning element-wise pool competes with the step's threads); see `src/runtime.rs`. Set them to empty
//! values (`RAYON_NUM_THREADS= CANDLE_NUM_THREADS= cargo bench ...`) to measure candle's defaults.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nano_vllm_bundle::{HfConfig, fixtures_dir};
use nano_vllm_candle::{CandleOptions, CandleRuntime};
use nano_vllm_engine::{Config, LlmEngine, SamplingParams};

const PROMPT: usize = 64;
const DECODE_STEPS: usize = 64;

fn options() -> CandleOptions {
    CandleOptions { threads: std::env::var("CANDLE_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) }
}

fn engine(dir: &Path, seqs: usize) -> LlmEngine {
    let runtime = CandleRuntime::load(dir, &options()).unwrap();
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

/// Parameters of the matrices every token multiplies with (projections and LM head; not the embedding lookup).
fn matmul_params(c: &HfConfig) -> usize {
    let (h, d) = (c.hidden_size, c.head_dim);
    let attn = h * (c.num_heads + 2 * c.num_kv_heads) * d + c.num_heads * d * h;
    let mlp = if c.activation == nano_vllm_bundle::Activation::Silu { 3 } else { 2 } * h * c.intermediate_size;
    c.num_layers * (attn + mlp) + c.vocab_size * h
}

fn bench_model(c: &mut Criterion, name: &str, dir: &Path, sample_size: usize) {
    let probe = CandleRuntime::load(dir, &options()).unwrap();
    let config = probe.config().clone();
    let vocab = config.vocab_size;
    let params = matmul_params(&config);
    eprintln!(
        "{name}: {:.1} M matmul parameters per token ({:.1} MB f32), {} threads; batch-1 decode bound {:.0} tok/s, FLOP bound {:.0} tok/s",
        params as f64 / 1e6,
        params as f64 * 4.0 / 1e6,
        probe.threads(),
        22.7e9 / (params as f64 * 4.0),
        183e9 / (2.0 * params as f64)
    );
    drop(probe);

    let mut g = c.benchmark_group(format!("candle/{name}/decode"));
    g.sample_size(sample_size);
    for batch in [1usize, 8, 32] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let mut e = engine(dir, batch);
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

    let mut g = c.benchmark_group(format!("candle/{name}/prefill"));
    g.sample_size(sample_size);
    g.throughput(Throughput::Elements(128));
    g.bench_function("128", |b| {
        let mut e = engine(dir, 1);
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
    bench_model(c, "tiny-llama", &fixtures_dir().join("tiny-llama"), 20);
    let bench = fixtures_dir().join("bench");
    if bench.join("config.json").exists() {
        bench_model(c, "bench", &bench, 10);
    } else {
        eprintln!(
            "fixtures/bench is absent: skipping the bench-model benchmarks (make it with `.venv/bin/python fixtures/generate.py --preset bench`)"
        );
    }
}

criterion_group!(candle, benches);

fn main() {
    let defaults = [("RAYON_NUM_THREADS", candle_core::utils::get_num_threads()), ("CANDLE_NUM_THREADS", 1)];
    for (name, value) in defaults {
        if std::env::var_os(name).is_none() {
            // SAFETY: first thing in main, before criterion or any runtime starts a thread, so nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var(name, value.to_string()) };
            eprintln!("{name} was unset: set to {value} (see the header of benches/candle.rs)");
        }
    }
    candle();
    Criterion::default().configure_from_args().final_summary();
}
