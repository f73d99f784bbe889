//! The figures the gate compares, read from a run: relative performance per repeat, and exact figures.

use crate::report::{Repeat, RuntimeResult};

/// A run's repeats; a run made without `--repeat` is one repeat.
pub(super) fn repeats(run: &RuntimeResult) -> Vec<Repeat> {
    if run.repeats.is_empty() { vec![run.as_repeat()] } else { run.repeats.clone() }
}

/// A repeat's value of a relative metric, as "higher is faster".
fn speed(repeat: &Repeat, metric: &str) -> Option<f64> {
    let v = *repeat.metrics.get(metric)?;
    let v = if metric.ends_with("_ms") { 1.0 / v } else { v };
    (v.is_finite() && v > 0.0).then_some(v)
}

/// Per runtime (in `runs` order), the median over repeats of its `metric` relative to the geometric mean of the
/// others' in the same repeat. `None` where a repeat lacks the metric.
pub(super) fn relative(runs: &[&RuntimeResult], metric: &str) -> Vec<Option<f64>> {
    let reps: Vec<Vec<Repeat>> = runs.iter().map(|r| repeats(r)).collect();
    let n = reps.iter().map(Vec::len).min().unwrap_or(0);
    (0..runs.len())
        .map(|k| {
            let mut values = Vec::with_capacity(n);
            for (i, repeat) in reps[k].iter().take(n).enumerate() {
                let own = speed(repeat, metric)?;
                let others: Option<Vec<f64>> =
                    (0..runs.len()).filter(|&j| j != k).map(|j| speed(&reps[j][i], metric)).collect();
                let others = others?;
                let geomean = (others.iter().map(|v| v.ln()).sum::<f64>() / others.len() as f64).exp();
                values.push(own / geomean);
            }
            values.sort_by(f64::total_cmp);
            (!values.is_empty()).then(|| crate::metrics::percentile(&values, 50.0))
        })
        .collect()
}

/// A repeat's value of an exact field, as text; `None` when the run does not have it (e.g. a digest in a file
/// written before digests existed), which never counts as equal.
pub(super) fn exact(repeat: &Repeat, field: &str) -> Option<String> {
    match field {
        "steps" => Some(repeat.steps.to_string()),
        "preemptions" => Some(repeat.preemptions.to_string()),
        "prefix_hit_tokens" => Some(repeat.prefix_hit_tokens.to_string()),
        "output_digest" => (!repeat.output_digest.is_empty()).then(|| repeat.output_digest.clone()),
        metric => repeat.metrics.get(metric).map(|v| format!("{v}")),
    }
}
