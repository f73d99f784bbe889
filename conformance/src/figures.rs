//! Parity figures, as `../shared/BENCH-CONVENTIONS.md` defines them: max and mean absolute difference, NMSE
//! (sum (a-b)^2 / sum a^2, llama.cpp test-backend-ops' measure), argmax agreement, KL divergence of
//! softmax(reference) to softmax(runtime) (mean, p99, max), and whether the greedy continuation matches.

use nano_vllm_bundle::{LogitTolerance, ReferencePrompt, argmax};

use crate::run::PromptRun;

/// How a run's logits compare with the reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParityFigures {
    /// Logit rows compared.
    pub rows: usize,
    /// Of them, rows recomputed after a preemption (compared as well as the first row of their position).
    pub recomputed_rows: usize,
    pub max_abs_diff: f32,
    pub mean_abs_diff: f64,
    pub nmse: f64,
    /// Fraction of rows whose argmax equals the reference's.
    pub argmax_agreement: f64,
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Every prompt's greedy continuation equals the reference's.
    pub greedy_match: bool,
    /// The first (prompt name, step) where a continuation diverged.
    pub first_divergence: Option<(String, usize)>,
    /// The (prompt name, position) of the largest absolute difference.
    pub worst: Option<(String, u32)>,
}

/// KL(softmax(p) || softmax(q)) in nats, computed in f64.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    fn log_softmax(x: &[f32]) -> impl Iterator<Item = f64> + '_ {
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        x.iter().map(move |&v| v as f64 - lse)
    }
    log_softmax(p_logits).zip(log_softmax(q_logits)).map(|(lp, lq)| lp.exp() * (lp - lq)).sum::<f64>().max(0.0)
}

/// The reference row for a position of a prompt: prompt rows, then greedy rows (greedy row 0 = last prompt row).
fn reference_row(reference: &ReferencePrompt, position: usize) -> Option<&[f32]> {
    let n = reference.prompt_ids.len();
    if position < n { reference.prompt_logits.get(position) } else { reference.greedy_logits.get(position + 1 - n) }
}

/// Row-by-row comparison figures, accumulated once for both ways of running a reference (free-running and teacher
/// forced): differences, NMSE, argmax agreement and the KL divergence of every row, with where the worst ones are.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowFigures {
    pub rows: usize,
    pub max_abs_diff: f32,
    /// (prompt name, position) of the largest absolute difference.
    pub worst: Option<(String, u32)>,
    /// (prompt name, position) of the largest KL divergence.
    pub worst_kl: Option<(String, u32)>,
    sum_abs: f64,
    count: usize,
    sq_diff: f64,
    sq_ref: f64,
    agree: usize,
    kls: Vec<f64>,
    /// The largest KL divergence so far (`worst_kl`'s).
    top_kl: Option<f64>,
}

impl RowFigures {
    /// Adds one row: `expected` from the reference, `got` from the runtime (both one vocabulary long).
    pub fn add(&mut self, name: &str, position: u32, expected: &[f32], got: &[f32]) {
        for (&a, &b) in expected.iter().zip(got) {
            let d = (a - b).abs();
            if d.is_nan() || d > self.max_abs_diff {
                self.max_abs_diff = d;
                self.worst = Some((name.to_owned(), position));
            }
            self.sum_abs += d as f64;
            self.sq_diff += (d as f64).powi(2);
            self.sq_ref += (a as f64).powi(2);
        }
        self.count += got.len();
        self.agree += usize::from(argmax(expected) == argmax(got));
        let kl = kl_divergence(expected, got);
        if self.top_kl.is_none_or(|top| kl > top) {
            self.top_kl = Some(kl);
            self.worst_kl = Some((name.to_owned(), position));
        }
        self.kls.push(kl);
        self.rows += 1;
    }

    /// A row whose length differs from the reference's: nothing comparable, the largest difference is infinite.
    pub fn add_mismatched(&mut self, name: &str, position: u32) {
        self.max_abs_diff = f32::INFINITY;
        self.worst = Some((name.to_owned(), position));
    }

    pub fn mean_abs_diff(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum_abs / self.count as f64 }
    }
    pub fn nmse(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.sq_diff / self.sq_ref.max(f64::MIN_POSITIVE) }
    }
    pub fn argmax_agreement(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.agree as f64 / self.rows as f64 }
    }
    /// Mean, p99 and max KL divergence over the rows (zeros without rows).
    pub fn kl(&self) -> (f64, f64, f64) {
        if self.kls.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let mut kls = self.kls.clone();
        kls.sort_by(f64::total_cmp);
        let mean = kls.iter().sum::<f64>() / kls.len() as f64;
        (mean, kls[((kls.len() - 1) as f64 * 0.99).round() as usize], kls[kls.len() - 1])
    }
}

