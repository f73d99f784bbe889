//! Two runs compared (`nano-vllm report A B`): two commits, two machines, two settings. Runtime by runtime (rows
//! matched by name), each headline metric's spread over the repeats of each run (min / median / max), the ratio of
//! medians B / A, and an interval of that ratio (a 95% bootstrap interval with 8+ repeats a run; with 3-7, the range
//! of the pairwise ratios, named so): when the interval holds 1.0 the difference is within the noise of these runs. A run without repeats (`bench --repeat 1`) has no measured spread, and the verdict says
//! the noise is unknown rather than guess.
//!
//! Before the table, what differs between the runs besides the code under test: the workload (a different workload
//! makes every ratio meaningless), the model, the CPU, the build and the environment (from each run's provenance).

use std::fmt::Write;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{Results, RuntimeResult};

/// The metrics compared, with whether more is better.
pub const AB_METRICS: [(&str, bool); 7] = [
    ("request_throughput", true),
    ("output_throughput", true),
    ("median_ttft_ms", false),
    ("p99_ttft_ms", false),
    ("median_tpot_ms", false),
    ("median_itl_ms", false),
    ("median_e2el_ms", false),
];

/// Bootstrap resamples per interval.
const RESAMPLES: usize = 4000;

/// Fewest repeats per run for a bootstrap interval: with fewer, resampling a handful of values only spans their
/// range, so the interval is named for what it is (the range of the pairwise ratios), not called a 95% interval.
pub const MIN_BOOTSTRAP_REPEATS: usize = 8;

/// How an interval of B / A was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// From min(B) / max(A) to max(B) / min(A): every ratio of a B repeat to an A repeat lies inside, so it excludes
    /// 1.0 only when the two runs' ranges do not overlap. For 3 to 7 repeats a run.
    PairwiseRange,
    /// The 2.5th to 97.5th percentiles of median(B*) / median(A*) over bootstrap resamples of each run's repeats. For
    /// [`MIN_BOOTSTRAP_REPEATS`] or more a run.
    Bootstrap95,
}

impl IntervalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PairwiseRange => "range",
            Self::Bootstrap95 => "95% bootstrap",
        }
    }
}

/// Fewest repeats per run for a verdict.
pub const MIN_REPEATS: usize = 3;

/// One metric's values over a run's repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self { n: v.len(), min: v[0], median: median_sorted(&v), max: v[v.len() - 1] })
    }
}

/// What the two runs say about a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval of B / A holds 1.0.
    WithinNoise,
    /// B is better beyond the noise (higher throughput, lower latency).
    BBetter,
    /// B is worse beyond the noise.
    BWorse,
    /// Fewer than [`MIN_REPEATS`] repeats in a run: no spread to judge by.
    NoiseUnknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WithinNoise => "within noise",
            Self::BBetter => "B better",
            Self::BWorse => "B worse",
            Self::NoiseUnknown => "noise unknown (repeat each run 3+ times)",
        }
    }
}

/// One runtime's metric in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbMetric {
    pub metric: String,
    pub a: Spread,
    pub b: Spread,
    /// Median of B / median of A.
    pub ratio: f64,
    /// Interval of the ratio (see `interval_kind`); absent without enough repeats.
    pub interval: Option<[f64; 2]>,
    /// How `interval` was made: the range of the pairwise ratios (3-7 repeats), or a 95% bootstrap interval.
    pub interval_kind: Option<IntervalKind>,
    pub verdict: Verdict,
}

/// One runtime in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbRuntime {
    pub runtime: String,
    /// Whether both runs produced the same output tokens (equal output digests); absent when a run has no digest.
    pub same_tokens: Option<bool>,
    pub metrics: Vec<AbMetric>,
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbComparison {
    pub a: String,
    pub b: String,
    /// What differs between the runs besides the code under test, one line each.
    pub differences: Vec<String>,
    /// Whether the ratios compare the same work (same workload hash and model).
    pub comparable: bool,
    pub runtimes: Vec<AbRuntime>,
    /// Rows present in one run only (`A only: x`, `B only: y`), or failed in either.
    pub unmatched: Vec<String>,
}

