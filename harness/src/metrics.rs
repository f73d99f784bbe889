//! Serving metrics as vLLM's `benchmark_serving` defines them (see `../shared/BENCH-CONVENTIONS.md`), with its
//! field names so a vLLM result and ours can be put side by side.
//!
//! Per request, with t0 its arrival in the workload (not when it was scheduled, so queueing counts and there is no
//! coordinated omission): TTFT = first token - t0; TPOT = (E2EL - TTFT) / (output tokens - 1), only when more than
//! one token; ITL = every gap between consecutive tokens, pooled over requests; E2EL = last token - t0.
//! Throughputs are over the duration from the first arrival to the last completion. Percentiles interpolate
//! linearly between order statistics (numpy's default).

use std::collections::BTreeMap;

use serde::Serialize;

/// One request's measured timeline, in seconds from the run's start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    pub index: usize,
    pub id: Option<String>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub cached_tokens: usize,
    pub preemptions: u32,
    pub arrival_s: f64,
    /// Time of each output token.
    pub token_times_s: Vec<f64>,
    pub finish_reason: String,
    /// The generated token ids (over HTTP: the returned text tokenized with the model's tokenizer).
    pub output_token_ids: Vec<u32>,
    /// Why the request failed (`kind: message`, e.g. `timeout: ...`); a failed request is not completed.
    pub error: Option<String>,
    /// Where `output_tokens` came from: `engine` (in-process), `usage` (the server's count) or `tokenizer` (the
    /// returned text counted with the model's tokenizer, for a server that reports no usage).
    pub count_source: &'static str,
    /// The server that answered (HTTP targets).
    pub server: Option<String>,
}

impl RequestRecord {
    pub fn ttft_ms(&self) -> Option<f64> {
        self.token_times_s.first().map(|t| (t - self.arrival_s) * 1e3)
    }
    pub fn e2el_ms(&self) -> Option<f64> {
        self.token_times_s.last().map(|t| (t - self.arrival_s) * 1e3)
    }
    /// Over the output tokens, not the token times: a server may stream several tokens in one chunk.
    pub fn tpot_ms(&self) -> Option<f64> {
        let n = self.output_tokens;
        (n > 1 && !self.token_times_s.is_empty())
            .then(|| (self.e2el_ms().unwrap() - self.ttft_ms().unwrap()) / (n - 1) as f64)
    }
    /// Completed: tokens came back and nothing failed.
    pub fn completed(&self) -> bool {
        self.output_tokens > 0 && self.error.is_none() && !self.token_times_s.is_empty()
    }
    pub fn itl_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_times_s.windows(2).map(|w| (w[1] - w[0]) * 1e3)
    }
    pub fn completion_s(&self) -> Option<f64> {
        self.token_times_s.last().copied()
    }
}

/// Linear-interpolation percentile of sorted values (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Mean, median, std (population, as numpy), the requested percentiles and the max.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub max: f64,
    /// Keyed by the percentile as written (`"99"`, `"99.9"`).
    pub percentiles: BTreeMap<String, f64>,
}

impl Summary {
    pub fn of(values: impl IntoIterator<Item = f64>, percentiles: &[f64]) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = if n == 0 { f64::NAN } else { v.iter().sum::<f64>() / n as f64 };
        let std = if n == 0 { f64::NAN } else { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt() };
        Self {
            count: n,
            mean,
            median: percentile(&v, 50.0),
            std,
            max: v.last().copied().unwrap_or(f64::NAN),
            percentiles: percentiles.iter().map(|&p| (format_percentile(p), percentile(&v, p))).collect(),
        }
    }
}

/// `99.0` -> `"99"`, `99.9` -> `"99.9"`.
pub fn format_percentile(p: f64) -> String {
    let s = format!("{p}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// Service-level objectives for goodput, in milliseconds (vLLM's `--goodput ttft:200 tpot:50`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl std::str::FromStr for Slo {
    type Err = String;

    /// `ttft=200ms,tpot=50ms,e2el=2s` (units ms or s; a bare number is ms).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("'{part}' is not key=value (e.g. ttft=200ms)"))?;
            let value = value.trim();
            let (number, scale) = if let Some(v) = value.strip_suffix("ms") {
                (v, 1.0)
            } else if let Some(v) = value.strip_suffix('s') {
                (v, 1e3)
            } else {
                (value, 1.0)
            };
            let ms = number.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).map(|v| v * scale);
            let ms = ms.ok_or_else(|| format!("'{value}' is not a positive duration in '{part}'"))?;
            match key.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2el" => slo.e2el_ms = Some(ms),
                other => return Err(format!("unknown SLO '{other}' (ttft, tpot, e2el)")),
            }
        }
        Ok(slo)
    }
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }
    /// A completed request meets every SLO given (TPOT is met by a one-token request, as in vLLM).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let ok = |limit: Option<f64>, v: Option<f64>| limit.is_none_or(|l| v.is_none_or(|v| v <= l));
        r.completed() && ok(self.ttft_ms, r.ttft_ms()) && ok(self.tpot_ms, r.tpot_ms()) && ok(self.e2el_ms, r.e2el_ms())
    }
}

