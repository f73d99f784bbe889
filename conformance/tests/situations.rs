//! The situations really create what they are named after, and `compare` measures what it should.

use nano_vllm_bundle::{LogitTolerance, open_fixture};
use nano_vllm_conformance::{PromptRun, Situation, compare, run_reference};
use nano_vllm_engine::MockRuntime;

#[test]
fn situations_batch_cache_and_preempt_and_do_not_change_mock_outputs() {
    let bundle = open_fixture("tiny-llama").unwrap();
    let reference = bundle.reference().unwrap();
    let ctx = bundle.config().context_length;
    let mut outputs = Vec::new();
    for situation in Situation::ALL {
        let run = run_reference(Box::new(MockRuntime::new(512)), &reference, ctx, situation).unwrap();
        assert_eq!(run.prompts.len(), reference.prompts.len());
        match situation {
            Situation::Alone => assert_eq!(run.max_batch, 1),
            Situation::Batched => assert!(run.max_batch >= 4, "max batch {}", run.max_batch),
            // prefix_b and prefix_c are each served the 64 shared tokens (4 blocks of 16).
            Situation::PrefixCached => assert_eq!(run.prefix_hit_tokens, 128),
            Situation::Preempted => assert!(run.preemptions > 0),
        }
        for p in &run.prompts {
            let expected_rows = p.prompt_len + p.output_tokens.len() - 1 - p.cached_tokens;
            assert_eq!(p.positions.len(), expected_rows, "{situation:?} {}", p.name);
        }
        outputs.push(run.prompts.iter().map(|p| p.output_tokens.clone()).collect::<Vec<_>>());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn compare_is_zero_against_the_reference_itself_and_sees_a_perturbation() {
    let reference = open_fixture("tiny-qwen2").unwrap().reference().unwrap();
    let runs: Vec<PromptRun> = reference
        .prompts
        .iter()
        .map(|r| {
            let all = r.all_logits();
            PromptRun {
                name: r.name.clone(),
                prompt_len: r.prompt_ids.len(),
                positions: (0..all.rows() as u32).collect(),
                logits: all.as_slice().to_vec(),
                vocab: all.vocab(),
                output_tokens: r.greedy_tokens.clone(),
                cached_tokens: 0,
                preemptions: 0,
                recomputed_positions: Vec::new(),
                recomputed_logits: Vec::new(),
            }
        })
        .collect();
    let f = compare(&runs, &reference.prompts);
    let rows: usize = reference.prompts.iter().map(|r| r.prompt_ids.len() + r.greedy_tokens.len() - 1).sum();
    assert_eq!(f.rows, rows);
    assert_eq!((f.max_abs_diff, f.argmax_agreement, f.greedy_match), (0.0, 1.0, true));
    assert!(f.mean_kl < 1e-12);
    let tol = LogitTolerance { max_abs_diff: 1e-4, argmax_agreement: 1.0, reason: None };
    f.check(&tol).unwrap();

    let mut bad = runs.clone();
    bad[1].logits[5] += 0.5;
    bad[2].output_tokens[3] ^= 1;
    let f = compare(&bad, &reference.prompts);
    assert_eq!(f.max_abs_diff, 0.5);
    assert_eq!(f.worst, Some((bad[1].name.clone(), 0)));
    assert_eq!(f.first_divergence, Some((bad[2].name.clone(), 3)));
    let err = f.check(&tol).unwrap_err().to_string();
    assert!(err.contains("max |diff| 5.000e-1") && err.contains("diverges at step 3"), "{err}");

    // A row recomputed after a preemption is compared too: equal to the reference it passes, off by 0.25 it fails
    // (its first row being right does not hide it).
    let mut recomputed = runs.clone();
    let vocab = recomputed[0].vocab;
    recomputed[0].recomputed_positions = vec![2];
    recomputed[0].recomputed_logits = recomputed[0].logits[2 * vocab..3 * vocab].to_vec();
    let f = compare(&recomputed, &reference.prompts);
    assert_eq!((f.rows, f.recomputed_rows, f.max_abs_diff), (rows + 1, 1, 0.0));
    assert!(f.summary().ends_with("(recomputed rows 1)"), "{}", f.summary());
    recomputed[0].recomputed_logits[7] += 0.25;
    let f = compare(&recomputed, &reference.prompts);
    assert_eq!((f.max_abs_diff, f.worst.clone()), (0.25, Some((recomputed[0].name.clone(), 2))));
    assert!(f.check(&tol).is_err());
}

#[test]
fn check_situations_reports_tolerance_failures_and_not_mechanics() {
    use nano_vllm_conformance::check_situations;
    let bundle = open_fixture("tiny-llama").unwrap();
    let reference = bundle.reference().unwrap();
    let make =
        || Ok::<_, std::convert::Infallible>(Box::new(MockRuntime::new(512)) as Box<dyn nano_vllm_engine::Runtime>);
    let checks = check_situations("mock", &reference, bundle.config().context_length, &bundle.tolerances().f32, make);
    // The mock is not the model: every situation fails its tolerance, and only that.
    assert_eq!(checks.reports.len(), 4);
    assert_eq!(checks.failures.len(), 4, "{:#?}", checks.failures);
    assert!(
        checks.failures.iter().all(|f| f.contains("max |diff|") && !f.contains("expected")),
        "{:#?}",
        checks.failures
    );
}

/// A bundle with only the two short prompts and a long context (as `fixtures/generate.py --preset bench` makes:
/// 2 prompts of 1 and 7 tokens, context 1024): batches hold both, and the preempted situation still preempts.
#[test]
fn situations_adapt_to_a_short_reference_in_a_long_context() {
    use nano_vllm_conformance::check_situations;
    let bundle = open_fixture("tiny-llama").unwrap();
    let mut reference = bundle.reference().unwrap();
    reference.prompts.retain(|p| p.name == "single" || p.name == "short");
    assert_eq!(reference.prompts.len(), 2);
    let make =
        || Ok::<_, std::convert::Infallible>(Box::new(MockRuntime::new(512)) as Box<dyn nano_vllm_engine::Runtime>);
    let checks = check_situations("mock", &reference, 1024, None, make);
    assert!(checks.failures.is_empty(), "{:#?}", checks.failures);
    let preempted = checks.reports.iter().find(|(s, _, _)| *s == Situation::Preempted).unwrap();
    assert!(preempted.1.preemptions > 0 && preempted.1.max_batch == 2, "{:?}", preempted.1);
    let batched = checks.reports.iter().find(|(s, _, _)| *s == Situation::Batched).unwrap();
    assert_eq!(batched.1.max_batch, 2);
}
