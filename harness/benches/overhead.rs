//! What the harness adds over a runtime's own loop. The same steps run two ways on the native runtime:
//!
//! - `direct`: the step batches an engine run produced (recorded once, untimed) handed straight to
//!   `Runtime::execute` (and `release`) on a fresh runtime: the runtime's work and nothing else;
//! - `engine_replay`: the requests replayed through `LlmEngine` and `replay` on a fresh runtime, as `nano-vllm
//!   bench` runs them (scheduling, batching, sampling, postprocessing, timing records).
//!
//! Workload: 8 requests of 16 prompt tokens and 64 greedy output tokens, offline (one prefill step, then decodes of
//! 8 sequences). Elements are output tokens, so criterion's throughputs compare directly; at the end the overhead
//! fraction `1 - direct / engine_replay` (median times) is printed, and, measured inside the replays themselves (so
//! free of the noise between two benchmarks), the shares of the wall time spent in the runtime, in the engine's
//! phases and in the rest of the replay loop. `NANO_VLLM_BENCH_MODEL` picks the model
//! (`NANO_VLLM_BENCH_BUNDLE` too; default `fixtures/tiny-llama`; e.g. `fixtures/bench`, `fixtures/smollm2` or a GGUF),
//! `NANO_VLLM_BENCH_THREADS` the threads (default 1), `NANO_VLLM_BENCH_SEQS` the requests (default 8; e.g. 32 on
//! `fixtures/gemma3-270m`, whose 262,144-token vocabulary is where sampling and logit handling cost most).
//!
//! `cargo bench -p nano-vllm-harness --bench overhead -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use nano_vllm_engine::{
    Capabilities, Config, KvCacheSpec, Runtime, RuntimeError, RuntimeInfo, SamplingParams, SeqId, StepBatch, StepOutput,
};
use nano_vllm_harness::replay::{Mode, ReplayOptions, ResolvedRequest, replay};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};

/// Requests (and sequences a step), unless `NANO_VLLM_BENCH_SEQS` says otherwise.
const SEQS: usize = 8;
const PROMPT: usize = 16;
const OUTPUT: usize = 64;

/// What the engine asked of its runtime, in order.
#[derive(Debug, Clone)]
enum Call {
    Execute(StepBatch),
    Release(SeqId),
}

/// Forwards to a runtime and records every call.
struct Recording {
    inner: Box<dyn Runtime>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Runtime for Recording {
    fn info(&self) -> RuntimeInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        self.inner.prepare(kv)
    }
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        self.calls.lock().expect("recording").push(Call::Execute(batch.clone()));
        self.inner.execute(batch)
    }
    fn release(&mut self, seq_id: SeqId) {
        self.calls.lock().expect("recording").push(Call::Release(seq_id));
        self.inner.release(seq_id);
    }
}

struct Setup {
    bundle: ModelSource,
    settings: RuntimeSettings,
    config: Config,
    requests: Vec<ResolvedRequest>,
    calls: Vec<Call>,
}

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(s) => s.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("{name}={s:?}: expected a count above 0")),
    }
}

fn setup() -> Setup {
    let bundle = common::bench_model();
    let threads = env_count("NANO_VLLM_BENCH_THREADS", 1);
    let seqs = env_count("NANO_VLLM_BENCH_SEQS", SEQS);
    let vocab = bundle.info().vocab_size;
    let requests: Vec<ResolvedRequest> = (0..seqs)
        .map(|i| ResolvedRequest {
            id: None,
            arrival_s: 0.0,
            prompt: (0..PROMPT).map(|p| ((p * 31 + i * 977 + 5) % (vocab - 2) + 2) as u32).collect(),
            params: SamplingParams { ignore_eos: true, ..SamplingParams::greedy(OUTPUT) },
        })
        .collect();
    let max_model_len = PROMPT + OUTPUT;
    let config = Config::builder()
        .max_num_seqs(seqs)
        .max_model_len(max_model_len)
        .block_size(16)
        .num_kv_blocks(seqs * (PROMPT + OUTPUT).div_ceil(16) + 1)
        .eos_token_ids(Vec::new())
        .build()
        .expect("engine settings");
    let settings = RuntimeSettings { threads, max_model_len: Some(max_model_len), ..Default::default() };
    // One untimed run through the engine records the steps.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let runtime = registry::build(&"native".parse().unwrap(), &bundle, &settings).unwrap_or_else(|e| panic!("{e}"));
    let recording = Recording { inner: runtime, calls: calls.clone() };
    let r = replay(Box::new(recording), config.clone(), &requests, &options()).expect("replay");
    assert!(r.error.is_none(), "{:?}", r.error);
    let calls = std::mem::take(&mut *calls.lock().expect("recording"));
    Setup { bundle, settings, config, requests, calls }
}

