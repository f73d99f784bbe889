//! The figures of a quality run, as llama.cpp's `llama-perplexity --kl-divergence` defines them: perplexity with its
//! uncertainty, and against a base runtime's distributions the KL divergence (mean, median, p99, max), top-1
//! agreement and RMS Δp, each mean with a 95 % interval.

use nano_vllm_conformance::kl_divergence;
use serde::{Deserialize, Deserializer, Serialize};

use crate::metrics::percentile;

/// A figure written as `null` when it was not finite (serde_json's NaN), read back as NaN.
pub(crate) fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// z of a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// log Σ exp(row), in f64: a row's NLL of token `t` is `log_sum_exp(row) - row[t]`.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// What one scored position contributes, against the base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VsBaseRow {
    /// KL(base || runtime).
    pub kl: f64,
    /// Whether the two argmaxes agree.
    pub same_top1: bool,
    /// p_runtime(next token) - p_base(next token).
    pub dp: f64,
}

/// Compares a runtime's row of logits with the base's, `next` the token that follows; `lse`: each row's
/// [`log_sum_exp`] (`(base, runtime)`).
pub fn vs_base(base: &[f32], runtime: &[f32], (base_lse, runtime_lse): (f64, f64), next: usize) -> VsBaseRow {
    let p = |row: &[f32], lse: f64| (row[next] as f64 - lse).exp();
    VsBaseRow {
        kl: kl_divergence(base, runtime),
        same_top1: argmax(base) == argmax(runtime),
        dp: p(runtime, runtime_lse) - p(base, base_lse),
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// A mean with the half-width of its 95 % interval (`mean ± ci95`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci95: f64,
}

impl Mean {
    /// The mean of `values` and its normal 95 % interval (standard error from the sample's deviation).
    pub fn of(values: impl Iterator<Item = f64> + Clone) -> Self {
        let (n, sum) = values.clone().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
        if n == 0 {
            return Self { mean: f64::NAN, ci95: f64::NAN };
        }
        let mean = sum / n as f64;
        let var = if n > 1 { values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Self { mean, ci95: Z95 * (var / n as f64).sqrt() }
    }
}

/// Perplexity over the scored tokens: `exp(mean NLL)`, its 95 % interval from the NLL's standard error (the delta
/// method, as llama-perplexity reports `PPL ± err`), and the tokens scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    #[serde(deserialize_with = "nan_if_null")]
    pub perplexity: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci95: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_nll: f64,
    pub tokens: usize,
}

impl Perplexity {
    pub fn of(nll: &[f64]) -> Self {
        let m = Mean::of(nll.iter().copied());
        let perplexity = m.mean.exp();
        Self { perplexity, ci95: perplexity * m.ci95, mean_nll: m.mean, tokens: nll.len() }
    }
}

/// A runtime against the base over every scored position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsBase {
    pub base: String,
    pub rows: usize,
    pub mean_kl: Mean,
    #[serde(deserialize_with = "nan_if_null")]
    pub median_kl: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub p99_kl: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub max_kl: f64,
    /// Fraction of positions where the runtime's most likely token is the base's, with a 95 % interval.
    pub top1_agreement: Mean,
    /// sqrt(mean Δp²), Δp = p_runtime(next) - p_base(next), with a 95 % interval (delta method).
    pub rms_dp: Mean,
}

impl VsBase {
    pub fn of(base: &str, rows: &[VsBaseRow]) -> Self {
        let mut kl: Vec<f64> = rows.iter().map(|r| r.kl).collect();
        kl.sort_by(f64::total_cmp);
        let ms = Mean::of(rows.iter().map(|r| r.dp * r.dp));
        let rms = ms.mean.sqrt();
        Self {
            base: base.to_owned(),
            rows: rows.len(),
            mean_kl: Mean::of(kl.iter().copied()),
            median_kl: percentile(&kl, 50.0),
            p99_kl: percentile(&kl, 99.0),
            max_kl: kl.last().copied().unwrap_or(f64::NAN),
            top1_agreement: Mean::of(rows.iter().map(|r| if r.same_top1 { 1.0 } else { 0.0 })),
            rms_dp: Mean { mean: rms, ci95: if rms > 0.0 { ms.ci95 / (2.0 * rms) } else { 0.0 } },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_values_computed_by_hand() {
        // softmax of (0, 0, ln 2) = (1/4, 1/4, 1/2): log Σ exp = ln 4.
        let (row, other) = ([0.0, 0.0, 2.0f32.ln()], [0.0f32; 3]);
        assert!((log_sum_exp(&row) - 4f64.ln()).abs() < 1e-7 && (log_sum_exp(&other) - 3f64.ln()).abs() < 1e-12);
        let r = vs_base(&row, &other, (log_sum_exp(&row), log_sum_exp(&other)), 2);
        // KL((1/4,1/4,1/2) || uniform) = 2 * 1/4 ln(3/4) + 1/2 ln(3/2).
        let want = 0.5 * (0.75f64).ln() + 0.5 * (1.5f64).ln();
        assert!((r.kl - want).abs() < 1e-7, "{} vs {want}", r.kl);
        assert!(!r.same_top1 && (r.dp - (1.0 / 3.0 - 0.5)).abs() < 1e-7);
        // Perplexity of NLLs (ln 2, ln 2): 2, no spread.
        let p = Perplexity::of(&[2f64.ln(), 2f64.ln()]);
        assert!((p.perplexity - 2.0).abs() < 1e-12 && p.ci95 == 0.0 && p.tokens == 2);
        // Mean of 1..=4: 2.5, sd 1.291, se 0.6455.
        let m = Mean::of([1.0, 2.0, 3.0, 4.0].into_iter());
        assert!((m.mean - 2.5).abs() < 1e-12 && (m.ci95 - Z95 * 0.645_497_224_367_902_8).abs() < 1e-9);
        let rows = [VsBaseRow { kl: 0.1, same_top1: true, dp: 0.3 }, VsBaseRow { kl: 0.3, same_top1: false, dp: -0.4 }];
        let v = VsBase::of("native", &rows);
        assert!((v.mean_kl.mean - 0.2).abs() < 1e-12 && v.max_kl == 0.3 && (v.median_kl - 0.2).abs() < 1e-12);
        assert!((v.top1_agreement.mean - 0.5).abs() < 1e-12);
        assert!((v.rms_dp.mean - (0.125f64).sqrt()).abs() < 1e-12);
    }
}
