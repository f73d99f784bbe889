//! Scenario and regression tests of the engine, named after the behaviour (or the nano-vllm bug) they pin.

mod common;

use common::{Recorder, Req, reference_greedy};
use nano_vllm_engine::{
    AddRequestError, Capabilities, Config, EngineError, FinishReason, LlmEngine, LogitsCapture, MockRuntime, Runtime,
    RuntimeError, RuntimeInfo, SamplingParams, StepBatch, StepOutput,
};

fn engine(config: Config, vocab: usize) -> LlmEngine {
    LlmEngine::new(config, Box::new(MockRuntime::new(vocab))).unwrap()
}

fn cfg() -> nano_vllm_engine::ConfigBuilder {
    Config::builder().block_size(4).num_kv_blocks(64).max_model_len(64).max_num_batched_tokens(64).max_num_seqs(8)
}

fn drain(engine: &mut LlmEngine) -> Vec<nano_vllm_engine::Sequence> {
    let mut out = Vec::new();
    while engine.has_unfinished() {
        out.extend(engine.step().unwrap().finished);
    }
    out.sort_by_key(|s| s.id());
    out
}

#[test]
fn fully_cached_prompt_still_produces_a_token() {
    // nano-vllm crashed when the prefix cache served a whole prompt (zero query tokens).
    let mut e = engine(cfg().build().unwrap(), 50);
    let prompt: Vec<u32> = (1..=8).collect();
    let first = e.generate(vec![prompt.clone()], &SamplingParams::greedy(3)).unwrap();
    let id = e.add_request(prompt.clone(), SamplingParams::greedy(3)).unwrap();
    let step = e.step().unwrap();
    let stats = step.stats.unwrap();
    // 8 tokens = 2 full blocks; only the first is served so the last token is computed... as a 4-token block.
    assert_eq!(stats.prefix_hit_tokens, 4);
    assert_eq!(stats.num_tokens, 4);
    assert_eq!(step.new_tokens[0].0, id);
    let second = drain(&mut e);
    assert_eq!(second[0].output_token_ids(), first[0].output_token_ids());
    assert_eq!(second[0].num_cached_tokens(), 4);
}

#[test]
fn preempted_sequence_with_shared_prefix_blocks_is_readmitted_with_a_hit() {
    // nano-vllm hit an index error re-admitting a preempted sequence whose table held shared prefix blocks.
    // 5 blocks of 4: A (8-token prefix + 2) and B (same prefix + 2) share 2 blocks; decoding needs more than exist.
    let config = cfg().num_kv_blocks(5).max_model_len(20).build().unwrap();
    let mut e = engine(config, 50);
    let prefix: Vec<u32> = (1..=8).collect();
    let a = [prefix.clone(), vec![20, 21]].concat();
    let b = [prefix.clone(), vec![30, 31]].concat();
    let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(10) };
    e.add_request(a.clone(), p.clone()).unwrap();
    e.add_request(b.clone(), p.clone()).unwrap();
    let mut preemptions = 0;
    let mut hits = 0;
    let mut out = Vec::new();
    while e.has_unfinished() {
        let step = e.step().unwrap();
        e.check_invariants().unwrap();
        let s = step.stats.unwrap();
        preemptions += s.num_preemptions;
        hits += s.prefix_hit_tokens;
        out.extend(step.finished);
    }
    assert!(preemptions >= 1, "the scenario must preempt");
    assert!(hits >= 16, "B's first admission and its re-admission both hit the prefix: {hits}");
    out.sort_by_key(|s| s.id());
    for (seq, prompt) in out.iter().zip([a, b]) {
        let req = Req { prompt, max_tokens: 10, ignore_eos: true };
        assert_eq!(seq.output_token_ids(), reference_greedy(50, &req).0);
    }
    assert!(out[1].num_preemptions() >= 1);
}

#[test]
fn freed_cached_block_is_not_counted_twice() {
    // A freed block that keeps its key is free, and taking it for a hit uses up a free block.
    let config = cfg().num_kv_blocks(4).max_model_len(16).build().unwrap();
    let mut e = engine(config, 50);
    let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(1) };
    e.generate(vec![(1..=9).collect()], &p).unwrap();
    assert_eq!(e.scheduler().block_manager().num_free_blocks(), 4);
    // 15 tokens + 1 = 4 blocks: 2 hits (free) + 2 fresh. It must be admitted, and finish.
    let out = e.generate(vec![(1..=15).collect()], &p).unwrap();
    assert_eq!(out[0].num_cached_tokens(), 8);
    assert_eq!(e.scheduler().block_manager().num_free_blocks(), 4);
}

