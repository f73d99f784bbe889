//! ONNX Runtime benchmarks, in tokens/s, through `OnnxRuntime::execute` on hand-built `StepBatch`es (the same
//! steps the engine would hand any runtime, so the workload is reproducible on every runtime):
//!
//! - `onnx_decode/{model}/batch{1,8,32}`: one decode step of `batch` sequences (one new token each, one logit row
//!   each), all in one run padded to the longest past. Every sequence starts from a 128-token prompt (prefilled
//!   untimed) and decodes 64 steps, so the context runs from 128 to 192 tokens; then the sequences are released
//!   and prefilled again (untimed). Throughput: `batch` tokens per step.
//! - `onnx_prefill/{model}/128`: one 128-token prompt of one sequence, logits at its last token, then `release`.
//!
//! Models: `tiny-llama` (committed) and the `--preset bench` model in `fixtures/bench` (42 M parameters, git-ignored;
//! skipped with a message when it has not been generated). Threads: `OnnxOptions::default()` (every core).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use nano_vllm_bundle::{Bundle, fixtures_dir, open_fixture};
use nano_vllm_engine::{Runtime, SeqBatchEntry, StepBatch};
use nano_vllm_onnx::{OnnxOptions, OnnxRuntime, SKIP_ENV, library};

const PROMPT: usize = 128;
const DECODE_STEPS_PER_FILL: usize = 64;
const BATCHES: [usize; 3] = [1, 8, 32];
/// Sequences prefilled per step when (re)filling: bounds the logits buffer of the bench model's 16 K vocabulary.
const FILL_GROUP: usize = 4;

/// A step of `parts` = (sequence id, new tokens, tokens computed before), logits at each sequence's last token.
fn step(parts: &[(u64, &[u32], usize)]) -> StepBatch {
    let mut b = StepBatch { block_size: 16, ..StepBatch::default() };
    for &(seq_id, tokens, computed) in parts {
        let query_start = b.token_ids.len();
        b.token_ids.extend(tokens);
        b.positions.extend((0..tokens.len()).map(|j| (computed + j) as u32));
        let logits_start = b.logits_indices.len();
        b.logits_indices.push((query_start + tokens.len() - 1) as u32);
        let block_table_start = b.block_tables.len();
        let blocks = (computed + tokens.len()).div_ceil(16) as u32;
        b.block_tables.extend((0..blocks).map(|k| seq_id as u32 * 1024 + k));
        b.seqs.push(SeqBatchEntry {
            seq_id,
            query_start,
            query_len: tokens.len(),
            num_computed_tokens: computed,
            num_cached_tokens: 0,
            block_table_start,
            block_table_len: blocks as usize,
            logits_start,
            num_logits: 1,
            samples: true,
            is_prefill: computed == 0,
        });
    }
    b
}

/// Deterministic token ids below `vocab` (above the two special ids).
fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (2 + x % (vocab as u64 - 2)) as u32
        })
        .collect()
}

/// `batch` sequences decoding from a 128-token prompt, refilled every 64 steps.
struct Decoding {
    batch: usize,
    vocab: usize,
    step: usize,
    prompts: Vec<Vec<u32>>,
}

impl Decoding {
    fn new(batch: usize, vocab: usize) -> Self {
        let prompts = (0..batch).map(|i| tokens(i as u64 + 1, PROMPT, vocab)).collect();
        Self { batch, vocab, step: DECODE_STEPS_PER_FILL, prompts }
    }

    /// Releases the sequences and prefills them again (untimed).
    fn refill(&mut self, rt: &mut OnnxRuntime) {
        for id in 0..self.batch as u64 {
            rt.release(id);
        }
        let ids: Vec<u64> = (0..self.batch as u64).collect();
        for group in ids.chunks(FILL_GROUP) {
            let parts: Vec<(u64, &[u32], usize)> =
                group.iter().map(|&id| (id, self.prompts[id as usize].as_slice(), 0)).collect();
            rt.execute(&step(&parts)).unwrap();
        }
        self.step = 0;
    }

    /// Runs one decode step; returns its time.
    fn decode(&mut self, rt: &mut OnnxRuntime) -> Duration {
        if self.step == DECODE_STEPS_PER_FILL {
            self.refill(rt);
        }
        let new: Vec<[u32; 1]> =
            (0..self.batch).map(|i| [tokens((self.step * 1000 + i) as u64, 1, self.vocab)[0]]).collect();
        let parts: Vec<(u64, &[u32], usize)> =
            (0..self.batch).map(|i| (i as u64, new[i].as_slice(), PROMPT + self.step)).collect();
        let batch = step(&parts);
        let start = Instant::now();
        black_box(rt.execute(&batch).unwrap());
        let elapsed = start.elapsed();
        self.step += 1;
        elapsed
    }
}

/// The models to run: tiny-llama, and the bench model when it has been generated.
fn bundles() -> Vec<Bundle> {
    let mut out = vec![open_fixture("tiny-llama").unwrap()];
    let bench = fixtures_dir().join("bench");
    if bench.join("manifest.json").is_file() {
        out.push(open_fixture("bench").unwrap());
    } else {
        eprintln!(
            "onnx benches: skipping the bench model: {} not found; generate it with \
             `.venv/bin/python fixtures/generate.py --preset bench`",
            bench.display()
        );
    }
    out
}

/// Whether ONNX Runtime can be found; a missing library fails the bench unless `NANO_VLLM_SKIP_ONNX=1`.
fn library_available() -> bool {
    match library::locate(None) {
        Ok(_) => true,
        Err(e) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("onnx benches SKIPPED: {e} ({SKIP_ENV}=1)");
            false
        }
        Err(e) => panic!("{e}\n(to skip the ONNX Runtime benches locally, set {SKIP_ENV}=1)"),
    }
}

fn benches(c: &mut Criterion) {
    if !library_available() {
        return;
    }
    for bundle in bundles() {
        let name = bundle.name().to_string();
        let mut rt = OnnxRuntime::from_bundle(&bundle, &OnnxOptions::default()).unwrap();
        let vocab = bundle.config().vocab_size;
        eprintln!("onnx benches: {name}: {} on {}", rt.info().version, rt.info().device);

        let mut group = c.benchmark_group("onnx_decode");
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for batch in BATCHES {
            let mut decoding = Decoding::new(batch, vocab);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(&name, format!("batch{batch}")), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| decoding.decode(&mut rt)).sum())
            });
            for id in 0..batch as u64 {
                rt.release(id);
            }
        }
        group.finish();

        let mut group = c.benchmark_group("onnx_prefill");
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        group.throughput(Throughput::Elements(PROMPT as u64));
        let prompt = tokens(99, PROMPT, vocab);
        let batch = step(&[(0, &prompt, 0)]);
        group.bench_function(BenchmarkId::new(&name, PROMPT), |b| {
            b.iter(|| {
                let out = rt.execute(&batch).unwrap();
                rt.release(0);
                black_box(out)
            })
        });
        group.finish();
    }
}

criterion_group!(onnx, benches);
criterion_main!(onnx);