/// Compares run `b` with run `a` (labels name them in the report).
pub fn compare(a_label: &str, a: &Results, b_label: &str, b: &Results) -> AbComparison {
    let (ma, mb) = (&a.metadata, &b.metadata);
    let mut differences = Vec::new();
    let same_workload = ma.workload.sha256 == mb.workload.sha256;
    if !same_workload {
        differences.push(format!(
            "workload: {} ({} requests, sha256 {}) -> {} ({} requests, sha256 {}): different work, ratios are not comparable",
            ma.workload.source,
            ma.workload.num_requests,
            short(&ma.workload.sha256),
            mb.workload.source,
            mb.workload.num_requests,
            short(&mb.workload.sha256)
        ));
    }
    let same_model = ma.bundle.same_model(&mb.bundle);
    if !same_model {
        differences.push(format!(
            "model: {} ({}) -> {} ({}): different model files",
            ma.bundle.name,
            short(&ma.bundle.manifest_sha256),
            mb.bundle.name,
            short(&mb.bundle.manifest_sha256)
        ));
    }
    if ma.engine != mb.engine {
        differences.push(format!("engine settings: {:?} -> {:?}", ma.engine, mb.engine));
    }
    match (&ma.cpu, &mb.cpu) {
        (Some(x), Some(y)) if x.fingerprint() != y.fingerprint() => {
            differences.push(format!("CPU: {} -> {}", x.describe(), y.describe()))
        }
        (Some(_), Some(_)) => {}
        _ if ma.cpu_model != mb.cpu_model || ma.cores != mb.cores => differences
            .push(format!("CPU: {} ({} cores) -> {} ({} cores)", ma.cpu_model, ma.cores, mb.cpu_model, mb.cores)),
        _ => {}
    }
    match (&ma.provenance, &mb.provenance) {
        (Some(x), Some(y)) => differences.extend(x.differences(y)),
        (x, y) => {
            if ma.git_commit != mb.git_commit {
                let c = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
                differences.push(format!("git commit: {} -> {}", c(&ma.git_commit), c(&mb.git_commit)));
            }
            if x.is_none() || y.is_none() {
                differences.push("provenance: not recorded in one run (written before it existed)".into());
            }
        }
    }

    let mut runtimes = Vec::new();
    let mut unmatched = Vec::new();
    for ra in &a.runs {
        let Some(rb) = b.runs.iter().find(|r| r.runtime == ra.runtime) else {
            unmatched.push(format!("A only: {}", ra.runtime));
            continue;
        };
        if ra.status != "ok" || rb.status != "ok" {
            unmatched.push(format!("{}: A {}, B {}", ra.runtime, ra.status, rb.status));
            continue;
        }
        let metrics = AB_METRICS
            .iter()
            .filter_map(|&(key, higher_better)| {
                let (va, vb) = (values(ra, key), values(rb, key));
                compare_metric(key, &va, &vb, higher_better, seed(&ra.runtime, key))
            })
            .collect();
        let same_tokens = (!ra.output_digest.is_empty() && !rb.output_digest.is_empty())
            .then(|| ra.output_digest == rb.output_digest);
        runtimes.push(AbRuntime { runtime: ra.runtime.clone(), same_tokens, metrics });
    }
    for rb in &b.runs {
        if !a.runs.iter().any(|r| r.runtime == rb.runtime) {
            unmatched.push(format!("B only: {}", rb.runtime));
        }
    }
    AbComparison {
        a: a_label.to_owned(),
        b: b_label.to_owned(),
        differences,
        comparable: same_workload && same_model,
        runtimes,
        unmatched,
    }
}

/// A metric over a row's repeats, or its one value.
fn values(r: &RuntimeResult, key: &str) -> Vec<f64> {
    if r.repeats.is_empty() {
        r.metric(key).into_iter().collect()
    } else {
        r.repeats.iter().filter_map(|x| x.metrics.get(key).copied()).collect()
    }
}

