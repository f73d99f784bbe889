//! Teacher forcing, for runtimes whose logits are only close in distribution (quantized weights such as Q8_0).
//!
//! A quantized runtime's greedy continuation may leave the reference's after a few tokens, and every row after that
//! has different inputs. So instead each reference prompt's [`ReferencePrompt::teacher_forced_ids`] (the prompt and
//! the greedy continuation but its last token) is fed as one prompt with `max_tokens` 1 and every position's logits
//! kept, through the real engine (all prompts at once, prefix caching off), and every row is compared with
//! [`ReferencePrompt::all_logits`]: KL divergence of softmax(reference) to softmax(runtime) (mean, p99, max), top-1
//! agreement, and absolute differences, checked against a bundle's [`Q8Tolerance`].

use nano_vllm_bundle::{Q8Tolerance, Reference, ReferencePrompt};
use nano_vllm_engine::{Config, EngineError, LlmEngine, LogitsCapture, Runtime, SamplingParams};

use crate::figures::{RowFigures, ToleranceFailure};
use crate::run::PromptRun;

const BLOCK_SIZE: usize = 16;

/// How teacher-forced logits compare with the reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeacherForcedFigures {
    /// Logit rows compared.
    pub rows: usize,
    /// Reference rows the runs did not return (should be 0).
    pub missing_rows: usize,
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of rows whose argmax equals the reference's.
    pub top1_agreement: f64,
    pub max_abs_diff: f32,
    pub mean_abs_diff: f64,
    /// The (prompt name, position) of the largest KL divergence.
    pub worst_kl: Option<(String, u32)>,
}

impl TeacherForcedFigures {
    /// Checks a Q8_0 tolerance: mean KL, top-1 agreement, and that every reference row was compared.
    pub fn check(&self, tol: &Q8Tolerance) -> Result<(), ToleranceFailure> {
        let mut problems = Vec::new();
        if self.rows == 0 {
            problems.push("no logit rows were compared".to_string());
        }
        if self.missing_rows > 0 {
            problems.push(format!("{} reference rows missing from the runs", self.missing_rows));
        }
        if self.mean_kl.is_nan() || self.mean_kl > tol.max_mean_kl {
            let at =
                self.worst_kl.as_ref().map(|(n, p)| format!(" (worst: prompt {n}, position {p})")).unwrap_or_default();
            problems.push(format!("mean KL {:.3e} > {:.1e}{at}", self.mean_kl, tol.max_mean_kl));
        }
        if self.top1_agreement < tol.min_top1_agreement {
            problems.push(format!("top-1 agreement {:.4} < {}", self.top1_agreement, tol.min_top1_agreement));
        }
        if let Some(max) = tol.max_abs_diff
            && (self.max_abs_diff.is_nan() || self.max_abs_diff > max)
        {
            problems.push(format!("max |diff| {:.3e} > {max:.1e}", self.max_abs_diff));
        }
        if problems.is_empty() { Ok(()) } else { Err(ToleranceFailure(problems.join("; "))) }
    }

    /// One line for logs and test output.
    pub fn summary(&self) -> String {
        format!(
            "rows {} kl mean {:.2e} p99 {:.2e} max {:.2e} top1 {:.4} max|d| {:.2e} mean|d| {:.2e}",
            self.rows,
            self.mean_kl,
            self.p99_kl,
            self.max_kl,
            self.top1_agreement,
            self.max_abs_diff,
            self.mean_abs_diff
        )
    }
}

impl TeacherForcedFigures {
    /// The figures of compared rows, `expected_rows` of which should have been there.
    fn from_rows(rows: RowFigures, expected_rows: usize) -> Self {
        let (mean_kl, p99_kl, max_kl) = rows.kl();
        Self {
            rows: rows.rows,
            missing_rows: expected_rows - rows.rows,
            mean_kl,
            p99_kl,
            max_kl,
            top1_agreement: rows.argmax_agreement(),
            max_abs_diff: rows.max_abs_diff,
            mean_abs_diff: rows.mean_abs_diff(),
            worst_kl: rows.worst_kl,
        }
    }
}

/// Runs every reference prompt teacher forced (see the module docs) through an engine on `runtime`: one
/// [`PromptRun`] per prompt, in the reference's order, whose prompt is `teacher_forced_ids()` and whose rows are
/// every position's logits. `max_model_len` is the model's context (raised to the longest input + 1 if smaller).
pub fn run_teacher_forced(
    runtime: Box<dyn Runtime>,
    reference: &Reference,
    max_model_len: usize,
) -> Result<Vec<PromptRun>, EngineError> {
    let inputs: Vec<Vec<u32>> = reference.prompts.iter().map(ReferencePrompt::teacher_forced_ids).collect();
    let longest = inputs.iter().map(|ids| ids.len() + 1).max().unwrap_or(1);
    let max_model_len = max_model_len.max(longest);
    let blocks: usize = inputs.iter().map(|ids| (ids.len() + 1).div_ceil(BLOCK_SIZE)).sum();
    let config = Config::builder()
        .block_size(BLOCK_SIZE)
        .max_model_len(max_model_len)
        .max_num_seqs(16)
        .num_kv_blocks(blocks.max(max_model_len.div_ceil(BLOCK_SIZE)))
        .max_num_batched_tokens(max_model_len)
        .eos_token_ids(Vec::new())
        .enable_prefix_caching(false)
        .enable_chunked_prefill(true)
        .build()?;
    let mut engine = LlmEngine::new(config, runtime)?;
    let params = SamplingParams { ignore_eos: true, logits: LogitsCapture::All, ..SamplingParams::greedy(1) };
    let sequences = engine.generate(inputs, &params)?;
    Ok(reference.prompts.iter().zip(sequences).map(|(p, seq)| PromptRun::from_sequence(&p.name, &seq)).collect())
}

