//! Property tests of the engine's bookkeeping (issue: "engine invariants"). Each runs 256 random scenarios: engine
//! settings (block size, KV budget from tight to ample, sequence and token budgets, chunked prefill and prefix
//! caching on or off), requests around shared prefixes, and interleavings of add, step and abort.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use nano_vllm_engine::{FinishReason, LlmEngine, LogitsCapture, MockRuntime, SamplingParams, SequenceStatus};
use proptest::prelude::*;

/// At least 256 cases per property; `PROPTEST_CASES` raises it for a longer soak.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig { cases: default.cases.max(256), ..default }
}

/// Plays a scenario's operations, calling `check` after each; then drains the engine.
fn play(
    sc: &Scenario,
    mut check: impl FnMut(&LlmEngine, Option<&nano_vllm_engine::StepStats>),
) -> (LlmEngine, Vec<u64>) {
    let mut engine = LlmEngine::new(sc.config(), Box::new(MockRuntime::new(sc.vocab))).unwrap();
    let mut ids = Vec::new();
    let mut next = 0;
    for op in &sc.ops {
        let mut stats = None;
        match *op {
            Op::Add if next < sc.reqs.len() => {
                ids.push(engine.add_request(sc.reqs[next].prompt.clone(), params(&sc.reqs[next])).unwrap());
                next += 1;
            }
            Op::Add => {}
            Op::Step => stats = engine.step().unwrap().stats,
            Op::Abort(k) if !ids.is_empty() => {
                let _ = engine.abort(ids[k % ids.len()]);
            }
            Op::Abort(_) => {}
        }
        check(&engine, stats.as_ref());
    }
    while engine.has_unfinished() {
        let stats = engine.step().unwrap().stats;
        check(&engine, stats.as_ref());
    }
    (engine, ids)
}