/// A stable seed per (runtime, metric): the same two files give the same interval every time.
fn seed(runtime: &str, key: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(format!("{runtime}/{key}").as_bytes(), 0)
}

/// Spread of each side, ratio of medians and its bootstrap interval; `None` when a side has no value.
pub fn compare_metric(key: &str, a: &[f64], b: &[f64], higher_better: bool, seed: u64) -> Option<AbMetric> {
    let (sa, sb) = (Spread::of(a)?, Spread::of(b)?);
    if sa.median <= 0.0 {
        return None;
    }
    let ratio = sb.median / sa.median;
    let (interval, interval_kind, verdict) = if sa.n < MIN_REPEATS || sb.n < MIN_REPEATS {
        (None, None, Verdict::NoiseUnknown)
    } else {
        let (kind, [lo, hi]) = if sa.n.min(sb.n) >= MIN_BOOTSTRAP_REPEATS {
            (IntervalKind::Bootstrap95, bootstrap_ratio(a, b, seed))
        } else {
            (IntervalKind::PairwiseRange, [sb.min / sa.max, sb.max / sa.min])
        };
        let verdict = if lo <= 1.0 && 1.0 <= hi {
            Verdict::WithinNoise
        } else if (lo > 1.0) == higher_better {
            Verdict::BBetter
        } else {
            Verdict::BWorse
        };
        (Some([lo, hi]), Some(kind), verdict)
    };
    Some(AbMetric { metric: key.to_owned(), a: sa, b: sb, ratio, interval, interval_kind, verdict })
}

/// 2.5th and 97.5th percentiles of median(B*) / median(A*) over resamples with replacement of each side.
fn bootstrap_ratio(a: &[f64], b: &[f64], seed: u64) -> [f64; 2] {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut resample = |v: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..v.len()).map(|_| v[rng.random_range(0..v.len())]));
        buf.sort_by(f64::total_cmp);
        median_sorted(buf)
    };
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let (ma, mb) = (resample(a, &mut ba), resample(b, &mut bb));
            (ma > 0.0).then(|| mb / ma)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    [crate::metrics::percentile(&ratios, 2.5), crate::metrics::percentile(&ratios, 97.5)]
}

fn median_sorted(v: &[f64]) -> f64 {
    crate::metrics::percentile(v, 50.0)
}

fn short(s: &str) -> String {
    s.chars().take(12).collect()
}

