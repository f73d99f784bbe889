//! CSV tables: one row per request of a runtime, and one row per runtime x workload.

use crate::metrics::RequestRecord;

use super::Results;

/// `requests_<runtime>.csv`, with characters other than letters, digits, `-` and `_` replaced by `_`.
pub fn requests_csv_name(runtime: &str) -> String {
    let safe: String =
        runtime.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("requests_{safe}.csv")
}

/// Per-request rows: timings in ms; ITLs joined by `;`; where the output token count came from (`engine`, the
/// server's `usage`, or the model's `tokenizer`), the server that answered (fleets) and why a request failed.
pub fn requests_csv(records: &[RequestRecord]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "index",
        "id",
        "prompt_tokens",
        "output_tokens",
        "cached_tokens",
        "preemptions",
        "arrival_s",
        "ttft_ms",
        "tpot_ms",
        "e2el_ms",
        "finish_reason",
        "itl_ms",
        "output_tokens_from",
        "server",
        "error",
    ];
    w.write_record(header).expect("writing to memory");
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    for r in records {
        let itl: Vec<String> = r.itl_ms().map(|x| format!("{x:.4}")).collect();
        w.write_record([
            r.index.to_string(),
            r.id.clone().unwrap_or_default(),
            r.prompt_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cached_tokens.to_string(),
            r.preemptions.to_string(),
            format!("{:.6}", r.arrival_s),
            opt(r.ttft_ms()),
            opt(r.tpot_ms()),
            opt(r.e2el_ms()),
            r.finish_reason.clone(),
            itl.join(";"),
            r.count_source.to_owned(),
            r.server.clone().unwrap_or_default(),
            r.error.clone().unwrap_or_default(),
        ])
        .expect("writing to memory");
    }
    w.into_inner().expect("in memory")
}

/// The summary columns, in order.
pub const SUMMARY_METRICS: [&str; 14] = [
    "completed",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "request_goodput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
];

/// One row per runtime x workload, over one or more runs.
pub fn summary_csv(results: &[Results]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["workload", "mode", "bundle", "runtime", "dtype", "status"];
    header.extend(SUMMARY_METRICS);
    header.extend(["preemptions", "prefix_hit_rate", "peak_kv_blocks"]);
    w.write_record(&header).expect("writing to memory");
    for res in results {
        for run in &res.runs {
            let mut row = vec![
                res.metadata.workload.source.clone(),
                res.metadata.workload.mode.clone(),
                res.metadata.bundle.name.clone(),
                run.runtime.clone(),
                run.dtype.clone(),
                run.status.clone(),
            ];
            row.extend(SUMMARY_METRICS.iter().map(|k| run.metric(k).map(|v| format!("{v:.4}")).unwrap_or_default()));
            row.push(run.engine.preemptions.to_string());
            row.push(format!("{:.4}", run.engine.prefix_hit_rate));
            row.push(run.engine.peak_kv_blocks.to_string());
            w.write_record(&row).expect("writing to memory");
        }
    }
    w.into_inner().expect("in memory")
}
