//! `parity.json`, schema version 1, and the printed table. Fields are added, never renamed, within a version.
//! Non-finite figures (a NaN logit) are written as `null`.
//!
//! ```text
//! { "schema_version": 1, "created_unix_s", "git_commit", "passed": bool,
//!   "bundles": [ { "bundle", "dir", "manifest_sha256", "error",
//!     "runtimes": [ { "runtime", "check": "elementwise" | "elementwise (llama_cpp_f32)" | "teacher_forced",
//!                     "tolerance": {max_abs_diff, argmax_agreement, max_mean_kl, min_top1_agreement, reason},
//!                     "status": "pass" | "fail" | "error", "failures": [..],
//!                     "figures": {rows, max_abs_diff, mean_abs_diff, nmse, argmax_agreement, mean_kl, p99_kl, max_kl,
//!                                 greedy_match, first_divergence: {prompt, step}, worst: {prompt, position}},
//!                     "situations": [ {situation, steps, max_batch, prefix_hit_tokens, preemptions, figures} ],
//!                     "teacher_forced": {rows, missing_rows, mean_kl, p99_kl, max_kl, top1_agreement,
//!                                        max_abs_diff, mean_abs_diff} } ],
//!     "tokenizers": [ { "tokenizer", "cases", "identical", "status", "failures" } ],
//!     "left_out": ["runtime: why `all` did not check it"] } ] }
//! ```

use std::fmt::Write as _;

use nano_vllm_bundle::{LogitTolerance, Q8Tolerance};
use nano_vllm_conformance::{ParityFigures, TeacherForcedFigures};
use serde::Serialize;

pub const PARITY_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityReport {
    pub schema_version: u32,
    pub created_unix_s: u64,
    pub git_commit: Option<String>,
    /// Every runtime and tokenizer of every bundle passed.
    pub passed: bool,
    pub bundles: Vec<BundleParity>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleParity {
    pub bundle: String,
    pub dir: String,
    pub manifest_sha256: String,
    /// The bundle could not be opened or verified (nothing else was checked).
    pub error: Option<String>,
    pub runtimes: Vec<RuntimeParity>,
    /// Runtimes on the same quantized file, against each other.
    pub agreement: Vec<PairAgreement>,
    pub tokenizers: Vec<TokenizerParity>,
    /// Settings that `all` left out for this bundle, `runtime: reason` (not checked, and said so).
    pub left_out: Vec<String>,
}

/// Two runtimes that run the same quantized file (the native kernels and llama.cpp), compared with each other
/// teacher forced: `figures` is KL(b || a) and the rest, beside each one's mean KL to the float32 reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    pub figures: TeacherForced,
    pub a_mean_kl_to_reference: f64,
    pub b_mean_kl_to_reference: f64,
    /// The manifest's `order_floor_kl` of the setting (see [`nano_vllm_bundle::Q8Tolerance`]).
    pub order_floor_kl: Option<f64>,
    /// The bound on `figures.mean_kl`.
    pub max_mean_kl: f64,
    pub status: Status,
    pub failures: Vec<String>,
}

impl BundleParity {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.runtimes.iter().all(|r| r.status == Status::Pass)
            && self.agreement.iter().all(|a| a.status == Status::Pass)
            && self.tokenizers.iter().all(|t| t.status == Status::Pass)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Ran, outside tolerance (or a situation did not happen as it should).
    Fail,
    /// Could not run (did not load, the engine failed).
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToleranceUsed {
    pub max_abs_diff: Option<f64>,
    pub argmax_agreement: Option<f64>,
    pub max_mean_kl: Option<f64>,
    pub min_top1_agreement: Option<f64>,
    pub reason: Option<String>,
}

impl ToleranceUsed {
    pub fn elementwise(t: &LogitTolerance) -> Self {
        Self {
            max_abs_diff: Some(t.max_abs_diff as f64),
            argmax_agreement: Some(t.argmax_agreement),
            max_mean_kl: None,
            min_top1_agreement: None,
            reason: t.reason.clone(),
        }
    }

