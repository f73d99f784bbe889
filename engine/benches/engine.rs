//! Engine benchmarks: what the engine itself costs per step, apart from any model.
//!
//! - `engine_overhead`: a full `step()` with a null runtime (vocabulary of 1, no work): scheduling, packing the
//!   batch, sampling and postprocessing. Decode at 1, 32 and 256 running sequences, and prefill batches of 128-token
//!   prompts. Tokens/s here is "tokens scheduled per second".
//! - `mock_runtime`: the mock runtime's own `execute` on the same decode batches (its cost, reported apart).
//! - `engine_step_mock`: a full step with the mock runtime (vocabulary 128): the two together.
//! - `block_manager`: admit and free a 128-token sequence, with and without a prefix hit.
//! - `finished_backlog`: a 32-sequence decode step after 0 or 20,000 requests have finished: must not differ.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nano_vllm_engine::{
    BlockManager, Config, HitPolicy, KvCacheSpec, LlmEngine, MockRuntime, NullRuntime, Runtime, SamplingParams,
    Scheduler, Sequence, StepBatch,
};

const STEPS_PER_ENGINE: usize = 256;
const PROMPT: usize = 32;

fn config(num_seqs: usize) -> Config {
    let max_model_len = PROMPT + STEPS_PER_ENGINE + 16;
    Config::builder()
        .max_num_seqs(num_seqs)
        .max_num_batched_tokens(num_seqs * PROMPT)
        .max_model_len(max_model_len)
        .block_size(16)
        .num_kv_blocks(num_seqs * max_model_len.div_ceil(16) + 16)
        .build()
        .unwrap()
}

/// An engine with `n` sequences past their prefill, decoding.
fn decoding_engine(n: usize, runtime: Box<dyn Runtime>) -> LlmEngine {
    let mut engine = LlmEngine::new(config(n), runtime).unwrap();
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(STEPS_PER_ENGINE + 8) };
    for i in 0..n {
        let prompt = (0..PROMPT as u32).map(|t| (t * 7 + i as u32) % 100 + 1).collect();
        engine.add_request(prompt, params.clone()).unwrap();
    }
    engine.step().unwrap();
    engine
}

/// Times `iters` decode steps, rebuilding the engine (untimed) every `STEPS_PER_ENGINE` steps so contexts stay short.
fn time_decode(iters: u64, n: usize, make: impl Fn() -> Box<dyn Runtime>) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let mut engine = decoding_engine(n, make());
        let k = left.min(STEPS_PER_ENGINE);
        let t = Instant::now();
        for _ in 0..k {
            black_box(engine.step().unwrap());
        }
        total += t.elapsed();
        left -= k;
    }
    total
}

fn decode(c: &mut Criterion) {
    for (name, vocab) in [("engine_overhead", None), ("engine_step_mock", Some(128))] {
        let mut g = c.benchmark_group(format!("{name}/decode"));
        for n in [1usize, 32, 256] {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| {
                    time_decode(iters, n, || match vocab {
                        None => Box::new(NullRuntime),
                        Some(v) => Box::new(MockRuntime::new(v)),
                    })
                })
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("mock_runtime/decode");
    for n in [1usize, 32, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut mock = MockRuntime::new(128);
            let num_blocks = config(n).resolve_num_blocks(None).unwrap();
            mock.prepare(&KvCacheSpec { num_blocks, block_size: 16 }).unwrap();
            let batch = decode_batch(n);
            b.iter(|| black_box(mock.execute(&batch).unwrap()))
        });
    }
    g.finish();
}

/// A decode batch of `n` sequences at position PROMPT, blocks laid out contiguously.
fn decode_batch(n: usize) -> StepBatch {
    let bs = 16;
    let blocks_per_seq = (PROMPT + 1).div_ceil(bs);
    let mut b = StepBatch { block_size: bs, ..StepBatch::default() };
    for i in 0..n {
        let first = (i * blocks_per_seq) as u32;
        let table: Vec<u32> = (first..first + blocks_per_seq as u32).collect();
        let p = PROMPT;
        b.seqs.push(nano_vllm_engine::SeqBatchEntry {
            seq_id: i as u64,
            query_start: i,
            query_len: 1,
            num_computed_tokens: p,
            num_cached_tokens: 0,
            block_table_start: b.block_tables.len(),
            block_table_len: table.len(),
            logits_start: i,
            num_logits: 1,
            samples: true,
            is_prefill: false,
        });
        b.token_ids.push(1);
        b.positions.push(p as u32);
        b.slot_mapping.push(table[p / bs] * bs as u32 + (p % bs) as u32);
        b.block_tables.extend(table);
        b.logits_indices.push(i as u32);
    }
    b
}