impl AbComparison {
    /// The comparison as Markdown: the differences, then one table row per runtime x metric.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### A/B: A = {}, B = {}\n", self.a, self.b);
        if self.differences.is_empty() {
            let _ = writeln!(out, "Same workload, model, CPU, build and environment: only the runs differ.\n");
        } else {
            let _ = writeln!(out, "What differs besides the runs themselves:\n");
            for d in &self.differences {
                let _ = writeln!(out, "- {}", d.replace('|', "/"));
            }
            out.push('\n');
        }
        if !self.comparable {
            let _ = writeln!(out, "**Not comparable**: the runs measured different workloads or models.\n");
        }
        let _ = writeln!(
            out,
            "| runtime | metric | A min / median / max (n) | B min / median / max (n) | B / A | interval | verdict | same tokens |"
        );
        let _ = writeln!(out, "|---|---|---|---|---:|---|---|---|");
        for rt in &self.runtimes {
            let tokens = match rt.same_tokens {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            for m in &rt.metrics {
                let spread = |s: &Spread| format!("{:.2} / {:.2} / {:.2} ({})", s.min, s.median, s.max, s.n);
                let interval = match (m.interval, m.interval_kind) {
                    (Some([lo, hi]), Some(kind)) => format!("{lo:.3} - {hi:.3} ({})", kind.as_str()),
                    _ => "-".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.3} | {} | {} | {} |",
                    rt.runtime,
                    m.metric,
                    spread(&m.a),
                    spread(&m.b),
                    m.ratio,
                    interval,
                    m.verdict.as_str(),
                    tokens
                );
            }
        }
        for u in &self.unmatched {
            let _ = writeln!(out, "\nNot compared: {u}");
        }
        let _ = writeln!(
            out,
            "\nB / A: the ratio of medians over each run's repeats. Interval: with {MIN_BOOTSTRAP_REPEATS}+ repeats a run, a \
             95% bootstrap interval of that ratio ({RESAMPLES} resamples); with {MIN_REPEATS}-{} repeats, the range of \
             the pairwise ratios (min B / max A to max B / min A: it excludes 1.00 only when the runs' ranges do not \
             overlap), since so few values give no 95% interval. Within noise: the interval holds 1.00. Same tokens: \
             equal output digests.",
            MIN_BOOTSTRAP_REPEATS - 1
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_repeats_are_within_noise_and_separated_ones_are_not() {
        let a = [100.0, 104.0, 98.0, 101.0, 99.0];
        let noisy_same = [97.0, 103.0, 100.0, 105.0, 99.5];
        let m = compare_metric("output_throughput", &a, &noisy_same, true, 1).unwrap();
        assert_eq!((m.a.min, m.a.median, m.a.max, m.a.n), (98.0, 100.0, 104.0, 5));
        // Five repeats: the range of the pairwise ratios, 97 / 104 to 105 / 98.
        assert_eq!(m.interval_kind, Some(IntervalKind::PairwiseRange));
        assert_eq!(m.interval, Some([97.0 / 104.0, 105.0 / 98.0]));
        assert_eq!(m.verdict, Verdict::WithinNoise, "{m:?}");
        let [lo, hi] = m.interval.unwrap();
        assert!(lo < 1.0 && hi > 1.0 && (m.ratio - 1.0).abs() < 1e-12);

        let faster = [120.0, 118.0, 121.0, 119.0, 122.0];
        let m = compare_metric("output_throughput", &a, &faster, true, 1).unwrap();
        assert_eq!(m.verdict, Verdict::BBetter);
        assert!((m.ratio - 1.2).abs() < 1e-12);
        // Higher latency is worse.
        let m = compare_metric("median_tpot_ms", &a, &faster, false, 1).unwrap();
        assert_eq!(m.verdict, Verdict::BWorse);
        // The same inputs give the same interval (seeded).
        assert_eq!(
            compare_metric("x", &a, &faster, true, 7).unwrap().interval,
            compare_metric("x", &a, &faster, true, 7).unwrap().interval
        );
    }

    #[test]
    fn eight_repeats_a_run_get_a_bootstrap_interval_inside_the_range() {
        let a = [100.0, 104.0, 98.0, 101.0, 99.0, 102.0, 100.5, 97.5];
        let b = [110.0, 112.0, 109.0, 111.0, 130.0, 108.0, 110.5, 111.5];
        let m = compare_metric("output_throughput", &a, &b, true, 3).unwrap();
        assert_eq!(m.interval_kind, Some(IntervalKind::Bootstrap95));
        let [lo, hi] = m.interval.unwrap();
        // Narrower than the pairwise range (108 / 104 to 130 / 97.5), and it holds the ratio of medians.
        assert!(lo > 108.0 / 104.0 && hi < 130.0 / 97.5 && lo <= m.ratio && m.ratio <= hi, "{lo} {hi} {}", m.ratio);
        assert_eq!(m.verdict, Verdict::BBetter);
    }

    #[test]
    fn without_repeats_the_noise_is_unknown() {
        let m = compare_metric("output_throughput", &[100.0], &[150.0], true, 1).unwrap();
        assert_eq!((m.verdict, m.interval, m.interval_kind), (Verdict::NoiseUnknown, None, None));
        assert!((m.ratio - 1.5).abs() < 1e-12);
        assert!(compare_metric("x", &[], &[1.0], true, 1).is_none());
        assert!(compare_metric("x", &[0.0, 0.0, 0.0], &[1.0, 1.0, 1.0], true, 1).is_none());
    }
}
