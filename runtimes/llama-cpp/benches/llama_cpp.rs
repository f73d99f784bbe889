//! llama.cpp runtime throughput, through the engine: decode steps at batch 1, 8 and 32 (contexts of 64 to 128 tokens)
//! and one 128-token prefill, in tokens/s. Same workload as the native and Candle runtimes' benches, so they compare
//! directly.
//!
//! Models: tiny-llama (f32 GGUF), and the `--preset bench` model (`fixtures/bench`, made by `.venv/bin/python
//! fixtures/generate.py --preset bench`; skipped with a note if absent) as f32 and as q8_0 GGUF. Settings: `parity`
//! (F32 KV cache, flash attention off: what conformance runs) and `defaults` (llama.cpp's own: F16 KV cache, flash
//! attention on). Every core (`LLAMA_BENCH_THREADS` to change), non-unified cache with 256 cells per sequence and
//! `n_seq_max` = the batch.
//!
//! Contention: ggml's threads meet at a spinning barrier after every graph node, so with 2 threads on 2 cores that
//! other processes also use, a descheduled thread stalls the other at each barrier; on the shared development machine
//! (load 3 to 4) that made 2-thread runs 10 to 30 times slower than 1-thread runs. Compare settings at one thread
//! (`LLAMA_BENCH_THREADS=1`) unless the machine is quiet.
//!
//! Bounds on the 2-core machine (`../shared/RUNTIME-NOTES.md`): batch-1 decode <= 22.7e9 / weight bytes tokens/s;
//! compute-bound work <= 183e9 / (2 x parameters) tokens/s. The bench prints each model's bounds.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nano_vllm_bundle::{ModelConfig, fixtures_dir, open_fixture};
use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
use nano_vllm_llama_cpp::{LlamaCppOptions, LlamaCppRuntime};

const PROMPT: usize = 64;
const DECODE_STEPS: usize = 64;

fn options(setting: &str, seqs: usize) -> LlamaCppOptions {
    let base = if setting == "parity" { LlamaCppOptions::parity() } else { LlamaCppOptions::llama_defaults() };
    let threads = std::env::var("LLAMA_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    LlamaCppOptions { threads, n_seq_max: seqs.max(1), ctx_per_seq: Some(256), ..base }
}

fn engine(gguf: &Path, setting: &str, seqs: usize) -> LlmEngine {
    let runtime = LlamaCppRuntime::load(gguf, &options(setting, seqs)).unwrap();
    let config = Config::builder()
        .max_num_seqs(seqs.max(1))
        .max_num_batched_tokens(2048)
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
fn matmul_params(c: &ModelConfig) -> usize {
    let (h, d) = (c.hidden_size, c.head_dim);
    let attn = h * (c.num_heads + 2 * c.num_kv_heads) * d + c.num_heads * d * h;
    let mlp = if c.activation == "silu" { 3 } else { 2 } * h * c.intermediate_size;
    c.num_layers * (attn + mlp) + c.vocab_size * h
}

fn bench_model(c: &mut Criterion, name: &str, gguf: &Path, config: &ModelConfig, sample_size: usize) {
    let params = matmul_params(config);
    // Q8_0 stores 32 weights in 34 bytes.
    let bytes_per_weight = if gguf.to_string_lossy().contains("q8_0") { 34.0 / 32.0 } else { 4.0 };
    let threads = options("parity", 1).resolved_threads();
    eprintln!(
        "{name}: {:.1} M matmul parameters per token ({:.1} MB), {threads} threads; batch-1 decode bound {:.0} tok/s, \
         FLOP bound {:.0} tok/s",
        params as f64 / 1e6,
        params as f64 * bytes_per_weight / 1e6,
        22.7e9 / (params as f64 * bytes_per_weight),
        183e9 / (2.0 * params as f64)
    );
    let vocab = config.vocab_size;
    for setting in ["parity", "defaults"] {
        let mut g = c.benchmark_group(format!("llama-cpp/{name}/{setting}/decode"));
        g.sample_size(sample_size);
        for batch in [1usize, 8, 32] {
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::from_parameter(batch), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let mut e = engine(gguf, setting, batch);
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

        let mut g = c.benchmark_group(format!("llama-cpp/{name}/{setting}/prefill"));
        g.sample_size(sample_size);
        g.throughput(Throughput::Elements(128));
        g.bench_function("128", |b| {
            let mut e = engine(gguf, setting, 1);
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
}

fn benches(c: &mut Criterion) {
    let tiny = open_fixture("tiny-llama").unwrap();
    bench_model(c, "tiny-llama-f32", &tiny.gguf_f32(), tiny.config(), 20);
    let dir: PathBuf = fixtures_dir().join("bench");
    match open_fixture("bench") {
        Ok(bench) if bench.gguf_f32().exists() && bench.gguf_q8_0().exists() => {
            bench_model(c, "bench-f32", &bench.gguf_f32(), bench.config(), 10);
            bench_model(c, "bench-q8_0", &bench.gguf_q8_0(), bench.config(), 10);
        }
        _ => eprintln!(
            "{} is absent or incomplete: skipping the bench-model benchmarks (make it with `.venv/bin/python \
             fixtures/generate.py --preset bench`)",
            dir.display()
        ),
    }
}

criterion_group!(llama_cpp, benches);

fn main() {
    llama_cpp();
    Criterion::default().configure_from_args().final_summary();
}