#[test]
fn greedy_temperature_zero_is_allowed_and_is_the_argmax() {
    let mut e = engine(cfg().build().unwrap(), 30);
    let req = Req { prompt: vec![3, 4, 5], max_tokens: 6, ignore_eos: true };
    let p = SamplingParams { temperature: 0.0, ignore_eos: true, ..SamplingParams::greedy(6) };
    let out = e.generate(vec![req.prompt.clone()], &p).unwrap();
    assert_eq!(out[0].output_token_ids(), reference_greedy(30, &req).0);
    assert_eq!(out[0].finish_reason(), Some(FinishReason::Length));
}

#[test]
fn impossible_requests_are_refused_with_their_limits() {
    let mut e = engine(cfg().num_kv_blocks(16).max_model_len(32).build().unwrap(), 40);
    let err = e.add_request(vec![1; 30], SamplingParams::greedy(5)).unwrap_err();
    assert_eq!(err, AddRequestError::TooLong { prompt_len: 30, max_tokens: 5, total: 35, max_model_len: 32 });
    assert_eq!(err.to_string(), "prompt (30 tokens) + max_tokens (5) = 35 exceeds max_model_len (32)");
    assert_eq!(e.add_request(vec![], SamplingParams::greedy(1)), Err(AddRequestError::EmptyPrompt));
    let err = e.add_request(vec![1, 2, 40, 3], SamplingParams::greedy(1)).unwrap_err();
    assert_eq!(err, AddRequestError::TokenOutOfRange { token: 40, position: 2, vocab_size: 40 });
    let p = SamplingParams { temperature: f32::NAN, ..SamplingParams::greedy(1) };
    assert!(e.add_request(vec![1], p).unwrap_err().to_string().contains("temperature"));
    let p = SamplingParams { stop_token_ids: vec![99], ..SamplingParams::greedy(1) };
    assert!(matches!(e.add_request(vec![1], p), Err(AddRequestError::StopTokenOutOfRange { token: 99, .. })));
    assert!(!e.has_unfinished(), "refused requests are not queued");
}

#[test]
fn more_blocks_than_exist_is_refused() {
    // A memory budget: the mock reports 8 bytes per token; 512 B / (4 tokens * 8 B) = 16 blocks = 64 tokens.
    let config = cfg().kv_cache_bytes(512).max_model_len(64).build().unwrap();
    let mut e = engine(config, 40);
    assert_eq!(e.num_kv_blocks(), 16);
    e.add_request(vec![1; 60], SamplingParams::greedy(4)).unwrap();
    let config = cfg().kv_cache_bytes(256).max_model_len(64).build().unwrap();
    let err = LlmEngine::new(config, Box::new(MockRuntime::new(40))).unwrap_err();
    assert!(err.to_string().contains("cannot hold one sequence of max_model_len (64)"), "{err}");
}

#[test]
fn eos_stop_tokens_and_ignore_eos_end_requests_with_their_reasons() {
    let vocab = 8; // small: EOS (0) and the stop token come up quickly
    let req = Req { prompt: vec![1, 2, 3], max_tokens: 40, ignore_eos: true };
    let (tokens, _) = reference_greedy(vocab, &req);
    let stop = tokens[5];
    let config = cfg().eos_token_ids(vec![0]).build().unwrap();
    let mut e = engine(config, vocab);
    let p = SamplingParams { ignore_eos: true, stop_token_ids: vec![stop], ..SamplingParams::greedy(40) };
    let out = e.generate(vec![req.prompt.clone()], &p).unwrap();
    let first_stop = tokens.iter().position(|&t| t == stop).unwrap();
    assert_eq!(out[0].output_token_ids(), &tokens[..=first_stop]);
    assert_eq!(out[0].finish_reason(), Some(FinishReason::Stop));
    if let Some(eos_at) = tokens.iter().position(|&t| t == 0) {
        let out = e.generate(vec![req.prompt.clone()], &SamplingParams::greedy(40)).unwrap();
        assert_eq!(out[0].output_token_ids(), &tokens[..=eos_at]);
        assert_eq!(out[0].finish_reason(), Some(FinishReason::Eos));
    }
}