/// Compares runs with their reference prompts (matched by name). Positions after a continuation diverged are not
/// compared (their inputs differ); the divergence is reported.
pub fn compare<'a>(runs: impl IntoIterator<Item = &'a PromptRun>, reference: &[ReferencePrompt]) -> ParityFigures {
    let mut rows = RowFigures::default();
    let mut recomputed_rows = 0;
    let (mut greedy_match, mut first_divergence) = (true, None);
    for run in runs {
        let Some(r) = reference.iter().find(|r| r.name == run.name) else { continue };
        let diverged_at = run.output_tokens.iter().zip(&r.greedy_tokens).position(|(a, b)| a != b);
        if let Some(step) = diverged_at.or((run.output_tokens.len() != r.greedy_tokens.len()).then_some(0)) {
            greedy_match = false;
            first_divergence.get_or_insert((run.name.clone(), step));
        }
        // Rows whose inputs match the reference: the prompt, and greedy steps up to the first divergence.
        let last_valid = r.prompt_ids.len() - 1 + diverged_at.unwrap_or(r.greedy_tokens.len());
        // Each position's first row, then the rows recomputed after a preemption: held to the same reference.
        let vocab = run.vocab;
        let rows_of = |positions: &'a [u32], logits: &'a [f32], recomputed: bool| {
            positions.iter().enumerate().map(move |(k, &pos)| (pos, &logits[k * vocab..(k + 1) * vocab], recomputed))
        };
        let all = rows_of(&run.positions, &run.logits, false).chain(rows_of(
            &run.recomputed_positions,
            &run.recomputed_logits,
            true,
        ));
        for (pos, got, recomputed) in all {
            if pos as usize > last_valid {
                continue;
            }
            let Some(expected) = reference_row(r, pos as usize) else { continue };
            if got.len() == expected.len() {
                recomputed_rows += usize::from(recomputed);
                rows.add(&run.name, pos, expected, got);
            } else {
                rows.add_mismatched(&run.name, pos);
            }
        }
    }
    let (mean_kl, p99_kl, max_kl) = rows.kl();
    ParityFigures {
        rows: rows.rows,
        recomputed_rows,
        max_abs_diff: rows.max_abs_diff,
        mean_abs_diff: rows.mean_abs_diff(),
        nmse: rows.nmse(),
        argmax_agreement: rows.argmax_agreement(),
        mean_kl,
        p99_kl,
        max_kl,
        greedy_match,
        first_divergence,
        worst: rows.worst,
    }
}

/// Why figures fail a tolerance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ToleranceFailure(pub String);

impl ParityFigures {
    /// Checks an f32 tolerance: max absolute difference, argmax agreement, greedy continuation, and that rows were
    /// compared at all.
    pub fn check(&self, tol: &LogitTolerance) -> Result<(), ToleranceFailure> {
        let mut problems = Vec::new();
        if self.rows == 0 {
            problems.push("no logit rows were compared".to_string());
        }
        if self.max_abs_diff.is_nan() || self.max_abs_diff > tol.max_abs_diff {
            let at = self.worst.as_ref().map(|(n, p)| format!(" (prompt {n}, position {p})")).unwrap_or_default();
            problems.push(format!("max |diff| {:.3e} > {:.1e}{at}", self.max_abs_diff, tol.max_abs_diff));
        }
        if self.argmax_agreement < tol.argmax_agreement {
            problems.push(format!("argmax agreement {:.4} < {}", self.argmax_agreement, tol.argmax_agreement));
        }
        if let Some((name, step)) = &self.first_divergence {
            problems.push(format!("greedy continuation of {name} diverges at step {step}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(ToleranceFailure(problems.join("; "))) }
    }

    /// One line for logs and test output.
    pub fn summary(&self) -> String {
        format!(
            "rows {} max|d| {:.2e} mean|d| {:.2e} nmse {:.2e} argmax {:.4} kl mean {:.2e} p99 {:.2e} max {:.2e} greedy {}",
            self.rows,
            self.max_abs_diff,
            self.mean_abs_diff,
            self.nmse,
            self.argmax_agreement,
            self.mean_kl,
            self.p99_kl,
            self.max_kl,
            if self.greedy_match { "match" } else { "DIVERGED" }
        ) + &if self.recomputed_rows > 0 {
            format!(" (recomputed rows {})", self.recomputed_rows)
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).abs() < 1e-15);
        // Shifting all logits changes nothing.
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]).abs() < 1e-12);
        // p = (0.5, 0.5), q = (0.9, 0.1): KL = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1).
        let q1 = (0.9f64 / 0.1).ln() as f32;
        let expected = 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln();
        assert!((kl_divergence(&[0.0, 0.0], &[q1, 0.0]) - expected).abs() < 1e-6);
    }
}
