//! `vllm bench serve --save-result` JSON (vLLM 0.32): one flat object per run. Its metric names are the ones this
//! harness uses (`request_throughput`, `output_throughput`, `total_token_throughput`, `{mean,median,std,pNN}_{ttft,
//! tpot,itl,e2el}_ms`, `completed`, `failed`, `duration` in s, ...), so they are taken as they are; per-request
//! arrays (`latencies`, `ttfts`, `itls`, `generated_texts`, ...) are left out. The run's settings (`backend`,
//! `endpoint_type`, `model_id`, `num_prompts`, `request_rate`, `burstiness`, `max_concurrency`, `date`) become the
//! row's settings and the workload's description.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{Fields, Format, ImportedRun, row, stem};
use crate::report::{Results, WorkloadMeta};

/// Scalar metrics taken as they are.
const SCALARS: [&str; 11] = [
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "duration",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
];

pub(super) fn read(v: &Value, file: &Path) -> Result<Results, String> {
    let f = Fields::new(v, "");
    let mut metrics = BTreeMap::new();
    for key in SCALARS {
        if let Some(x) = f.opt_f64(key)? {
            metrics.insert(key.to_owned(), x);
        }
    }
    for key in ["completed", "request_throughput"] {
        if !metrics.contains_key(key) {
            return Err(format!("field `{key}` is missing"));
        }
    }
    let mut percentiles = Vec::new();
    if let Value::Object(o) = v {
        for key in o.keys() {
            let Some(p) = latency_key(key) else { continue };
            if let Some(x) = f.opt_f64(key)? {
                metrics.insert(key.clone(), x);
            }
            if let Some(p) = p.filter(|_| key.ends_with("_ttft_ms")) {
                percentiles.push(p);
            }
        }
    }
    percentiles.sort_by(f64::total_cmp);
    percentiles.dedup();

    let model = f.opt_str("model_id")?.unwrap_or("unknown model").to_owned();
    let rate = f.opt_f64("request_rate")?;
    let max_concurrency = f.opt_f64("max_concurrency")?;
    let date = f.opt_str("date")?.unwrap_or("").to_owned();
    let settings: BTreeMap<String, String> = [
        "backend",
        "endpoint_type",
        "model_id",
        "tokenizer_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "date",
        "label",
    ]
    .iter()
    .filter_map(|k| f.text(k).map(|v| ((*k).to_owned(), v)))
    .chain([("file".to_owned(), file.display().to_string())])
    .collect();
    let name = f.opt_str("label")?.map_or_else(|| stem(file), str::to_owned);
    let num_requests = match f.opt_f64("num_prompts")? {
        Some(n) => n as usize,
        None => (metrics["completed"] + metrics.get("failed").copied().unwrap_or(0.0)) as usize,
    };
    let workload = WorkloadMeta {
        source: format!("vllm bench serve ({})", file.display()),
        num_requests,
        warmup: 0,
        sha256: String::new(),
        seed: None,
        mode: if rate.is_some_and(f64::is_finite) { "online" } else { "offline" }.into(),
        request_rate: rate.filter(|r| r.is_finite()),
        burstiness: f.opt_f64("burstiness")?,
        max_concurrency: max_concurrency.map(|n| n as usize),
    };
    let version = if date.is_empty() { "vllm bench serve".to_owned() } else { format!("vllm bench serve, {date}") };
    let row = row(Format::VllmBenchServe, name, version, "http", settings, metrics);
    Ok(ImportedRun {
        file,
        format: Format::VllmBenchServe,
        created_unix_s: 0,
        model,
        workload,
        percentiles,
        rows: vec![row],
    }
    .into_results())
}

/// Whether `key` is a latency statistic (`mean_ttft_ms`, `p99_itl_ms`, ...); for a percentile, which.
fn latency_key(key: &str) -> Option<Option<f64>> {
    let stat = ["_ttft_ms", "_tpot_ms", "_itl_ms", "_e2el_ms"].iter().find_map(|s| key.strip_suffix(s))?;
    match stat {
        "mean" | "median" | "std" => Some(None),
        p => p.strip_prefix('p').and_then(|n| n.parse::<f64>().ok()).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_keys() {
        assert_eq!(latency_key("mean_ttft_ms"), Some(None));
        assert_eq!(latency_key("p99_itl_ms"), Some(Some(99.0)));
        assert_eq!(latency_key("p99.9_e2el_ms"), Some(Some(99.9)));
        assert_eq!(latency_key("ttfts"), None);
        assert_eq!(latency_key("px_ttft_ms"), None);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let v: Value = serde_json::from_str(r#"{"completed": 3, "request_throughput": "fast"}"#).unwrap();
        assert_eq!(read(&v, Path::new("x.json")).unwrap_err(), "field `request_throughput` is not a number: \"fast\"");
        let v: Value = serde_json::from_str(r#"{"request_throughput": 1.0}"#).unwrap();
        assert_eq!(read(&v, Path::new("x.json")).unwrap_err(), "field `completed` is missing");
    }
}
