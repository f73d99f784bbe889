//! Rows of the report for an HTTP target: one per target, and for a fleet one per server beside the fleet's.

use std::collections::BTreeMap;

use super::{LoadResult, Target};
use crate::metrics::{RequestRecord, ServingMetrics, Slo};
use crate::report::{EngineFigures, RuntimeResult, output_digest, tables};

/// The target's rows and their per-request records: the target (for a fleet, every request), then for a fleet each
/// server's share. `settings` describe how it was measured (endpoint, concurrency, ...).
pub fn rows(
    target: &Target,
    load: &LoadResult,
    settings: &BTreeMap<String, String>,
    percentiles: &[f64],
    slo: &Slo,
) -> Vec<(RuntimeResult, Vec<RequestRecord>)> {
    let mut rows = vec![row(&target.name, &load.records, load, target, settings, percentiles, slo)];
    if target.fleet {
        for server in &target.servers {
            let label = server.label();
            let records: Vec<RequestRecord> =
                load.records.iter().filter(|r| r.server.as_deref() == Some(label.as_str())).cloned().collect();
            let name = format!("{}@{label}", target.name);
            let mut settings = settings.clone();
            settings.insert("fleet".into(), target.name.clone());
            rows.push(row(&name, &records, load, target, &settings, percentiles, slo));
        }
    }
    rows
}

fn row(
    name: &str,
    records: &[RequestRecord],
    load: &LoadResult,
    target: &Target,
    settings: &BTreeMap<String, String>,
    percentiles: &[f64],
    slo: &Slo,
) -> (RuntimeResult, Vec<RequestRecord>) {
    let metrics = ServingMetrics::compute(records, percentiles, slo);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.error {
            *failures.entry(e.split(':').next().unwrap_or("other").to_owned()).or_default() += 1;
        }
    }
    let sources: std::collections::BTreeSet<&str> =
        records.iter().filter(|r| r.completed()).map(|r| r.count_source).collect();
    let mut settings = settings.clone();
    settings.insert("output_tokens_from".into(), sources.into_iter().collect::<Vec<_>>().join("+"));
    settings.insert("servers".into(), target.servers.iter().map(|s| s.base_url.as_str()).collect::<Vec<_>>().join(" "));
    if !load.warmup_failures.is_empty() {
        settings.insert("warmup_failures".into(), load.warmup_failures.len().to_string());
    }
    if let Some(cap) = load.connection_cap {
        settings.insert("client_connection_cap".into(), format!("{cap} (this process's open-files limit)"));
    }
    let (status, error) = if load.interrupted {
        ("interrupted", None)
    } else if metrics.completed == 0 {
        let first = records.iter().find_map(|r| r.error.clone()).or_else(|| load.warmup_failures.first().cloned());
        ("failed", Some(format!("no request completed ({})", first.unwrap_or_else(|| "no request was sent".into()))))
    } else {
        ("ok", None)
    };
    let result = RuntimeResult {
        runtime: name.to_owned(),
        version: String::new(),
        device: "HTTP server (client on this machine)".into(),
        dtype: "server".into(),
        settings,
        status: status.into(),
        error,
        metrics: metrics.flat().into_iter().filter(|(_, v)| v.is_finite()).collect(),
        engine: EngineFigures::default(),
        requests_csv: tables::requests_csv_name(name),
        output_digest: output_digest(records),
        repeats: Vec::new(),
        measured: "http".into(),
        failures,
        tool: String::new(),
    };
    (result, records.to_vec())
}
