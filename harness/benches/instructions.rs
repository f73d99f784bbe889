//! Instruction counts (Valgrind's Callgrind, through gungraun) of fixed workloads: the figures the regression gate
//! compares on any machine, since they depend neither on the machine's load nor on its CPU generation (under
//! Valgrind every AVX2 machine looks alike, so runtime-dispatched kernels take the same path).
//!
//! - `engine::serve.mixed`: 256 requests (4 shared-prefix groups, a quarter sampled with temperature and top-p)
//!   through `LlmEngine` on the mock runtime (vocabulary 64, so the engine's own work dominates), in a KV cache
//!   small enough to preempt; scheduling, batching, prefix caching, sampling and postprocessing.
//! - `engine::decode.b32`, `engine::decode.b256`: 64 decode steps of 32 or 256 running sequences on the null
//!   runtime (the engine's hot path alone).
//! - `harness::replay_metrics.mock`: `replay` of 200 synthetic requests on the mock runtime, then their serving
//!   metrics.
//! - `runtimes::serve_tiny_llama.<runtime>`: a 16-request mix replayed on `fixtures/tiny-llama` with one thread:
//!   native, native_q8_0 (the quantized kernels), onnx, llama_cpp and llama_cpp_q8_0. Candle is not counted: its work runs on rayon worker threads, which Callgrind's
//!   per-thread collection does not see (the wall-clock gate covers it).
//! - `kernels::quant_matmul.<type>_t<tokens>`: the native runtime's integer K-quant products alone (Q4_K and Q6_K, the
//!   Q4_K_M files' types, and Q5_K; 512 x 1024 weights; one token and sixteen), one thread.
//!
//! Setup (loading runtimes, building requests and engines) is not counted. Run with `gungraun-runner` on the PATH
//! (ci/setup.sh installs the pinned version): `cargo bench -p nano-vllm-harness --bench instructions`;
//! `-- --output-format=json` prints the summary lines `nano-vllm gate --instructions` reads.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gungraun::{Callgrind, LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main};
use nano_vllm_engine::{Config, LlmEngine, MockRuntime, NullRuntime, Runtime, SamplingParams};
use nano_vllm_harness::bench;
use nano_vllm_harness::metrics::Slo;
use nano_vllm_harness::replay::{Mode, ReplayOptions, ResolvedRequest, replay};
use nano_vllm_harness::report::RuntimeResult;
use nano_vllm_harness::workload::synthetic::{SyntheticSpec, generate};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};

/// The harness's default synthetic mix of `n` requests.
fn synthetic(n: usize, vocab_size: usize) -> Vec<ResolvedRequest> {
    let workload = generate(&SyntheticSpec::default_mix(n, vocab_size, 96)).expect("synthetic workload");
    bench::resolve(&workload, None, vocab_size, 256).expect("token-id requests")
}

fn config(max_num_seqs: usize, num_kv_blocks: usize) -> Config {
    Config::builder()
        .max_num_seqs(max_num_seqs)
        .max_num_batched_tokens(256)
        .max_model_len(256)
        .block_size(16)
        .num_kv_blocks(num_kv_blocks)
        .eos_token_ids(vec![1])
        .build()
        .expect("engine settings")
}

const OFFLINE: fn() -> ReplayOptions = || ReplayOptions {
    mode: Mode::Offline,
    warmup: 0,
    cancel: Arc::new(AtomicBool::new(false)),
    progress: None,
    max_concurrency: None,
};

/// An engine on the mock runtime holding 256 requests: a quarter sampled (seeded), 48 KV blocks (preemptions).
fn serve_setup() -> LlmEngine {
    let mut engine = LlmEngine::new(config(32, 48), Box::new(MockRuntime::new(64))).expect("engine");
    for (i, r) in synthetic(256, 64).into_iter().enumerate() {
        let params = if i % 4 == 3 {
            SamplingParams { temperature: 0.8, top_p: 0.9, seed: Some(i as u64), ..r.params }
        } else {
            r.params
        };
        engine.add_request(r.prompt, params).expect("request");
    }
    engine
}

#[library_benchmark]
#[bench::mixed(setup = serve_setup)]
fn serve(mut engine: LlmEngine) -> usize {
    let mut finished = 0;
    while engine.has_unfinished() {
        finished += engine.step().expect("step").finished.len();
    }
    assert_eq!(finished, 256);
    black_box(finished)
}

