//! Run reports: a run directory holding `results.json` (the versioned schema below), one per-request CSV per
//! runtime, `summary.csv` (one row per runtime x workload), `report.md` (a comparison table with ratios against a
//! baseline runtime) and `report.html` (charts). Every file is written atomically: a temporary file, then a rename.

pub mod ab;
mod atomic;
pub mod chart_style;
pub mod html;
pub mod import;
pub mod markdown;
mod repeats;
mod schema;
pub mod speed_quality;
pub mod tables;

pub use atomic::write_atomic;
pub use repeats::{Repeat, RepeatedRun};
pub use schema::{
    BundleMeta, EngineFigures, EngineMeta, Results, RunMetadata, RuntimeResult, SCHEMA_VERSION, WorkloadMeta,
    output_digest, read_results,
};

use std::path::{Path, PathBuf};

/// Why a report could not be written or read; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

/// Per-request records of one run, by runtime.
pub type Records = Vec<(String, Vec<crate::metrics::RequestRecord>)>;

/// Writes a run's `results.json` and per-request CSVs into `dir` (created if needed).
pub fn write_run_dir(dir: &Path, results: &Results, records: &Records) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.into(), source })?;
    for (runtime, recs) in records {
        write_atomic(&dir.join(tables::requests_csv_name(runtime)), &tables::requests_csv(recs))?;
    }
    let path = dir.join("results.json");
    let json = serde_json::to_vec_pretty(results)
        .map_err(|e| ReportError::Format { path: path.clone(), message: e.to_string() })?;
    write_atomic(&path, &json)
}

/// Writes the comparison files over one or more runs into `dir`: `summary.csv`, `report.md`, `report.html`.
/// `records` (per run, may be empty) feed the latency CDFs. Returns the HTML report's path.
pub fn write_comparison(
    dir: &Path,
    results: &[Results],
    records: &[Records],
    baseline: Option<&str>,
    quality: Option<&crate::quality::QualityReport>,
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.into(), source })?;
    write_atomic(&dir.join("summary.csv"), &tables::summary_csv(results))?;
    let mut md = markdown::comparison(results, baseline);
    if let Some(q) = quality {
        md.push('\n');
        md.push_str(&speed_quality::markdown(&speed_quality::join(results, q), q));
        let path = dir.join("quality.json");
        let json = serde_json::to_vec_pretty(q)
            .map_err(|e| ReportError::Format { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, &json)?;
    }
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    let html = dir.join("report.html");
    write_atomic(&html, html::render(results, records, quality).as_bytes())?;
    Ok(html)
}
