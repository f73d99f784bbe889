//! The regression gate: a run compared with a committed baseline run (both `results.json` of `nano-vllm bench`),
//! on figures that stay put on a shared, noisy machine.
//!
//! - **Relative performance.** For each repeat, each runtime's figure divided by the geometric mean of the other
//!   gated runtimes' figures *of the same repeat* (measured side by side, so the machine's speed and load cancel),
//!   then the median over the repeats. A runtime regresses when its relative figure falls below the baseline's by
//!   more than `relative.max_drop`. Slowing one runtime by a factor k lowers its own figure by k and raises each
//!   other's by only k^(1/(n-1)), so the gate names the runtime that changed.
//! - **Exact figures.** For a fixed workload (same sha256, engine settings and bundle), completed requests, token
//!   counts, engine steps, preemptions, prefix-cache hits and the digest of every generated token must equal the
//!   baseline's in every repeat.
//!
//! A baseline of another workload, bundle or engine setting is not comparable: an error that says to refresh the
//! baseline deliberately, never a silent pass.
//!
//! **Machines.** Relative figures carry between runs on the same CPU, not between CPU generations (the runtimes'
//! libraries pick other kernels on a CPU with other SIMD features or caches: ONNX Runtime's relative throughput
//! read -37% on a machine without AVX-512 against a baseline made with it, with nothing changed). So a baseline is
//! kept per CPU ([`crate::machine::CpuIdentity::fingerprint`]; [`pick_baseline`] chooses the one of this CPU) and
//! relative figures are gated only against a baseline of the same CPU; against another CPU's they are reported,
//! marked not gated, while the exact figures, which do not depend on the CPU, are still gated. The instruction-count
//! gate ([`instructions`]) holds on any machine.

mod config;
mod figures;
mod report;

pub use config::{EXACT_FIELDS, ExactConfig, GateConfig, InstructionsConfig, RelativeConfig};
pub use report::{GateCheck, GateReport};

pub mod instructions;

use std::path::PathBuf;

use crate::report::{Results, RuntimeResult};
use figures::{exact, relative, repeats};

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("gate config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(
        "the baseline is not comparable with this run: {0}. Refresh the baseline deliberately (bash ci/refresh-baseline.sh) if the change is intended"
    )]
    NotComparable(String),
    #[error("instruction counts {}: {message}", path.display())]
    Instructions { path: PathBuf, message: String },
}

/// The CPU fingerprint of a run (`None` for files written before CPUs were recorded).
pub fn cpu_fingerprint(results: &Results) -> Option<String> {
    results.metadata.cpu.as_ref().map(|c| c.fingerprint())
}

/// Of several baselines (one per CPU), the one recorded on the current run's CPU; else one of the same benchmark
/// (comparable: its exact figures still apply), else the first. Returns its index and whether its CPU matches.
pub fn pick_baseline(baselines: &[Results], current: &Results) -> Option<(usize, bool)> {
    let here = cpu_fingerprint(current);
    if let Some(i) = baselines.iter().position(|b| here.is_some() && cpu_fingerprint(b) == here) {
        return Some((i, true));
    }
    let comparable_one = baselines.iter().position(|b| comparable(b, current).is_ok());
    (!baselines.is_empty()).then(|| (comparable_one.unwrap_or(0), false))
}

/// Refuses baselines of another workload, bundle or engine configuration.
fn comparable(baseline: &Results, current: &Results) -> Result<Vec<String>, GateError> {
    let (b, c) = (&baseline.metadata, &current.metadata);
    let mut differences = Vec::new();
    if !b.bundle.same_model(&c.bundle) {
        differences.push(format!("bundle {} (its files' sha256) differs from {}", c.bundle.name, b.bundle.name));
    }
    if b.workload.sha256 != c.workload.sha256 || b.workload.warmup != c.workload.warmup {
        differences.push("the workload differs (sha256 of the resolved requests or warm-up)".into());
    }
    if b.workload.mode != c.workload.mode {
        differences.push(format!("mode {} vs {}", c.workload.mode, b.workload.mode));
    }
    if b.engine != c.engine {
        differences.push(format!("engine settings {:?} vs {:?}", c.engine, b.engine));
    }
    if !differences.is_empty() {
        return Err(GateError::NotComparable(differences.join("; ")));
    }
    Ok(Vec::new())
}