/// The run-level figures, vLLM's names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServingMetrics {
    pub completed: usize,
    /// Requests that failed (HTTP errors, timeouts, dropped streams): excluded from every other figure.
    pub failed: usize,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    /// Requests per second meeting every SLO; `None` without SLOs.
    pub request_goodput: Option<f64>,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
    pub e2el_ms: Summary,
}

impl ServingMetrics {
    pub fn compute(records: &[RequestRecord], percentiles: &[f64], slo: &Slo) -> Self {
        let done: Vec<&RequestRecord> = records.iter().filter(|r| r.completed()).collect();
        let start = records.iter().map(|r| r.arrival_s).fold(f64::INFINITY, f64::min);
        let end = done.iter().filter_map(|r| r.completion_s()).fold(f64::NEG_INFINITY, f64::max);
        let duration_s = if done.is_empty() { 0.0 } else { (end - start).max(f64::MIN_POSITIVE) };
        let per_s = |n: f64| if duration_s > 0.0 { n / duration_s } else { 0.0 };
        let total_input_tokens: usize = done.iter().map(|r| r.prompt_tokens).sum();
        let total_output_tokens: usize = done.iter().map(|r| r.output_tokens).sum();
        // Output tokens per 1-second bucket from the start; requests in flight at each arrival or completion.
        let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
        for t in done.iter().flat_map(|r| &r.token_times_s) {
            *buckets.entry(((t - start).max(0.0)).floor() as i64).or_default() += 1;
        }
        let mut events: Vec<(f64, i64)> = Vec::new();
        for r in &done {
            events.push((r.arrival_s, 1));
            events.push((r.completion_s().unwrap(), -1));
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut live, mut max_live) = (0i64, 0i64);
        for (_, d) in events {
            live += d;
            max_live = max_live.max(live);
        }
        Self {
            completed: done.len(),
            failed: records.iter().filter(|r| r.error.is_some()).count(),
            total_input_tokens,
            total_output_tokens,
            duration_s,
            request_throughput: per_s(done.len() as f64),
            output_throughput: per_s(total_output_tokens as f64),
            total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
            max_output_tokens_per_s: buckets.values().copied().max().unwrap_or(0) as f64,
            max_concurrent_requests: max_live as usize,
            request_goodput: (!slo.is_empty()).then(|| per_s(done.iter().filter(|r| slo.met_by(r)).count() as f64)),
            ttft_ms: Summary::of(done.iter().filter_map(|r| r.ttft_ms()), percentiles),
            tpot_ms: Summary::of(done.iter().filter_map(|r| r.tpot_ms()), percentiles),
            itl_ms: Summary::of(done.iter().flat_map(|r| r.itl_ms()), percentiles),
            e2el_ms: Summary::of(done.iter().filter_map(|r| r.e2el_ms()), percentiles),
        }
    }