#[test]
fn min_tokens_masks_eos_and_stop_tokens_until_reached() {
    let vocab = 4; // EOS (0) comes up at once
    let config = cfg().eos_token_ids(vec![0]).build().unwrap();
    let mut e = engine(config, vocab);
    let free = e.generate(vec![vec![1, 2, 3]], &SamplingParams::greedy(30)).unwrap();
    let eos_at = free[0].output_token_ids().iter().position(|&t| t == 0).expect("EOS within 30 tokens of 4");
    let min = eos_at + 3;
    let p = SamplingParams { min_tokens: min, stop_token_ids: vec![1], ..SamplingParams::greedy(30) };
    let out = e.generate(vec![vec![1, 2, 3]], &p).unwrap();
    let tokens = out[0].output_token_ids();
    assert!(tokens.len() > min, "{tokens:?}");
    assert!(tokens[..min].iter().all(|&t| t != 0 && t != 1), "EOS or stop sampled below min_tokens: {tokens:?}");
    assert!(matches!(out[0].finish_reason(), Some(FinishReason::Eos | FinishReason::Stop | FinishReason::Length)));
    let too_many = SamplingParams { min_tokens: 31, ..SamplingParams::greedy(30) };
    assert!(matches!(e.add_request(vec![1], too_many), Err(AddRequestError::Sampling(_))));
}

#[test]
fn logprobs_come_with_each_token_that_asked_for_them() {
    let mut e = engine(cfg().build().unwrap(), 50);
    let asks = SamplingParams { logprobs: Some(3), ..SamplingParams::greedy(5) };
    let a = e.add_request(vec![1, 2, 3], asks).unwrap();
    let b = e.add_request(vec![4, 5, 6], SamplingParams::greedy(5)).unwrap();
    let mut got = Vec::new();
    while e.has_unfinished() {
        let step = e.step().unwrap();
        for (id, lp) in &step.logprobs {
            assert_eq!(*id, a, "only the request that asked gets logprobs");
            let token = step.new_tokens.iter().find(|(i, _)| i == id).unwrap().1;
            assert_eq!(lp.token, token);
            // Greedy: the sampled token is the most likely one.
            assert_eq!(lp.top.len(), 3);
            assert_eq!((lp.top[0].0, lp.top[0].1), (token, lp.logprob));
            assert!(lp.logprob <= 0.0 && lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            got.push(token);
        }
    }
    assert_eq!(got.len(), 5);
    let _ = b;
}

#[test]
fn abort_frees_blocks_of_waiting_and_running_requests() {
    let mut e = engine(cfg().max_num_seqs(1).build().unwrap(), 40);
    let a = e.add_request(vec![1, 2, 3, 4, 5], SamplingParams::greedy(20)).unwrap();
    let b = e.add_request(vec![6, 7], SamplingParams::greedy(20)).unwrap();
    e.step().unwrap();
    assert!(e.scheduler().block_manager().num_used_blocks() > 0);
    let seq = e.abort(a).unwrap();
    assert_eq!(seq.finish_reason(), Some(FinishReason::Aborted));
    assert_eq!(seq.num_output_tokens(), 1);
    assert_eq!(e.abort(b).unwrap().num_output_tokens(), 0);
    assert!(matches!(e.abort(b), Err(EngineError::UnknownRequest(id)) if id == b));
    assert!(!e.has_unfinished());
    assert_eq!(e.scheduler().block_manager().num_used_blocks(), 0);
    e.check_invariants().unwrap();
}

#[test]
fn a_failing_runtime_is_an_error_naming_it() {
    let config = cfg().build().unwrap();
    let mut e = LlmEngine::new(config, Box::new(MockRuntime::new(40).fail_at_step(1))).unwrap();
    e.add_request(vec![1, 2, 3], SamplingParams::greedy(5)).unwrap();
    e.step().unwrap();
    let err = e.step().unwrap_err();
    assert_eq!(err.to_string(), "runtime 'mock' failed: injected failure at step 1");
}

/// A runtime that returns the wrong number of rows, or NaN logits.
#[derive(Debug)]
struct Broken {
    nan: bool,
}

impl Runtime for Broken {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo { name: "broken".into(), ..RuntimeInfo::default() }
    }
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        let rows = if self.nan { batch.num_logit_rows() } else { batch.num_logit_rows() + 1 };
        Ok(StepOutput { vocab_size: 4, logits: vec![f32::NAN; rows * 4] })
    }
}

#[test]
fn malformed_runtime_output_is_an_error_not_a_panic() {
    let mut e = LlmEngine::new(cfg().build().unwrap(), Box::new(Broken { nan: false })).unwrap();
    e.add_request(vec![1, 2], SamplingParams::greedy(2)).unwrap();
    let err = e.step().unwrap_err();
    assert!(matches!(err, EngineError::BadOutput { expected: 1, got: 2, .. }), "{err}");
    let mut e = LlmEngine::new(cfg().build().unwrap(), Box::new(Broken { nan: true })).unwrap();
    let id = e.add_request(vec![1, 2], SamplingParams::greedy(2)).unwrap();
    let err = e.step().unwrap_err();
    assert!(matches!(err, EngineError::NonFiniteLogits { seq_id, .. } if seq_id == id), "{err}");
}