/// Whether both runs were measured on the same CPU (then relative figures are gated), with a note when not.
fn same_cpu(baseline: &Results, current: &Results) -> (bool, Option<String>) {
    let (b, c) = (cpu_fingerprint(baseline), cpu_fingerprint(current));
    if b.is_some() && b == c {
        return (true, None);
    }
    let describe = |r: &Results, f: &Option<String>| match (&r.metadata.cpu, f) {
        (Some(cpu), Some(f)) => format!("{f}: {}", cpu.describe()),
        _ => format!("{} ({} cores), CPU not recorded", r.metadata.cpu_model, r.metadata.cores),
    };
    let note = format!(
        "relative figures are reported, not gated: the baseline was measured on another CPU ({}), this run on {}; \
         timing figures do not carry between CPUs. To gate them on this machine, record its baseline with \
         ci/refresh-baseline.sh (reports/baselines/<fingerprint>.json). Exact figures are still gated",
        describe(baseline, &b),
        describe(current, &c)
    );
    (false, Some(note))
}

fn find<'a>(results: &'a Results, name: &str, which: &str) -> Result<&'a RuntimeResult, GateError> {
    results
        .runs
        .iter()
        .find(|r| r.runtime == name)
        .ok_or_else(|| GateError::NotComparable(format!("runtime '{name}' is not in the {which} run")))
}

/// Compares `current` with `baseline` under `config`.
pub fn gate(baseline: &Results, current: &Results, config: &GateConfig) -> Result<GateReport, GateError> {
    let mut report = GateReport { checks: Vec::new(), notes: comparable(baseline, current)? };
    let (timing_gated, note) = same_cpu(baseline, current);
    report.notes.extend(note);
    let names: Vec<String> = if config.runtimes.is_empty() {
        baseline.runs.iter().map(|r| r.runtime.clone()).collect()
    } else {
        config.runtimes.clone()
    };
    if names.is_empty() {
        return Err(GateError::NotComparable("the baseline has no runtime to gate".into()));
    }
    if names.len() < 2 && !config.relative.metrics.is_empty() {
        return Err(GateError::NotComparable(format!(
            "relative figures need at least two runtimes measured side by side; only {} is gated",
            names[0]
        )));
    }
    for extra in current.runs.iter().filter(|r| !names.contains(&r.runtime)) {
        report.notes.push(format!("{}: in this run but not gated (not in the baseline or the config)", extra.runtime));
    }
    let mut pairs = Vec::new();
    for name in &names {
        let (b, c) = (find(baseline, name, "baseline")?, find(current, name, "current")?);
        if (&b.dtype, &b.device) != (&c.dtype, &c.device) {
            return Err(GateError::NotComparable(format!(
                "runtime '{name}' ran as {} on {} in the baseline, as {} on {} now",
                b.dtype, b.device, c.dtype, c.device
            )));
        }
        if b.version != c.version {
            report.notes.push(format!("{name}: version {} (baseline: {})", c.version, b.version));
        }
        for (run, which) in [(b, "baseline"), (c, "current")] {
            let n = repeats(run).len();
            let ok = run.status == "ok" && n >= config.min_repeats;
            if !ok || which == "current" {
                report.checks.push(GateCheck {
                    runtime: name.clone(),
                    figure: format!("status, repeats ({which})"),
                    baseline: String::new(),
                    current: format!("{}, {n}", run.status),
                    limit: format!("ok, >= {}", config.min_repeats),
                    passed: ok,
                });
            }
        }
        pairs.push((b, c));
    }
    let usable = report.passed();

    if usable {
        let (b_runs, c_runs): (Vec<_>, Vec<_>) = pairs.iter().copied().unzip();
        for metric in &config.relative.metrics {
            let (b_rel, c_rel) = (relative(&b_runs, metric), relative(&c_runs, metric));
            for (k, name) in names.iter().enumerate() {
                let figure = format!("{metric} (relative)");
                let (Some(b), Some(c)) = (b_rel[k], c_rel[k]) else {
                    report.checks.push(GateCheck {
                        runtime: name.clone(),
                        figure,
                        baseline: b_rel[k].map_or("missing".into(), |v| format!("{v:.3}")),
                        current: c_rel[k].map_or("missing".into(), |v| format!("{v:.3}")),
                        limit: "present in every repeat".into(),
                        passed: false,
                    });
                    continue;
                };
                let floor = b * (1.0 - config.relative.max_drop);
                let change = c / b - 1.0;
                let limit = format!(">= {floor:.3} (-{:.0}%)", config.relative.max_drop * 100.0);
                report.checks.push(GateCheck {
                    runtime: name.clone(),
                    figure,
                    baseline: format!("{b:.3}"),
                    current: format!("{c:.3} ({:+.0}%)", change * 100.0),
                    limit: if timing_gated { limit } else { format!("not gated (another CPU): {limit}") },
                    passed: c >= floor || !timing_gated,
                });
                if timing_gated && change > config.relative.max_drop {
                    report.notes.push(format!(
                        "{name}: {metric} relative figure is {:.0}% above the baseline's; if the speed-up is real, \
                         refresh the baseline so that the gate protects it",
                        change * 100.0
                    ));
                }
            }
        }
    }

    if usable {
        for field in &config.exact.fields {
            for (name, (b, c)) in names.iter().zip(&pairs) {
                let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "missing".into());
                let expected = exact(&repeats(b)[0], field);
                let mut seen: Vec<Option<String>> = repeats(c).iter().map(|r| exact(r, field)).collect();
                seen.dedup();
                let consistent = repeats(b).iter().all(|r| exact(r, field) == expected);
                report.checks.push(GateCheck {
                    runtime: name.clone(),
                    figure: field.clone(),
                    baseline: if consistent {
                        text(&expected)
                    } else {
                        format!("{} (varies by repeat)", text(&expected))
                    },
                    current: seen.iter().map(text).collect::<Vec<_>>().join(" / "),
                    limit: "equal in every repeat".into(),
                    passed: expected.is_some() && consistent && seen.iter().all(|v| *v == expected),
                });
            }
        }
    }
    Ok(report)
}