/// The scheduler alone: `schedule` + `postprocess` with a token for every sequence, no batch packing, no runtime,
/// no sampling. This is "decode tokens scheduled per second".
fn scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler/decode");
    for n in [1usize, 32, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                let mut finished = Vec::new();
                while left > 0 {
                    let config = config(n);
                    let num_blocks = config.resolve_num_blocks(None).unwrap();
                    let mut s = Scheduler::new(&config, num_blocks, Some(HitPolicy::Any));
                    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(STEPS_PER_ENGINE + 8) };
                    for i in 0..n {
                        s.add(Sequence::new(i as u64, vec![i as u32; PROMPT], params.clone(), Instant::now()));
                    }
                    let now = Instant::now();
                    let tokens = vec![Some(1u32); n];
                    s.schedule(now);
                    s.postprocess(&tokens, now, &mut finished);
                    let k = left.min(STEPS_PER_ENGINE);
                    let t = Instant::now();
                    for _ in 0..k {
                        s.schedule(now);
                        s.postprocess(&tokens, now, &mut finished);
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

fn prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_overhead/prefill_128");
    for n in [1usize, 8, 32] {
        g.throughput(Throughput::Elements((n * 128) as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for it in 0..iters {
                    let config = Config::builder()
                        .max_num_seqs(n)
                        .max_num_batched_tokens(n * 128)
                        .max_model_len(256)
                        .num_kv_blocks(n * 16 + 16)
                        .build()
                        .unwrap();
                    let mut engine = LlmEngine::new(config, Box::new(NullRuntime)).unwrap();
                    for i in 0..n {
                        // Distinct prompts: no prefix hits.
                        let prompt = (0..128u32).map(|t| t ^ ((i as u32) << 16) ^ ((it as u32) << 8)).collect();
                        engine.add_request(prompt, SamplingParams::greedy(1)).unwrap();
                    }
                    let t = Instant::now();
                    black_box(engine.step().unwrap());
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn block_manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_manager/admit_free_128");
    g.throughput(Throughput::Elements(128));
    for hit in [false, true] {
        g.bench_function(if hit { "prefix_hit" } else { "miss" }, |b| {
            let mut bm = BlockManager::new(64, 16, Some(HitPolicy::Any));
            let prompt: Vec<u32> = (0..128).collect();
            if hit {
                let mut warm = Sequence::new(0, prompt.clone(), SamplingParams::default(), Instant::now());
                let h = bm.lookup_prefix(&mut warm);
                bm.allocate(&mut warm, h, 128);
                force_computed(&mut bm, &mut warm);
                // Keep it holding the blocks, so the hits are live.
            }
            let mut id = 1;
            b.iter(|| {
                let mut prompt = prompt.clone();
                if !hit {
                    prompt[0] = id as u32; // a new first block: no hit anywhere
                }
                let mut seq = Sequence::new(id, prompt, SamplingParams::default(), Instant::now());
                id += 1;
                let h = bm.lookup_prefix(&mut seq);
                assert!(bm.can_allocate(h, 128));
                bm.allocate(&mut seq, h, 128);
                force_computed(&mut bm, &mut seq);
                bm.deallocate(&mut seq);
                black_box(h)
            })
        });
    }
    g.finish();
}

/// Marks every token computed and registers the blocks, as a step would.
fn force_computed(bm: &mut BlockManager, seq: &mut Sequence) {
    seq.set_num_computed_tokens(seq.len());
    bm.register_computed(seq);
}

fn finished_backlog(c: &mut Criterion) {
    let mut g = c.benchmark_group("finished_backlog/decode_32");
    g.sample_size(20);
    g.throughput(Throughput::Elements(32));
    for finished in [0usize, 20_000] {
        g.bench_function(BenchmarkId::from_parameter(finished), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let mut engine = backlog_engine(finished);
                    // 32 sequences decode up to 3,900 steps before they end.
                    let k = left.min(3_900);
                    let t = Instant::now();
                    for _ in 0..k {
                        black_box(engine.step().unwrap());
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

/// An engine that has finished `finished` requests and now decodes 32.
fn backlog_engine(finished: usize) -> LlmEngine {
    let config = Config::builder().max_num_seqs(64).max_model_len(4096).num_kv_blocks(32 * 256 + 64).build().unwrap();
    let mut engine = LlmEngine::new(config, Box::new(NullRuntime)).unwrap();
    for i in 0..finished {
        engine.add_request(vec![(i % 50) as u32 + 1; 4], SamplingParams::greedy(1)).unwrap();
    }
    while engine.has_unfinished() {
        engine.step().unwrap();
    }
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(4000) };
    for i in 0..32 {
        engine.add_request(vec![i + 1; 8], params.clone()).unwrap();
    }
    engine.step().unwrap();
    engine
}

criterion_group!(benches, decode, scheduler, prefill, block_manager, finished_backlog);
criterion_main!(benches);