fn options() -> ReplayOptions {
    ReplayOptions {
        mode: Mode::Offline,
        warmup: 0,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
        max_concurrency: None,
    }
}

fn kv_spec(config: &Config) -> KvCacheSpec {
    KvCacheSpec { num_blocks: config.resolve_num_blocks(None).expect("blocks"), block_size: config.block_size() }
}

/// The median time of a criterion benchmark, from its estimates file (where criterion writes them: `CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else the workspace's target/criterion).
fn median_ns(group: &str, id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("criterion")
    });
    let path = home.join(group).join(id).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    for (key, value) in registry::thread_env_defaults() {
        // SAFETY: first thing in main, before any thread is spawned.
        unsafe { std::env::set_var(key, value) };
    }
    let s = setup();
    let steps = s.calls.iter().filter(|c| matches!(c, Call::Execute(_))).count();
    let group_name = format!("overhead/{}", s.bundle.name());
    eprintln!(
        "{group_name}: {} requests x {OUTPUT} output tokens, {steps} steps, native, {} thread(s)",
        s.requests.len(),
        s.settings.threads
    );
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group(&group_name);
    g.sample_size(10).throughput(Throughput::Elements((s.requests.len() * OUTPUT) as u64));
    g.bench_function(BenchmarkId::from_parameter("direct"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut rt = registry::build(&"native".parse().unwrap(), &s.bundle, &s.settings).expect("native");
                rt.prepare(&kv_spec(&s.config)).expect("prepare");
                let t = Instant::now();
                for call in &s.calls {
                    match call {
                        Call::Execute(batch) => {
                            black_box(rt.execute(batch).expect("step"));
                        }
                        Call::Release(id) => rt.release(*id),
                    }
                }
                total += t.elapsed();
            }
            total
        })
    });
    // Inside the replays: time in the runtime's `execute` and in the engine's own phases, against the loop's wall.
    let (mut wall_s, mut runtime_ms, mut engine_ms) = (0.0, 0.0, 0.0);
    g.bench_function(BenchmarkId::from_parameter("engine_replay"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rt = registry::build(&"native".parse().unwrap(), &s.bundle, &s.settings).expect("native");
                let r = replay(rt, s.config.clone(), &s.requests, &options()).expect("replay");
                wall_s += r.wall_s;
                runtime_ms += r.steps.iter().map(|x| x.runtime_ms).sum::<f64>();
                engine_ms += r.steps.iter().map(|x| x.schedule_ms + x.postprocess_ms).sum::<f64>();
                // The serving loop's wall time: from the first step's start to the last completion.
                total += Duration::from_secs_f64(r.wall_s);
                assert!(r.error.is_none(), "{:?}", r.error);
                black_box(r);
            }
            total
        })
    });
    g.finish();
    c.final_summary();
    let dir = group_name.replace('/', "_");
    if let (Some(direct), Some(through)) = (median_ns(&dir, "direct"), median_ns(&dir, "engine_replay")) {
        println!(
            "{group_name}: direct {:.3} ms, engine + replay {:.3} ms (medians): harness overhead {:.2}%",
            direct / 1e6,
            through / 1e6,
            (1.0 - direct / through) * 100.0
        );
    }
    // Measured inside the same runs, so machine noise between the two benchmarks does not enter it.
    let wall_ms = wall_s * 1e3;
    println!(
        "{group_name}: of the engine + replay wall time, the runtime's execute {:.2}%, the engine's schedule + \
         postprocess {:.3}%, the rest of the replay loop {:.3}%",
        runtime_ms / wall_ms * 100.0,
        engine_ms / wall_ms * 100.0,
        (wall_ms - runtime_ms - engine_ms) / wall_ms * 100.0
    );
}