/// An engine on the null runtime with `n` sequences past their 32-token prefill.
fn decode_setup(n: usize) -> LlmEngine {
    let config = Config::builder()
        .max_num_seqs(n)
        .max_num_batched_tokens(n * 32)
        .max_model_len(128)
        .block_size(16)
        .num_kv_blocks(n * 8)
        .build()
        .expect("engine settings");
    let mut engine = LlmEngine::new(config, Box::new(NullRuntime)).expect("engine");
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(90) };
    for i in 0..n {
        let prompt = (0..32u32).map(|t| (t * 7 + i as u32) % 100 + 1).collect();
        engine.add_request(prompt, params.clone()).expect("request");
    }
    engine.step().expect("prefill");
    engine
}

#[library_benchmark]
#[bench::b32(setup = decode_setup, args = (32))]
#[bench::b256(setup = decode_setup, args = (256))]
fn decode(mut engine: LlmEngine) -> usize {
    let mut tokens = 0;
    for _ in 0..64 {
        tokens += engine.step().expect("decode step").new_tokens.len();
    }
    black_box(tokens)
}

library_benchmark_group!(name = engine, benchmarks = [serve, decode]);

#[library_benchmark]
#[bench::mock(setup = synthetic, args = (200, 64))]
fn replay_metrics(requests: Vec<ResolvedRequest>) -> usize {
    let r = replay(Box::new(MockRuntime::new(64)), config(16, 64), &requests, &OFFLINE()).expect("replay");
    let result = RuntimeResult::from_replay(&r, &[50.0, 90.0, 99.0], &Slo::default());
    assert_eq!(result.metrics.get("completed"), Some(&200.0));
    black_box(result.metrics.len())
}

library_benchmark_group!(name = harness, benchmarks = [replay_metrics]);

/// Runtime `name` on tiny-llama with one thread, and a 16-request mix.
fn runtime_setup(name: &str) -> (Box<dyn Runtime>, Vec<ResolvedRequest>) {
    let model = ModelSource::open(nano_vllm_bundle::fixtures_dir().join("tiny-llama")).expect("tiny-llama");
    let settings = RuntimeSettings { threads: 1, max_model_len: Some(256), ..Default::default() };
    let runtime = registry::build(&name.parse().unwrap_or_else(|e| panic!("{e}")), &model, &settings)
        .unwrap_or_else(|e| panic!("{e}"));
    (runtime, synthetic(16, model.info().vocab_size))
}

#[library_benchmark]
#[bench::native(setup = runtime_setup, args = ("native"))]
#[bench::native_q8_0(setup = runtime_setup, args = ("native:q8_0"))]
#[bench::onnx(setup = runtime_setup, args = ("onnx"))]
#[bench::llama_cpp(setup = runtime_setup, args = ("llama-cpp"))]
#[bench::llama_cpp_q8_0(setup = runtime_setup, args = ("llama-cpp:q8_0"))]
fn serve_tiny_llama(input: (Box<dyn Runtime>, Vec<ResolvedRequest>)) -> usize {
    let (runtime, requests) = input;
    let r = replay(runtime, config(16, 64), &requests, &OFFLINE()).expect("replay");
    assert!(r.error.is_none(), "{:?}", r.error);
    black_box(r.records.len())
}

library_benchmark_group!(name = runtimes, benchmarks = [serve_tiny_llama]);

/// 512 x 1024 weights of `ty` (`quant::synthetic`: seeded random blocks, small f16 scales) and `t` tokens.
fn quant_setup(ty: &str, t: usize) -> (nano_vllm_native::kernels::quant::QMatrix, Vec<f32>, usize) {
    use nano_vllm_bundle::gguf::GgmlType;
    let ty = match ty {
        "q4_k" => GgmlType::Q4K,
        "q5_k" => GgmlType::Q5K,
        _ => GgmlType::Q6K,
    };
    let m = nano_vllm_native::kernels::quant::synthetic(ty, 512, 1024);
    let x = (0..t * m.cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    (m, x, t)
}

#[library_benchmark]
#[bench::q4_k_t1(setup = quant_setup, args = ("q4_k", 1))]
#[bench::q4_k_t16(setup = quant_setup, args = ("q4_k", 16))]
#[bench::q5_k_t1(setup = quant_setup, args = ("q5_k", 1))]
#[bench::q6_k_t1(setup = quant_setup, args = ("q6_k", 1))]
#[bench::q6_k_t16(setup = quant_setup, args = ("q6_k", 16))]
fn quant_matmul(input: (nano_vllm_native::kernels::quant::QMatrix, Vec<f32>, usize)) -> f32 {
    use nano_vllm_native::kernels::quant::{Isa, Scratch, matmul_parts};
    let (m, x, t) = input;
    let mut y = vec![0.0f32; t * m.rows];
    matmul_parts(std::slice::from_ref(&m), &x, t, &mut y, m.rows, 1, Isa::detect(), &mut Scratch::default());
    black_box(y.iter().sum())
}

library_benchmark_group!(name = kernels, benchmarks = [quant_matmul]);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = engine, harness, runtimes, kernels
);
