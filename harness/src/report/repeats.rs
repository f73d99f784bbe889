//! Repeated runs (`nano-vllm bench --repeat N`): runtimes are measured in rounds, each round running every runtime
//! once, so repeat `i` of every runtime was measured side by side. A runtime's result keeps every repeat; its metrics
//! are each metric's median over the repeats; a repeat that fails or is interrupted stops that runtime and marks its
//! result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::RuntimeResult;

/// One repeat of a runtime in a repeated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    pub metrics: BTreeMap<String, f64>,
    pub steps: usize,
    pub preemptions: usize,
    pub prefix_hit_tokens: usize,
    pub output_digest: String,
}

impl RuntimeResult {
    /// This run as one repeat.
    pub fn as_repeat(&self) -> Repeat {
        Repeat {
            metrics: self.metrics.clone(),
            steps: self.engine.steps,
            preemptions: self.engine.preemptions,
            prefix_hit_tokens: self.engine.prefix_hit_tokens,
            output_digest: self.output_digest.clone(),
        }
    }

    /// Folds repeats (this run is the first) into one result: every metric's median over the repeats (a metric
    /// missing from a repeat is left out of its median), `repeats` kept.
    pub fn with_repeats(mut self, repeats: Vec<Repeat>) -> Self {
        if repeats.len() > 1 {
            let keys: std::collections::BTreeSet<&String> = repeats.iter().flat_map(|r| r.metrics.keys()).collect();
            self.metrics = keys
                .into_iter()
                .map(|k| {
                    let mut v: Vec<f64> = repeats.iter().filter_map(|r| r.metrics.get(k).copied()).collect();
                    v.sort_by(f64::total_cmp);
                    (k.clone(), crate::metrics::percentile(&v, 50.0))
                })
                .collect();
        }
        self.repeats = if repeats.len() > 1 { repeats } else { Vec::new() };
        self
    }
}

/// One runtime's repeats, as the rounds produce them.
#[derive(Debug, Clone, Default)]
pub struct RepeatedRun {
    first: Option<RuntimeResult>,
    repeats: Vec<Repeat>,
}

impl RepeatedRun {
    /// Whether the runtime stopped (a repeat failed or was interrupted): later rounds skip it.
    pub fn stopped(&self) -> bool {
        self.first.as_ref().is_some_and(|r| r.status != "ok")
    }

    /// Adds round `round`'s (0-based) result. The first result is the runtime's (its engine figures and per-request
    /// records are reported); a later one that is not ok marks it, with the repeat named in the error.
    pub fn push(&mut self, mut result: RuntimeResult, round: usize, rounds: usize) {
        if rounds > 1 {
            result.error = result.error.take().map(|e| format!("repeat {}: {e}", round + 1));
        }
        if result.status == "ok" {
            self.repeats.push(result.as_repeat());
        }
        match &mut self.first {
            None => self.first = Some(result),
            Some(first) if result.status != "ok" => {
                first.status = result.status;
                first.error = result.error;
            }
            Some(_) => {}
        }
    }

    /// The runtime's result over every ok repeat; `None` if it never ran (interrupted before its first round).
    pub fn finish(self) -> Option<RuntimeResult> {
        let repeats = self.repeats;
        self.first.map(|f| f.with_repeats(repeats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::EngineFigures;

    fn repeat(metrics: &[(&str, f64)]) -> Repeat {
        Repeat {
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            steps: 1,
            preemptions: 0,
            prefix_hit_tokens: 0,
            output_digest: "d".into(),
        }
    }

    fn runtime_result() -> RuntimeResult {
        RuntimeResult {
            runtime: "r".into(),
            version: String::new(),
            device: String::new(),
            dtype: String::new(),
            settings: Default::default(),
            status: "ok".into(),
            error: None,
            metrics: [("output_throughput".to_string(), 10.0)].into(),
            engine: EngineFigures::default(),
            requests_csv: String::new(),
            output_digest: "d".into(),
            repeats: Vec::new(),
            measured: "in-process".into(),
            failures: Default::default(),
            tool: String::new(),
        }
    }

    #[test]
    fn repeats_fold_into_per_metric_medians() {
        let first = runtime_result();
        let repeats = vec![
            repeat(&[("output_throughput", 10.0), ("median_tpot_ms", 2.0)]),
            repeat(&[("output_throughput", 40.0)]),
            repeat(&[("output_throughput", 20.0), ("median_tpot_ms", 4.0)]),
            repeat(&[("output_throughput", 30.0), ("median_tpot_ms", 9.0)]),
        ];
        let folded = first.clone().with_repeats(repeats.clone());
        // An even count interpolates the middle two; a metric missing from a repeat is the median of the others.
        assert_eq!(folded.metric("output_throughput"), Some(25.0));
        assert_eq!(folded.metric("median_tpot_ms"), Some(4.0));
        assert_eq!(folded.repeats, repeats);
        // One repeat is a plain run.
        let single = first.clone().with_repeats(vec![first.as_repeat()]);
        assert!(single.repeats.is_empty() && single.metrics == first.metrics);
    }

    #[test]
    fn a_later_repeat_that_fails_stops_the_runtime_and_marks_its_result() {
        let ok = |t: f64| {
            let mut r = runtime_result();
            r.metrics = [("output_throughput".to_string(), t)].into();
            r
        };
        let mut run = RepeatedRun::default();
        run.push(ok(10.0), 0, 3);
        run.push(ok(30.0), 1, 3);
        assert!(!run.stopped());
        let mut failed = ok(0.0);
        failed.status = "failed".into();
        failed.error = Some("step 7: boom".into());
        run.push(failed, 2, 3);
        assert!(run.stopped());
        let r = run.finish().unwrap();
        assert_eq!((r.status.as_str(), r.error.as_deref()), ("failed", Some("repeat 3: step 7: boom")));
        // The ok repeats are kept and summarized.
        assert_eq!(r.repeats.len(), 2);
        assert_eq!(r.metric("output_throughput"), Some(20.0));
        // A runtime that never ran has no result; a single run is a plain run.
        assert!(RepeatedRun::default().finish().is_none());
        let mut single = RepeatedRun::default();
        single.push(ok(5.0), 0, 1);
        let r = single.finish().unwrap();
        assert!(r.repeats.is_empty() && r.metric("output_throughput") == Some(5.0));
    }
}