    pub fn distribution(t: &Q8Tolerance) -> Self {
        Self {
            max_abs_diff: t.max_abs_diff.map(f64::from),
            argmax_agreement: None,
            max_mean_kl: Some(t.max_mean_kl),
            min_top1_agreement: Some(t.min_top1_agreement),
            reason: (!t.basis.is_empty()).then(|| t.basis.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeParity {
    pub runtime: String,
    pub check: String,
    pub tolerance: ToleranceUsed,
    pub status: Status,
    pub failures: Vec<String>,
    /// Pooled over every situation.
    pub figures: Option<Figures>,
    pub situations: Vec<SituationParity>,
    pub teacher_forced: Option<TeacherForced>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SituationParity {
    pub situation: String,
    pub steps: usize,
    pub max_batch: usize,
    pub prefix_hit_tokens: usize,
    pub preemptions: usize,
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptAt {
    pub prompt: String,
    pub at: usize,
}

/// [`ParityFigures`], serializable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub rows: usize,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    pub nmse: f64,
    pub argmax_agreement: f64,
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    pub greedy_match: bool,
    /// Prompt and greedy step of the first divergence.
    pub first_divergence: Option<PromptAt>,
    /// Prompt and position of the largest absolute difference.
    pub worst: Option<PromptAt>,
}

impl From<&ParityFigures> for Figures {
    fn from(f: &ParityFigures) -> Self {
        Self {
            rows: f.rows,
            max_abs_diff: f.max_abs_diff as f64,
            mean_abs_diff: f.mean_abs_diff,
            nmse: f.nmse,
            argmax_agreement: f.argmax_agreement,
            mean_kl: f.mean_kl,
            p99_kl: f.p99_kl,
            max_kl: f.max_kl,
            greedy_match: f.greedy_match,
            first_divergence: f.first_divergence.as_ref().map(|(p, s)| PromptAt { prompt: p.clone(), at: *s }),
            worst: f.worst.as_ref().map(|(p, pos)| PromptAt { prompt: p.clone(), at: *pos as usize }),
        }
    }
}

/// [`TeacherForcedFigures`], serializable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeacherForced {
    pub rows: usize,
    pub missing_rows: usize,
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    pub top1_agreement: f64,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
}

impl From<&TeacherForcedFigures> for TeacherForced {
    fn from(f: &TeacherForcedFigures) -> Self {
        Self {
            rows: f.rows,
            missing_rows: f.missing_rows,
            mean_kl: f.mean_kl,
            p99_kl: f.p99_kl,
            max_kl: f.max_kl,
            top1_agreement: f.top1_agreement,
            max_abs_diff: f.max_abs_diff as f64,
            mean_abs_diff: f.mean_abs_diff,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizerParity {
    /// `tokenizers (tokenizer.json)`, `llama-cpp (GGUF vocabulary)`.
    pub tokenizer: String,
    pub cases: usize,
    /// Cases whose ids and decoded text both equal the reference's.
    pub identical: usize,
    pub status: Status,
    pub failures: Vec<String>,
}

fn sci(x: f64) -> String {
    if x.is_finite() { format!("{x:.2e}") } else { format!("{x}") }
}

/// The printed summary: one Markdown row per runtime (figures pooled over the situations; teacher-forced runtimes show
/// their teacher-forced KL and top-1) and per tokenizer, then every failure.
pub fn table(report: &ParityReport) -> String {
    let mut s = String::new();
    s.push_str("| bundle | runtime | check | max abs diff | mean abs diff | argmax / top-1 | mean KL | max KL | greedy | tolerance | status |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|---:|---|---|---|\n");
    for b in &report.bundles {
        if let Some(e) = &b.error {
            let _ = writeln!(s, "| {} | - | - | | | | | | | | ERROR: {e} |", b.bundle);
        }
        for r in &b.runtimes {
            let t = &r.tolerance;
            let tol = match (t.max_abs_diff, t.max_mean_kl) {
                (Some(d), Some(kl)) => {
                    format!("KL {kl}, top-1 {}, max|d| {d:.0e}", t.min_top1_agreement.unwrap_or(0.0))
                }
                (None, Some(kl)) => format!("KL {kl}, top-1 {}", t.min_top1_agreement.unwrap_or(0.0)),
                (Some(d), None) => format!("max|d| {d:.0e}, argmax {}", t.argmax_agreement.unwrap_or(1.0)),
                _ => String::new(),
            };
            let greedy = r.figures.as_ref().map_or("-", |f| if f.greedy_match { "match" } else { "diverged" });
            let cells = match (&r.teacher_forced, &r.figures) {
                (Some(t), _) => [
                    sci(t.max_abs_diff),
                    sci(t.mean_abs_diff),
                    format!("{:.4}", t.top1_agreement),
                    sci(t.mean_kl),
                    sci(t.max_kl),
                ],
                (None, Some(f)) => [
                    sci(f.max_abs_diff),
                    sci(f.mean_abs_diff),
                    format!("{:.4}", f.argmax_agreement),
                    sci(f.mean_kl),
                    sci(f.max_kl),
                ],
                (None, None) => Default::default(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {greedy} | {tol} | {} |",
                b.bundle,
                r.runtime,
                r.check,
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                r.status.as_str()
            );
        }
        for a in &b.agreement {
            let t = &a.figures;
            let _ = writeln!(
                s,
                "| {} | {} vs {} | same file, teacher forced (KL to reference: {} / {}) | {} | {} | {:.4} | {} | {} | | KL {} | {} |",
                b.bundle,
                a.a,
                a.b,
                sci(a.a_mean_kl_to_reference),
                sci(a.b_mean_kl_to_reference),
                sci(t.max_abs_diff),
                sci(t.mean_abs_diff),
                t.top1_agreement,
                sci(t.mean_kl),
                sci(t.max_kl),
                sci(a.max_mean_kl),
                a.status.as_str()
            );
        }
        for t in &b.tokenizers {
            let _ = writeln!(
                s,
                "| {} | tokenizer: {} | ids + decoded text | | | {}/{} cases | | | | identical | {} |",
                b.bundle,
                t.tokenizer,
                t.identical,
                t.cases,
                t.status.as_str()
            );
        }
    }
    let failures: Vec<String> = report
        .bundles
        .iter()
        .flat_map(|b| {
            let own = b
                .runtimes
                .iter()
                .flat_map(|r| &r.failures)
                .chain(b.agreement.iter().flat_map(|a| &a.failures))
                .chain(b.tokenizers.iter().flat_map(|t| &t.failures));
            own.map(move |f| format!("{}: {f}", b.bundle))
        })
        .collect();
    let left_out: Vec<String> =
        report.bundles.iter().flat_map(|b| b.left_out.iter().map(move |l| format!("{}: {l}", b.bundle))).collect();
    if !left_out.is_empty() {
        let _ = writeln!(s, "\nnot checked (left out of `all`):");
        for l in left_out {
            let _ = writeln!(s, "- {l}");
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\nfailures:");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}
