//! The parity check every runtime's tests run: each situation with a fresh runtime, a check that the situation
//! really happened (one sequence at a time; batches of several; the shared prefix served from the cache; preemption)
//! and that every computed row was compared, then the figures against a tolerance.

use nano_vllm_bundle::{LogitTolerance, PromptKind, Reference};
use nano_vllm_engine::Runtime;

use crate::figures::{ParityFigures, compare};
use crate::run::{BLOCK_SIZE, Situation, SituationRun, run_reference};

/// What [`check_situations`] found.
#[derive(Debug, Clone)]
pub struct SituationChecks {
    /// Per situation, the run and its figures.
    pub reports: Vec<(Situation, SituationRun, ParityFigures)>,
    /// Every failed check, one line each (empty: all passed).
    pub failures: Vec<String>,
}

/// Prompt tokens the prefix-cached situation serves from the cache: every follower of the shared-prefix group gets
/// the shared prefix in whole blocks (at most `len - 1` tokens).
fn expected_prefix_hits(reference: &Reference) -> usize {
    let group: Vec<_> = reference.prompts.iter().filter(|p| p.kind == PromptKind::SharedPrefix).collect();
    group
        .iter()
        .skip(1)
        .map(|p| {
            let shared = p.shared_prefix_len.unwrap_or(0).min(p.prompt_ids.len() - 1);
            shared / BLOCK_SIZE * BLOCK_SIZE
        })
        .sum()
}

/// Runs every [`Situation`] on a fresh runtime from `make`, prints one line per situation (`label` first), and
/// checks the situation's mechanics, the rows compared, and `tolerance` (`None`: mechanics only, for lossy runtimes
/// judged otherwise, e.g. teacher forced). A runtime `make` cannot build is a failure of that situation.
pub fn check_situations<'a, E: std::fmt::Display>(
    label: &str,
    reference: &Reference,
    max_model_len: usize,
    tolerance: impl Into<Option<&'a LogitTolerance>>,
    mut make: impl FnMut() -> Result<Box<dyn Runtime>, E>,
) -> SituationChecks {
    let tolerance = tolerance.into();
    // Bundles made by fixtures/generate.py carry 6 reference prompts (the bench preset only 2).
    let min_batch = 4.min(reference.prompts.len());
    let mut out = SituationChecks { reports: Vec::new(), failures: Vec::new() };
    for situation in Situation::ALL {
        let name = situation.as_str();
        let runtime = match make() {
            Ok(runtime) => runtime,
            Err(e) => {
                out.failures.push(format!("{label} {name}: the runtime did not build: {e}"));
                continue;
            }
        };
        let run = match run_reference(runtime, reference, max_model_len, situation) {
            Ok(run) => run,
            Err(e) => {
                out.failures.push(format!("{label} {name}: {e}"));
                continue;
            }
        };
        let figures = compare(&run.prompts, &reference.prompts);
        eprintln!(
            "{label:<12} {name:<13} steps {:>3} max batch {:>2} prefix hits {:>3} preemptions {:>2} | {}",
            run.steps,
            run.max_batch,
            run.prefix_hit_tokens,
            run.preemptions,
            figures.summary()
        );
        let mut fail = |what: String| out.failures.push(format!("{label} {name}: {what}"));
        let rows: usize = run.prompts.iter().map(|p| p.prompt_len + p.output_tokens.len() - 1 - p.cached_tokens).sum();
        // After a diverged continuation `compare` stops (the inputs differ); the divergence is the failure then.
        if figures.greedy_match && figures.rows.saturating_sub(figures.recomputed_rows) != rows {
            fail(format!("{} rows compared of {rows} computed", figures.rows.saturating_sub(figures.recomputed_rows)));
        }
        match situation {
            Situation::Alone if run.max_batch != 1 => fail(format!("max batch {} (expected 1)", run.max_batch)),
            Situation::Batched if run.max_batch < min_batch => {
                fail(format!("max batch {} (expected >= {min_batch})", run.max_batch))
            }
            Situation::PrefixCached if run.prefix_hit_tokens != expected_prefix_hits(reference) => fail(format!(
                "{} prefix-hit tokens (expected {})",
                run.prefix_hit_tokens,
                expected_prefix_hits(reference)
            )),
            Situation::Preempted if run.preemptions == 0 && reference.prompts.len() >= 2 => {
                fail("nothing was preempted".into())
            }
            // A preempted sequence recomputes its tokens: those rows must have been compared too.
            Situation::Preempted if figures.greedy_match && run.preemptions > 0 && figures.recomputed_rows == 0 => {
                fail(format!("{} preemptions but no recomputed row was compared", run.preemptions))
            }
            _ => {}
        }
        if let Some(Err(e)) = tolerance.map(|t| figures.check(t)) {
            fail(e.to_string());
        }
        out.reports.push((situation, run, figures));
    }
    out
}