#[test]
fn a_runtime_without_full_logits_or_prefix_reuse_gets_neither() {
    let e = LlmEngine::new(cfg().build().unwrap(), Box::new(Broken { nan: false })).unwrap();
    assert_eq!(*e.capabilities(), Capabilities::default());
    assert!(!e.prefix_caching_active());
    let mut e = e;
    let p = SamplingParams { logits: LogitsCapture::All, ..SamplingParams::greedy(1) };
    assert_eq!(e.add_request(vec![1], p), Err(AddRequestError::FullLogitsUnsupported));
}

#[test]
fn chunked_prefill_respects_the_token_budget_and_mixes_with_decodes() {
    let config = cfg().max_num_batched_tokens(6).build().unwrap();
    let (runtime, log) = Recorder::new(40);
    let mut e = LlmEngine::new(config, Box::new(runtime)).unwrap();
    e.add_request(vec![1, 2], SamplingParams { ignore_eos: true, ..SamplingParams::greedy(8) }).unwrap();
    e.step().unwrap();
    e.add_request((1..=20).collect(), SamplingParams::greedy(1)).unwrap();
    drain(&mut e);
    let log = log.lock().unwrap();
    // Step 2: one decode token + a 5-token chunk of the long prompt.
    let b = &log.batches[1];
    assert_eq!(b.seqs.len(), 2);
    assert_eq!((b.seqs[0].query_len, b.seqs[0].is_prefill), (1, false));
    assert_eq!((b.seqs[1].query_len, b.seqs[1].is_prefill, b.seqs[1].samples), (5, true, false));
    assert!(log.batches.iter().all(|b| b.num_tokens() <= 6));
    let chunks: Vec<_> =
        log.batches.iter().flat_map(|b| b.seqs.iter().filter(|s| s.seq_id == 1).map(|s| s.query_len)).collect();
    assert_eq!(chunks, [5, 5, 5, 5]);
}

#[test]
fn preemption_is_newest_first_and_counted() {
    // 6 blocks of 4 = 24 tokens; three 6-token prompts each growing by 10 cannot all fit.
    let config = cfg().num_kv_blocks(6).max_model_len(24).build().unwrap();
    let mut e = engine(config, 40);
    let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(10) };
    for i in 0..3 {
        e.add_request(vec![i + 1; 6], p.clone()).unwrap();
    }
    let mut first_preempted = None;
    while e.has_unfinished() {
        let step = e.step().unwrap();
        if first_preempted.is_none() && step.stats.unwrap().num_preemptions > 0 {
            first_preempted = Some(e.scheduler().preempted().to_vec());
        }
    }
    assert_eq!(first_preempted.unwrap()[0], 2, "the newest running sequence goes first");
}

#[test]
fn finished_requests_leave_the_engine() {
    let mut e = engine(cfg().build().unwrap(), 40);
    for i in 0..50 {
        e.add_request(vec![i % 39 + 1, 2, 3], SamplingParams::greedy(3)).unwrap();
    }
    let out = drain(&mut e);
    assert_eq!(out.len(), 50);
    assert_eq!(e.scheduler().running().len() + e.scheduler().waiting().len(), 0);
}

#[test]
fn runtime_limits_narrow_the_engine_budgets() {
    #[derive(Debug)]
    struct Limited(MockRuntime);
    impl Runtime for Limited {
        fn info(&self) -> RuntimeInfo {
            self.0.info()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { max_num_seqs: Some(2), max_batch_tokens: Some(5), ..self.0.capabilities() }
        }
        fn prepare(&mut self, kv: &nano_vllm_engine::KvCacheSpec) -> Result<(), RuntimeError> {
            self.0.prepare(kv)
        }
        fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
            assert!(batch.seqs.len() <= 2 && batch.num_tokens() <= 5);
            self.0.execute(batch)
        }
    }
    let mut e = LlmEngine::new(cfg().build().unwrap(), Box::new(Limited(MockRuntime::new(40)))).unwrap();
    let out = e.generate((1..6).map(|i| vec![i; 7]).collect(), &SamplingParams::greedy(3)).unwrap();
    assert_eq!(out.len(), 5);
}
