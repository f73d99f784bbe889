//! `quality.json`, schema version 1, and the printed table. Non-finite figures are written as `null`.
//!
//! ```text
//! { "schema_version": 1, "created_unix_s", "git_commit", "model", "model_sha256",
//!   "corpus": {name, sha256, tokens, ctx, chunks, first_scored, scored_tokens}, "base": runtime | null,
//!   "runtimes": [ { "runtime", "status": "ok" | "failed", "error", "is_base", "seconds",
//!                   "perplexity": {perplexity, ci95, mean_nll, tokens},
//!                   "vs_base": {base, rows, mean_kl: {mean, ci95}, median_kl, p99_kl, max_kl,
//!                               top1_agreement: {mean, ci95}, rms_dp: {mean, ci95}} } ] }
//! ```

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::score::nan_if_null;

use super::Corpus;
use super::score::{Perplexity, VsBase};

pub const QUALITY_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub schema_version: u32,
    pub created_unix_s: u64,
    pub git_commit: Option<String>,
    pub model: String,
    /// The model's files' digest (as results.json's `model_sha256`), when it has one.
    pub model_sha256: Option<String>,
    pub corpus: CorpusMeta,
    pub base: Option<String>,
    pub runtimes: Vec<RuntimeQuality>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusMeta {
    pub name: String,
    pub sha256: String,
    pub tokens: usize,
    pub ctx: usize,
    pub chunks: usize,
    pub first_scored: usize,
    pub scored_tokens: usize,
}

impl From<&Corpus> for CorpusMeta {
    fn from(c: &Corpus) -> Self {
        Self {
            name: c.name.clone(),
            sha256: c.sha256.clone(),
            tokens: c.tokens,
            ctx: c.ctx,
            chunks: c.chunks.len(),
            first_scored: c.first_scored,
            scored_tokens: c.scored_tokens(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeQuality {
    pub runtime: String,
    /// `ok` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub is_base: bool,
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    pub perplexity: Option<Perplexity>,
    pub vs_base: Option<VsBase>,
}

impl RuntimeQuality {
    pub(super) fn scored(
        runtime: &str,
        perplexity: Perplexity,
        vs_base: Option<VsBase>,
        is_base: bool,
        seconds: f64,
    ) -> Self {
        Self {
            runtime: runtime.to_owned(),
            status: "ok".into(),
            error: None,
            is_base,
            seconds,
            perplexity: Some(perplexity),
            vs_base,
        }
    }

    pub(super) fn failed(runtime: &str, error: String, is_base: bool, seconds: f64) -> Self {
        Self {
            runtime: runtime.to_owned(),
            status: "failed".into(),
            error: Some(error),
            is_base,
            seconds,
            perplexity: None,
            vs_base: None,
        }
    }
}

impl QualityReport {
    /// Whether every runtime was scored.
    pub fn passed(&self) -> bool {
        self.runtimes.iter().all(|r| r.error.is_none())
    }

    /// The Markdown table: one row per runtime, the base's perplexity beside each.
    pub fn table(&self) -> String {
        let c = &self.corpus;
        let mut s = format!(
            "Quality on {} ({} chunks of {} tokens, {} tokens scored), base: {}\n\n",
            c.name,
            c.chunks,
            c.ctx,
            c.scored_tokens,
            self.base.as_deref().unwrap_or("(none)")
        );
        s.push_str(
            "| runtime | perplexity | vs base | mean KL | median KL | p99 KL | max KL | top-1 agreement | RMS Δp |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let base_ppl = self.runtimes.iter().find(|r| r.is_base).and_then(|r| r.perplexity).map(|p| p.perplexity);
        for r in &self.runtimes {
            let Some(p) = r.perplexity else {
                let error = r.error.as_deref().unwrap_or("").replace('|', "/").replace('\n', " ");
                let _ = writeln!(s, "| {} | failed: {error} |{}", r.runtime, " |".repeat(7));
                continue;
            };
            let rel = match base_ppl {
                Some(b) if !r.is_base => format!("{:+.3}%", 100.0 * (p.perplexity / b - 1.0)),
                _ if r.is_base => "base".into(),
                _ => String::new(),
            };
            let _ = write!(s, "| {} | {:.4} ± {:.4} | {rel} |", r.runtime, p.perplexity, p.ci95);
            match &r.vs_base {
                Some(v) => {
                    let _ = write!(
                        s,
                        " {:.3e} ± {:.1e} | {:.3e} | {:.3e} | {:.3e} | {:.4} ± {:.4} | {:.4} ± {:.4} |",
                        v.mean_kl.mean,
                        v.mean_kl.ci95,
                        v.median_kl,
                        v.p99_kl,
                        v.max_kl,
                        v.top1_agreement.mean,
                        v.top1_agreement.ci95,
                        v.rms_dp.mean,
                        v.rms_dp.ci95
                    );
                }
                None => s.push_str(&" |".repeat(6)),
            }
            s.push('\n');
        }
        s
    }
}