    /// vLLM's flat keys: `mean_ttft_ms`, `median_tpot_ms`, `std_itl_ms`, `p99_e2el_ms`, ... plus the throughputs.
    pub fn flat(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("completed".into(), self.completed as f64);
        m.insert("failed".into(), self.failed as f64);
        m.insert("total_input_tokens".into(), self.total_input_tokens as f64);
        m.insert("total_output_tokens".into(), self.total_output_tokens as f64);
        m.insert("duration".into(), self.duration_s);
        m.insert("request_throughput".into(), self.request_throughput);
        m.insert("output_throughput".into(), self.output_throughput);
        m.insert("total_token_throughput".into(), self.total_token_throughput);
        m.insert("max_output_tokens_per_s".into(), self.max_output_tokens_per_s);
        m.insert("max_concurrent_requests".into(), self.max_concurrent_requests as f64);
        if let Some(g) = self.request_goodput {
            m.insert("request_goodput".into(), g);
        }
        for (name, s) in
            [("ttft", &self.ttft_ms), ("tpot", &self.tpot_ms), ("itl", &self.itl_ms), ("e2el", &self.e2el_ms)]
        {
            m.insert(format!("mean_{name}_ms"), s.mean);
            m.insert(format!("median_{name}_ms"), s.median);
            m.insert(format!("std_{name}_ms"), s.std);
            m.insert(format!("max_{name}_ms"), s.max);
            for (p, v) in &s.percentiles {
                m.insert(format!("p{p}_{name}_ms"), *v);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(arrival_s: f64, times: &[f64], prompt: usize) -> RequestRecord {
        RequestRecord {
            output_token_ids: Vec::new(),
            index: 0,
            id: None,
            prompt_tokens: prompt,
            output_tokens: times.len(),
            cached_tokens: 0,
            preemptions: 0,
            arrival_s,
            token_times_s: times.to_vec(),
            finish_reason: "length".into(),
            error: None,
            count_source: "engine",
            server: None,
        }
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 90.0), 3.7);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        let s = Summary::of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], &[50.0, 99.0]);
        assert_eq!((s.mean, s.std, s.median, s.max), (5.0, 2.0, 4.5, 9.0));
        assert!((s.percentiles["99"] - 8.86).abs() < 1e-12);
    }

    #[test]
    fn request_metrics_follow_vllm_definitions() {
        // Arrives at 1.0, queued; tokens at 1.5, 1.7, 2.1.
        let r = rec(1.0, &[1.5, 1.7, 2.1], 10);
        assert!((r.ttft_ms().unwrap() - 500.0).abs() < 1e-9);
        assert!((r.e2el_ms().unwrap() - 1100.0).abs() < 1e-9);
        assert!((r.tpot_ms().unwrap() - 300.0).abs() < 1e-9);
        let itl: Vec<f64> = r.itl_ms().collect();
        assert!((itl[0] - 200.0).abs() < 1e-9 && (itl[1] - 400.0).abs() < 1e-9);
        assert_eq!(rec(0.0, &[0.3], 1).tpot_ms(), None);
    }

    #[test]
    fn run_metrics_throughputs_concurrency_and_goodput() {
        let records = [rec(0.0, &[0.5, 1.0], 10), rec(0.5, &[0.8, 1.2, 2.0], 20), rec(3.0, &[], 5)];
        let slo: Slo = "ttft=400ms,tpot=0.5s".parse().unwrap();
        let m = ServingMetrics::compute(&records, &[50.0, 99.0], &slo);
        assert_eq!((m.completed, m.total_input_tokens, m.total_output_tokens), (2, 30, 5));
        assert_eq!(m.duration_s, 2.0);
        assert_eq!((m.request_throughput, m.output_throughput, m.total_token_throughput), (1.0, 2.5, 17.5));
        assert_eq!(m.max_concurrent_requests, 2);
        // 1-second buckets: [0, 1) holds 0.5 and 0.8, [1, 2) holds 1.0 and 1.2, [2, 3) holds 2.0.
        assert_eq!(m.max_output_tokens_per_s, 2.0);
        // Request 1: TTFT 500 > 400 fails; request 2: TTFT 300, TPOT 600 > 500 fails.
        assert_eq!(m.request_goodput, Some(0.0));
        let lenient: Slo = "ttft=1s".parse().unwrap();
        assert_eq!(ServingMetrics::compute(&records, &[99.0], &lenient).request_goodput, Some(1.0));
        let flat = m.flat();
        assert!((flat["mean_ttft_ms"] - 400.0).abs() < 1e-9);
        assert!(
            flat.contains_key("p99_itl_ms") && flat.contains_key("median_e2el_ms") && flat.contains_key("std_tpot_ms")
        );
    }

    #[test]
    fn slo_parsing_names_the_problem() {
        assert_eq!("tpot=50".parse::<Slo>().unwrap().tpot_ms, Some(50.0));
        assert!("ttft=-1ms".parse::<Slo>().unwrap_err().contains("positive"));
        assert!("latency=3".parse::<Slo>().unwrap_err().contains("unknown SLO 'latency'"));
        assert!("ttft".parse::<Slo>().unwrap_err().contains("key=value"));
    }
}