/// Compares teacher-forced runs with their reference prompts (matched by name): the run's row at position `p` against
/// `all_logits()` row `p`.
pub fn compare_teacher_forced<'a>(
    runs: impl IntoIterator<Item = &'a PromptRun>,
    reference: &[ReferencePrompt],
) -> TeacherForcedFigures {
    let mut rows = RowFigures::default();
    let mut expected_rows = 0;
    for run in runs {
        let Some(r) = reference.iter().find(|r| r.name == run.name) else { continue };
        let all = r.all_logits();
        expected_rows += all.rows();
        let mut seen = vec![false; all.rows()];
        for (k, &pos) in run.positions.iter().enumerate() {
            let (Some(expected), Some(got)) =
                (all.get(pos as usize), run.logits.get(k * run.vocab..(k + 1) * run.vocab))
            else {
                continue;
            };
            if got.len() != expected.len() || seen[pos as usize] {
                continue;
            }
            seen[pos as usize] = true;
            rows.add(&run.name, pos, expected, got);
        }
    }
    TeacherForcedFigures::from_rows(rows, expected_rows)
}

/// Compares two runtimes' teacher-forced runs of the same prompts (matched by name and position): `b` plays the
/// reference, so the KL is KL(b || a). For two runtimes on the same quantized file, this is how closely they compute
/// the same model.
pub fn compare_runs(a: &[PromptRun], b: &[PromptRun]) -> TeacherForcedFigures {
    let mut rows = RowFigures::default();
    let mut expected_rows = 0;
    for rb in b {
        expected_rows += rb.positions.len();
        let Some(ra) = a.iter().find(|r| r.name == rb.name) else { continue };
        for (kb, &pos) in rb.positions.iter().enumerate() {
            let Some(ka) = ra.positions.iter().position(|&p| p == pos) else { continue };
            let (Some(expected), Some(got)) =
                (rb.logits.get(kb * rb.vocab..(kb + 1) * rb.vocab), ra.logits.get(ka * ra.vocab..(ka + 1) * ra.vocab))
            else {
                continue;
            };
            if got.len() == expected.len() {
                rows.add(&rb.name, pos, expected, got);
            }
        }
    }
    TeacherForcedFigures::from_rows(rows, expected_rows)
}

#[cfg(test)]
mod tests {
    use nano_vllm_bundle::{Logits, PromptKind};

    use super::*;
    use crate::figures::kl_divergence;

    fn prompt(name: &str, rows: &[[f32; 2]]) -> ReferencePrompt {
        // Two prompt tokens, two greedy tokens: all_logits = both prompt rows + greedy row 1.
        let flat = |r: &[[f32; 2]]| Logits::new(2, r.iter().flatten().copied().collect()).unwrap();
        ReferencePrompt {
            name: name.into(),
            kind: PromptKind::Short,
            shared_prefix_len: None,
            prompt_ids: vec![5, 6],
            prompt_logits: flat(&rows[..2]),
            greedy_tokens: vec![0, 1],
            greedy_logits: flat(&[rows[1], rows[2]]),
        }
    }

    fn run(name: &str, positions: Vec<u32>, rows: &[[f32; 2]]) -> PromptRun {
        PromptRun {
            name: name.into(),
            prompt_len: 3,
            positions,
            logits: rows.iter().flatten().copied().collect(),
            vocab: 2,
            output_tokens: vec![1],
            cached_tokens: 0,
            preemptions: 0,
            recomputed_positions: Vec::new(),
            recomputed_logits: Vec::new(),
        }
    }

    #[test]
    fn compares_every_teacher_forced_row() {
        let rows = [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]];
        let reference = [prompt("p", &rows)];
        // Identical rows: KL 0, full agreement, nothing missing.
        let same = compare_teacher_forced(&[run("p", vec![0, 1, 2], &rows)], &reference);
        assert_eq!((same.rows, same.missing_rows, same.top1_agreement), (3, 0, 1.0));
        assert!(same.mean_kl < 1e-12 && same.max_abs_diff == 0.0);
        // Row 2 flips its argmax: one of three rows disagrees, KL > 0 there only.
        let flipped = compare_teacher_forced(&[run("p", vec![0, 1, 2], &[rows[0], rows[1], [0.0, 3.0]])], &reference);
        assert!((flipped.top1_agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(flipped.max_abs_diff, 3.0);
        assert_eq!(flipped.worst_kl, Some(("p".to_string(), 2)));
        let expected_kl = kl_divergence(&[3.0, 0.0], &[0.0, 3.0]);
        assert!((flipped.max_kl - expected_kl).abs() < 1e-12);
        assert!((flipped.mean_kl - expected_kl / 3.0).abs() < 1e-12);
        let tol = Q8Tolerance {
            max_mean_kl: 0.01,
            min_top1_agreement: 0.9,
            basis: String::new(),
            order_floor_kl: None,
            max_abs_diff: None,
        };
        assert!(same.check(&tol).is_ok());
        let err = flipped.check(&tol).unwrap_err().to_string();
        assert!(err.contains("mean KL") && err.contains("top-1 agreement 0.6667"), "{err}");
        // A missing row fails the check.
        let short = compare_teacher_forced(&[run("p", vec![0, 1], &rows[..2])], &reference);
        assert_eq!((short.rows, short.missing_rows), (2, 1));
        assert!(short.check(&tol).unwrap_err().to_string().contains("1 reference rows missing"));
    }
}