proptest! {
    #![proptest_config(config())]

    /// Refcounts equal the tables holding each block, free + used = total, no block twice in a table, every cached key
    /// reproduced by its block's tokens and parent key, each running table covers exactly ceil(computed / block size)
    /// blocks, waiting sequences hold none: after every operation.
    #[test]
    fn invariants_hold_after_every_operation(sc in scenario(1..12, 60)) {
        play(&sc, |engine, _| {
            if let Err(e) = engine.check_invariants() {
                panic!("{e}");
            }
        });
    }

    /// max_num_seqs and max_num_batched_tokens are never exceeded, in the steps and in the running set.
    #[test]
    fn budgets_are_never_exceeded(sc in scenario(1..12, 60)) {
        play(&sc, |engine, stats| {
            assert!(engine.scheduler().running().len() <= sc.max_num_seqs);
            if let Some(s) = stats {
                assert!(s.num_seqs <= sc.max_num_seqs, "{} seqs > {}", s.num_seqs, sc.max_num_seqs);
                assert!(s.num_tokens <= sc.max_num_batched_tokens, "{} tokens > {}", s.num_tokens, sc.max_num_batched_tokens);
                assert!(s.num_tokens >= s.num_seqs);
                assert!(s.kv_blocks_used <= s.kv_blocks_total);
            }
        });
    }

    /// When every request has ended (finished or aborted), every block is free.
    #[test]
    fn every_block_is_free_at_the_end(sc in scenario(1..12, 60)) {
        let (engine, _) = play(&sc, |_, _| {});
        let bm = engine.scheduler().block_manager();
        prop_assert_eq!(bm.num_free_blocks(), bm.num_blocks());
        prop_assert_eq!(bm.num_used_blocks(), 0);
    }

    /// Greedy outputs with the fewest blocks the config allows (heavy preemption) equal those with ample KV.
    #[test]
    fn preemption_does_not_change_greedy_outputs(sc in scenario(1..10, 0)) {
        let (tight, _) = run_all(&sc.with_tight_kv(), params);
        let (ample, preemptions) = run_all(&sc.with_ample_kv(), params);
        prop_assert_eq!(preemptions, 0);
        prop_assert_eq!(tight, ample);
    }

    /// Prefix caching on gives the same outputs as off.
    #[test]
    fn prefix_caching_does_not_change_outputs(sc in scenario(1..10, 0)) {
        let on = Scenario { prefix_caching: true, ..sc.clone() };
        let off = Scenario { prefix_caching: false, ..sc };
        prop_assert_eq!(run_all(&on, params).0, run_all(&off, params).0);
    }

    /// Chunked prefill with a small budget gives the same outputs as whole prefills.
    #[test]
    fn chunked_prefill_does_not_change_outputs(sc in scenario(1..10, 0), budget in 1usize..8) {
        let chunked = Scenario { chunked: true, max_num_batched_tokens: budget, ..sc.clone() };
        let whole = Scenario { chunked: false, max_num_batched_tokens: sc.max_model_len, ..sc };
        prop_assert_eq!(run_all(&chunked, params).0, run_all(&whole, params).0);
    }

    /// Whatever the batching, caching and preemption, each output is what the mock model computes for that request
    /// alone with no cache at all.
    #[test]
    fn outputs_equal_the_cache_free_reference(sc in scenario(1..10, 0)) {
        let (out, _) = run_all(&sc, params);
        for (req, got) in sc.reqs.iter().zip(out) {
            prop_assert_eq!(got, reference_greedy(sc.vocab, req));
        }
    }

    /// Seeded random sampling is reproducible and unchanged by preemption and batching.
    #[test]
    fn seeded_sampling_is_unchanged_by_preemption(sc in scenario(1..10, 0), seed in any::<u64>()) {
        let sampling = |r: &Req| SamplingParams {
            temperature: 0.8,
            top_k: Some(20),
            top_p: 0.9,
            seed: Some(seed ^ r.prompt.len() as u64),
            ..params(r)
        };
        let tight = run_all(&sc.with_tight_kv(), sampling).0;
        let ample = run_all(&sc.with_ample_kv(), sampling).0;
        prop_assert_eq!(&tight, &ample);
        prop_assert_eq!(tight, run_all(&sc.with_tight_kv(), sampling).0);
    }

    /// Every request ends with a reason that matches its tokens: EOS only as the last token, length exactly at
    /// max_tokens, aborted only when aborted; and the runtime is told to release every sequence it ran.
    #[test]
    fn finish_reasons_match_outputs_and_runtimes_are_released(sc in scenario(1..12, 60)) {
        let (runtime, log) = Recorder::new(sc.vocab);
        let mut engine = LlmEngine::new(sc.config(), Box::new(runtime)).unwrap();
        let mut ids = Vec::new();
        let mut finished = Vec::new();
        let mut aborted = HashSet::new();
        let mut next = 0;
        for op in &sc.ops {
            match *op {
                Op::Add if next < sc.reqs.len() => {
                    ids.push(engine.add_request(sc.reqs[next].prompt.clone(), params(&sc.reqs[next])).unwrap());
                    next += 1;
                }
                Op::Step => finished.extend(engine.step().unwrap().finished),
                Op::Abort(k) if !ids.is_empty() => {
                    if let Ok(seq) = engine.abort(ids[k % ids.len()]) {
                        aborted.insert(seq.id());
                        finished.push(seq);
                    }
                }
                _ => {}
            }
        }
        while engine.has_unfinished() {
            finished.extend(engine.step().unwrap().finished);
        }
        prop_assert_eq!(finished.len(), ids.len());
        for seq in &finished {
            let req = &sc.reqs[seq.id() as usize];
            let out = seq.output_token_ids();
            prop_assert!(out.len() <= req.max_tokens);
            prop_assert!(seq.block_table().is_empty());
            match seq.finish_reason().unwrap() {
                FinishReason::Aborted => prop_assert!(aborted.contains(&seq.id())),
                FinishReason::Eos => {
                    prop_assert!(!req.ignore_eos);
                    prop_assert_eq!(out.last(), Some(&EOS));
                }
                FinishReason::Length => prop_assert_eq!(out.len(), req.max_tokens),
                FinishReason::Stop => prop_assert!(false, "no stop tokens were set"),
            }
            if !req.ignore_eos && seq.finish_reason() != Some(FinishReason::Aborted) {
                prop_assert!(!out[..out.len() - 1].contains(&EOS), "EOS before the end");
            }
        }
        let log = log.lock().unwrap();
        let ran: HashSet<_> = log.batches.iter().flat_map(|b| b.seqs.iter().map(|e| e.seq_id)).collect();
        for id in ran {
            prop_assert!(log.released.contains(&id), "seq {} never released", id);
        }
    }

    /// Each step's batch is well formed: a sequence at most once; positions run on from its computed tokens; slots
    /// are where its block table says and no two tokens of a step share a slot; logit rows point inside the batch and
    /// a sampled entry's last row is its last token.
    #[test]
    fn step_batches_are_well_formed(sc in scenario(1..12, 0)) {
        let (runtime, log) = Recorder::new(sc.vocab);
        let mut engine = LlmEngine::new(sc.config(), Box::new(runtime)).unwrap();
        for r in &sc.reqs {
            engine.add_request(r.prompt.clone(), params(r)).unwrap();
        }
        while engine.has_unfinished() {
            engine.step().unwrap();
        }
        let bs = sc.block_size as u32;
        for b in &log.lock().unwrap().batches {
            let mut seen = HashSet::new();
            let mut slots = HashSet::new();
            for e in &b.seqs {
                prop_assert!(seen.insert(e.seq_id));
                prop_assert!(e.query_len >= 1);
                let table = b.block_table(e);
                prop_assert_eq!(table.len(), e.context_len().div_ceil(sc.block_size));
                for (j, (&p, &slot)) in b.positions_of(e).iter().zip(b.slots(e)).enumerate() {
                    prop_assert_eq!(p as usize, e.num_computed_tokens + j);
                    prop_assert_eq!(slot, table[(p / bs) as usize] * bs + p % bs);
                    prop_assert!(slots.insert(slot), "slot {} written twice in one step", slot);
                }
                let rows = &b.logits_indices[e.logits_start..e.logits_start + e.num_logits];
                prop_assert!(rows.iter().all(|&i| (i as usize) >= e.query_start && (i as usize) < e.query_start + e.query_len));
                if e.samples {
                    prop_assert_eq!(rows.last().copied(), Some((e.query_start + e.query_len - 1) as u32));
                }
            }
            prop_assert_eq!(b.positions.len(), b.token_ids.len());
            prop_assert_eq!(b.slot_mapping.len(), b.token_ids.len());
        }
    }

    /// Timing events are ordered: arrival <= first scheduled <= first token <= ... <= finish, one time per token.
    #[test]
    fn timing_events_are_monotonic(sc in scenario(1..10, 0)) {
        let mut engine = LlmEngine::new(sc.config(), Box::new(MockRuntime::new(sc.vocab))).unwrap();
        for r in &sc.reqs {
            engine.add_request(r.prompt.clone(), params(r)).unwrap();
        }
        let mut out = Vec::new();
        while engine.has_unfinished() {
            out.extend(engine.step().unwrap().finished);
        }
        prop_assert_eq!(out.len(), sc.reqs.len());
        for seq in out {
            let t = seq.timing();
            prop_assert_eq!(t.token_times.len(), seq.num_output_tokens());
            let first = t.first_scheduled.unwrap();
            prop_assert!(t.arrival <= first);
            prop_assert!(first <= t.first_token().unwrap());
            prop_assert!(t.token_times.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(*t.token_times.last().unwrap() <= t.finished.unwrap());
            prop_assert!(matches!(seq.status(), SequenceStatus::Finished(_)));
        }
    }

    /// In parity mode every computed prompt position and every step returns the logits the mock gives for that
    /// prefix; positions served by the prefix cache are the only ones missing.
    #[test]
    fn captured_logits_match_the_reference(sc in scenario(1..8, 0)) {
        let mut engine = LlmEngine::new(sc.config(), Box::new(MockRuntime::new(sc.vocab))).unwrap();
        let p = |r: &Req| SamplingParams { logits: LogitsCapture::All, ..params(r) };
        let mut ids = HashMap::new();
        for (i, r) in sc.reqs.iter().enumerate() {
            ids.insert(engine.add_request(r.prompt.clone(), p(r)).unwrap(), i);
        }
        let mock = MockRuntime::new(sc.vocab);
        let mut expected = vec![0.0; sc.vocab];
        while engine.has_unfinished() {
            for seq in engine.step().unwrap().finished {
                let logits = seq.logits().unwrap();
                let tokens = seq.token_ids();
                // Positions are strictly increasing; every position from the last admission's first uncached one to
                // the last sampled one is there (earlier ones may be missing where a re-admission hit the cache).
                let last = (tokens.len() - 2) as u32;
                prop_assert!(logits.positions.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(logits.positions.last().copied(), Some(last));
                for pos in seq.num_cached_tokens() as u32..=last {
                    prop_assert!(logits.at_position(pos).is_some(), "position {} missing", pos);
                }
                for (k, &pos) in logits.positions.iter().enumerate() {
                    mock.logits_row(MockRuntime::state_of(&tokens[..=pos as usize]), &mut expected);
                    prop_assert_eq!(logits.row(k), &expected[..]);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// With a runtime-owned cache that copies prefixes from a live holder, every hit the engine reports is held and
    /// computed by a sequence the runtime still has, and outputs equal the cache-free reference.
    #[test]
    fn copy_from_holder_hits_always_have_a_live_computed_holder(sc in scenario(1..12, 60)) {
        let mut engine = LlmEngine::new(sc.config(), Box::new(HolderChecker::new(sc.vocab))).unwrap();
        let mut ids = Vec::new();
        let mut next = 0;
        let mut done = Vec::new();
        for op in &sc.ops {
            match *op {
                Op::Add if next < sc.reqs.len() => {
                    ids.push(engine.add_request(sc.reqs[next].prompt.clone(), params(&sc.reqs[next])).unwrap());
                    next += 1;
                }
                Op::Step => done.extend(engine.step().unwrap().finished),
                Op::Abort(k) if !ids.is_empty() => {
                    let _ = engine.abort(ids[k % ids.len()]);
                }
                _ => {}
            }
        }
        while engine.has_unfinished() {
            done.extend(engine.step().unwrap().finished);
        }
        for seq in done {
            prop_assert_eq!((seq.output_token_ids().to_vec(), seq.finish_reason().unwrap().as_str()), reference_greedy(sc.vocab, &sc.reqs[seq.id() as usize]));
        }
    }
}
