//! Every compiled-in runtime on the same short fixed workloads, through the shared engine, in one criterion run:
//! each group is one workload and holds one benchmark per runtime, with `Throughput::Elements(tokens)`, so
//! criterion's report (target/criterion/<group>/report) compares runtimes in tokens/s.
//!
//! - `decode_b1/<bundle>`, `decode_b32/<bundle>`: decode steps of 1 or 32 sequences whose 64-token prompts were
//!   prefilled untimed (contexts of 64 to 128 tokens); elements: one token per sequence per step.
//! - `prefill_128/<bundle>`: one new 128-token prompt (no prefix hit) computed in one step; elements: 128.
//! - `serve/<bundle>`: the harness's default synthetic mix (32 requests of 16-96 prompt tokens in 4 shared-prefix
//!   groups, 8-32 output tokens, seed 0) replayed offline on a fresh engine and runtime; elements: prompt + output
//!   tokens. Runtime loading is not timed.
//!
//! Environment: `NANO_VLLM_BENCH_MODEL` (or `NANO_VLLM_BENCH_BUNDLE`; default `fixtures/tiny-llama`): any model
//! `nano-vllm bench --model` takes, e.g. `fixtures/bench` (the 42 M-parameter model of `fixtures/generate.py
//! --preset bench`), `fixtures/smollm2` (the real model's bundle) or a GGUF file; `NANO_VLLM_BENCH_RUNTIMES`
//! (comma-separated registry names, e.g. `native,native:f16,llama-cpp:q8_0,llama-cpp:shipped`; default: every
//! compiled-in runtime but mock, the quantized settings side by side (`native:q8_0`, `native:q4_0`,
//! `llama-cpp:q8_0`), and on a bundle with a shipped GGUF `native:shipped` and `llama-cpp:shipped` (the same file)), `NANO_VLLM_BENCH_THREADS` (runtime threads, default 0 = one
//! per core). The engine's context is the model's, at most 512 tokens (every workload here fits).
//!
//! `cargo bench -p nano-vllm-harness --bench runtimes -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
use nano_vllm_harness::bench;
use nano_vllm_harness::replay::{Mode, ReplayOptions, replay};
use nano_vllm_harness::workload::synthetic::{SyntheticSpec, generate};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};

const PROMPT: usize = 64;
const DECODE_STEPS: usize = 64;

struct Setup {
    bundle: ModelSource,
    runtimes: Vec<RuntimeSpec>,
    settings: RuntimeSettings,
}

/// The engine's context: the model's, at most this (every workload here fits).
const MAX_MODEL_LEN: usize = 512;

fn setup() -> Setup {
    let bundle = common::bench_model();
    let all = registry::default_runtimes_for(&bundle);
    let runtimes = match std::env::var("NANO_VLLM_BENCH_RUNTIMES") {
        Ok(list) => registry::runtime_list(&list, &all).unwrap_or_else(|e| panic!("{e}")),
        Err(_) => all,
    };
    let threads = std::env::var("NANO_VLLM_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let max_model_len = Some(bundle.info().context_length.min(MAX_MODEL_LEN));
    Setup { bundle, runtimes, settings: RuntimeSettings { threads, max_model_len, ..Default::default() } }
}

fn config(bundle: &ModelSource, seqs: usize) -> Config {
    let context = bundle.info().context_length.min(MAX_MODEL_LEN);
    Config::builder()
        .max_num_seqs(seqs.max(16))
        .max_num_batched_tokens(4096)
        .max_model_len(context)
        .block_size(16)
        .num_kv_blocks(seqs.max(16) * context.div_ceil(16))
        .eos_token_ids(Vec::new())
        .build()
        .expect("engine settings")
}

/// The runtime settings for an engine of `config`: runtimes that size their own limits (llama.cpp's `n_seq_max`,
/// `n_batch`) size them for its steps.
fn settings_for(s: &Setup, config: &Config) -> RuntimeSettings {
    RuntimeSettings {
        max_num_seqs: Some(config.max_num_seqs()),
        max_num_batched_tokens: Some(config.max_num_batched_tokens()),
        ..s.settings.clone()
    }
}

fn engine(s: &Setup, runtime: &RuntimeSpec, seqs: usize) -> LlmEngine {
    let config = config(&s.bundle, seqs);
    let rt = registry::build(runtime, &s.bundle, &settings_for(s, &config)).unwrap_or_else(|e| panic!("{e}"));
    LlmEngine::new(config, rt).expect("engine")
}

/// Deterministic prompt tokens above the special ids.
fn prompt(i: usize, len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|p| ((p * 31 + i * 977 + 5) % (vocab - 2) + 2) as u32).collect()
}