/// Of several runs of the same benchmark, the index of the most typical: the one whose relative figures stray least
/// (smallest largest |log ratio|, over runtimes and `config`'s relative metrics) from the other runs'. A baseline
/// picked so is not one run's outlier. Runs must hold the same runtimes, in the same order.
pub fn most_typical(runs: &[Results], config: &GateConfig) -> Result<usize, GateError> {
    let first = runs.first().ok_or_else(|| GateError::NotComparable("no run to pick from".into()))?;
    let names: Vec<&str> = first.runs.iter().map(|x| x.runtime.as_str()).collect();
    let mut figures: Vec<Vec<f64>> = Vec::new();
    for (i, results) in runs.iter().enumerate() {
        let ours: Vec<&str> = results.runs.iter().map(|x| x.runtime.as_str()).collect();
        if ours != names {
            return Err(GateError::NotComparable(format!("run {}: runtimes {ours:?} differ from {names:?}", i + 1)));
        }
        comparable(first, results)?;
        // A candidate must pass as a current run itself: every runtime ok, enough repeats.
        if let Some(bad) = results.runs.iter().find(|r| r.status != "ok" || repeats(r).len() < config.min_repeats) {
            return Err(GateError::NotComparable(format!(
                "run {}: runtime {} is {} with {} repeats (a baseline needs ok and >= {})",
                i + 1,
                bad.runtime,
                bad.status,
                repeats(bad).len(),
                config.min_repeats
            )));
        }
        let refs: Vec<&RuntimeResult> = results.runs.iter().collect();
        let rel = config.relative.metrics.iter().flat_map(|m| relative(&refs, m)).map(|v| v.unwrap_or(f64::NAN));
        figures.push(rel.collect());
    }
    let stray = |i: usize| {
        (0..runs.len())
            .filter(|&j| j != i)
            .flat_map(|j| figures[i].iter().zip(&figures[j]).map(|(a, b)| (a / b).ln().abs()))
            .fold(0.0f64, |m, v| if v.is_nan() { f64::INFINITY } else { m.max(v) })
    };
    Ok((0..runs.len()).min_by(|&a, &b| stray(a).total_cmp(&stray(b))).unwrap_or(0))
}

#[cfg(test)]
mod tests;
