//! `GET /metrics`: Prometheus text, vLLM's metric names where one exists (so dashboards made for vLLM read ours),
//! `nano_vllm:` names for the rest. Every metric carries the `model_name` label, as vLLM's do. Updated by the engine
//! thread after each step and by the handlers for what never reaches the engine (refusals).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Latency buckets (seconds) of vLLM's TTFT histogram, also used for the inter-token and end-to-end ones here.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    registry: Registry,
    pub requests_running: IntGauge,
    pub requests_waiting: IntGauge,
    /// `vllm:kv_cache_usage_perc` is a fraction (0..1), as vLLM reports it; the block counts beside it are ours.
    kv_cache_usage: prometheus::Gauge,
    pub kv_blocks_used: IntGauge,
    pub kv_blocks_total: IntGauge,
    pub prefix_cache_queries: IntCounter,
    pub prefix_cache_hits: IntCounter,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub preemptions: IntCounter,
    /// Finished requests by `finished_reason` (stop, length, abort).
    pub request_success: IntCounterVec,
    /// Requests refused before reaching the engine, by `reason` (invalid, unauthorized, not_found, queue_full).
    pub requests_rejected: IntCounterVec,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl ServerMetrics {
    pub fn new(model_name: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("model_name", model_name);
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help).const_label("model_name", model_name).buckets(LATENCY_BUCKETS.to_vec())
        };
        let m = Self {
            requests_running: IntGauge::with_opts(opts(
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
            ))?,
            requests_waiting: IntGauge::with_opts(opts("vllm:num_requests_waiting", "Number of requests waiting."))?,
            kv_cache_usage: prometheus::Gauge::with_opts(opts(
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
            ))?,
            kv_blocks_used: IntGauge::with_opts(opts("nano_vllm:kv_blocks_used", "KV-cache blocks in use."))?,
            kv_blocks_total: IntGauge::with_opts(opts("nano_vllm:kv_blocks_total", "KV-cache blocks in all."))?,
            prefix_cache_queries: IntCounter::with_opts(opts(
                "vllm:prefix_cache_queries_total",
                "Prefix cache queries, in terms of number of queried tokens.",
            ))?,
            prefix_cache_hits: IntCounter::with_opts(opts(
                "vllm:prefix_cache_hits_total",
                "Prefix cache hits, in terms of number of cached tokens.",
            ))?,
            prompt_tokens: IntCounter::with_opts(opts(
                "vllm:prompt_tokens_total",
                "Number of prefill tokens processed.",
            ))?,
            generation_tokens: IntCounter::with_opts(opts(
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
            ))?,
            preemptions: IntCounter::with_opts(opts(
                "vllm:num_preemptions_total",
                "Cumulative number of preemptions.",
            ))?,
            request_success: IntCounterVec::new(
                opts("vllm:request_success_total", "Count of finished requests."),
                &["finished_reason"],
            )?,
            requests_rejected: IntCounterVec::new(
                opts("nano_vllm:requests_rejected_total", "Requests refused before reaching the engine."),
                &["reason"],
            )?,
            ttft: Histogram::with_opts(hist("vllm:time_to_first_token_seconds", "Histogram of time to first token."))?,
            itl: Histogram::with_opts(hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency."))?,
            e2e: Histogram::with_opts(hist(
                "vllm:e2e_request_latency_seconds",
                "Histogram of end to end request latency.",
            ))?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests_running.clone()))?;
        r.register(Box::new(m.requests_waiting.clone()))?;
        r.register(Box::new(m.kv_cache_usage.clone()))?;
        r.register(Box::new(m.kv_blocks_used.clone()))?;
        r.register(Box::new(m.kv_blocks_total.clone()))?;
        r.register(Box::new(m.prefix_cache_queries.clone()))?;
        r.register(Box::new(m.prefix_cache_hits.clone()))?;
        r.register(Box::new(m.prompt_tokens.clone()))?;
        r.register(Box::new(m.generation_tokens.clone()))?;
        r.register(Box::new(m.preemptions.clone()))?;
        r.register(Box::new(m.request_success.clone()))?;
        r.register(Box::new(m.requests_rejected.clone()))?;
        r.register(Box::new(m.ttft.clone()))?;
        r.register(Box::new(m.itl.clone()))?;
        r.register(Box::new(m.e2e.clone()))?;
        // Every label value appears from the start, so a scrape before the first request sees the series.
        for reason in ["stop", "length", "abort"] {
            m.request_success.with_label_values(&[reason]);
        }
        for reason in ["invalid", "unauthorized", "not_found", "queue_full", "unavailable"] {
            m.requests_rejected.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// The KV cache's occupancy.
    pub fn set_kv(&self, used: usize, total: usize) {
        self.kv_blocks_used.set(used as i64);
        self.kv_blocks_total.set(total as i64);
        self.kv_cache_usage.set(if total == 0 { 0.0 } else { used as f64 / total as f64 });
    }

    pub fn reject(&self, reason: &str) {
        self.requests_rejected.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding metric families we built can only fail on a broken writer; a Vec is not one.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Reads one sample (no labels, or the first series) of `name` from a Prometheus text exposition: for tests and
/// scripts that check the server (e.g. that every KV block is free after a load test).
pub fn read_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let metric = series.split('{').next()?;
        (metric == name).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_vllm_names_and_labels() {
        let m = ServerMetrics::new("smollm2").unwrap();
        m.set_kv(3, 12);
        m.requests_running.set(2);
        m.ttft.observe(0.05);
        m.request_success.with_label_values(&["length"]).inc();
        let text = m.render();
        assert!(text.contains(r#"vllm:num_requests_running{model_name="smollm2"} 2"#), "{text}");
        assert!(text.contains(r#"vllm:request_success_total{finished_reason="length",model_name="smollm2"} 1"#));
        assert!(text.contains("vllm:time_to_first_token_seconds_bucket"));
        assert_eq!(read_sample(&text, "vllm:kv_cache_usage_perc"), Some(0.25));
        assert_eq!(read_sample(&text, "nano_vllm:kv_blocks_used"), Some(3.0));
        assert_eq!(read_sample(&text, "vllm:num_requests_waiting"), Some(0.0));
        assert_eq!(read_sample(&text, "no_such_metric"), None);
    }
}