fn decode(c: &mut Criterion, s: &Setup, batch: usize) {
    let vocab = s.bundle.info().vocab_size;
    let mut g = c.benchmark_group(format!("decode_b{batch}/{}", s.bundle.name()));
    g.sample_size(10).throughput(Throughput::Elements(batch as u64));
    for name in &s.runtimes {
        g.bench_function(BenchmarkId::from_parameter(name.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let mut e = engine(s, name, batch);
                    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(DECODE_STEPS + 2) };
                    for i in 0..batch {
                        e.add_request(prompt(i, PROMPT, vocab), params.clone()).expect("request");
                    }
                    e.step().expect("prefill"); // untimed
                    let k = left.min(DECODE_STEPS);
                    let t = Instant::now();
                    for _ in 0..k {
                        black_box(e.step().expect("decode step"));
                    }
                    total += t.elapsed();
                    left -= k;
                }
                total
            })
        });
    }
    g.finish();
}

fn prefill(c: &mut Criterion, s: &Setup) {
    let vocab = s.bundle.info().vocab_size;
    let len = 128.min(s.bundle.info().context_length.min(MAX_MODEL_LEN) - 1);
    let mut g = c.benchmark_group(format!("prefill_{len}/{}", s.bundle.name()));
    g.sample_size(10).throughput(Throughput::Elements(len as u64));
    for name in &s.runtimes {
        g.bench_function(BenchmarkId::from_parameter(name.name()), |b| {
            let mut e = engine(s, name, 1);
            let mut i = 0;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A new prompt each time (no prefix hit); the request finishes in the timed step.
                    e.add_request(prompt(i, len, vocab), SamplingParams::greedy(1)).expect("request");
                    i += 1;
                    let t = Instant::now();
                    black_box(e.step().expect("prefill step"));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn serve(c: &mut Criterion, s: &Setup) {
    let cfg = s.bundle.info();
    let context = cfg.context_length.min(MAX_MODEL_LEN);
    let workload = generate(&SyntheticSpec::default_mix(32, cfg.vocab_size, context / 2)).expect("workload");
    let requests = bench::resolve(&workload, None, cfg.vocab_size, context).expect("token-id requests");
    let tokens: usize = requests.iter().map(|r| r.prompt.len() + r.params.max_tokens).sum();
    let mut g = c.benchmark_group(format!("serve/{}", s.bundle.name()));
    g.sample_size(10).throughput(Throughput::Elements(tokens as u64));
    let options = ReplayOptions {
        mode: Mode::Offline,
        warmup: 0,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
        max_concurrency: None,
    };
    for name in &s.runtimes {
        g.bench_function(BenchmarkId::from_parameter(name.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let config = config(&s.bundle, 16);
                    let settings = settings_for(s, &config);
                    let rt = registry::build(name, &s.bundle, &settings).unwrap_or_else(|e| panic!("{e}"));
                    let r = replay(rt, config, &requests, &options).expect("replay");
                    assert!(r.error.is_none(), "{name}: {:?}", r.error);
                    total += Duration::from_secs_f64(r.wall_s);
                }
                total
            })
        });
    }
    g.finish();
}

fn main() {
    for (key, value) in registry::thread_env_defaults() {
        // SAFETY: first thing in main, before any thread is spawned.
        unsafe { std::env::set_var(key, value) };
    }
    let s = setup();
    eprintln!(
        "runtimes: {} on {} ({} threads setting)",
        s.runtimes.iter().map(RuntimeSpec::name).collect::<Vec<_>>().join(", "),
        s.bundle.name(),
        s.settings.threads
    );
    let mut c = Criterion::default().configure_from_args();
    decode(&mut c, &s, 1);
    decode(&mut c, &s, 32);
    prefill(&mut c, &s);
    serve(&mut c, &s);
    c.final_summary();
}
