//! `results.json`, schema version 1. Fields are added, never renamed, within a version; a reader refuses another
//! version. Metrics use vLLM's flat keys (`mean_ttft_ms`, `p99_itl_ms`, `output_throughput`, ...); a metric that is
//! undefined for a run (e.g. TPOT when every request made one token) is absent.
//!
//! ```text
//! { "schema_version": 1, "created_unix_s": 1795000000,
//!   "metadata": { "git_commit", "cpu_model", "cores", "cpu": {vendor, model_name, family, model, stepping, simd,
//!                 caches_kib, cores}, "bundle": {name, dir, manifest_sha256, model_sha256},
//!                 "workload": {source, num_requests, warmup, sha256, seed, mode, request_rate, burstiness,
//!                              max_concurrency},
//!                 "engine": {max_num_seqs, max_num_batched_tokens, max_model_len, block_size, num_kv_blocks,
//!                            prefix_caching, chunked_prefill},
//!                 "percentiles": [50, 90, 99], "slo": {ttft_ms, tpot_ms, e2el_ms} },
//!   "runs": [ { "runtime", "version", "device", "dtype", "settings": {..}, "status": "ok" | "failed" | "interrupted",
//!               "error", "metrics": {..}, "engine": {steps, preemptions, prefix_hit_tokens, admitted_prompt_tokens,
//!               prefix_hit_rate, peak_kv_blocks, num_kv_blocks, mean_batch_seqs, schedule_ms, runtime_ms,
//!               postprocess_ms, kv_blocks_timeline: [[t_s, blocks], ...]}, "requests_csv",
//!               "output_digest", "repeats": [ {metrics, steps, preemptions, prefix_hit_tokens, output_digest} ],
//!               "measured": "in-process" | "http", "failures": {kind: count}, "tool" } ],
//!   "metadata.provenance": {nano_vllm_version, git_commit, git_dirty, rustc, profile, opt_level, target, rustflags,
//!                           target_features, cargo_features, libraries, os, kernel, threads_requested,
//!                           cores_available, env} }
//! ```
//!
//! A repeated run (`nano-vllm bench --repeat N`) measures the runtimes in rounds (each round runs every runtime once,
//! so repeat `i` of every runtime was measured side by side); `metrics` are then each metric's median over the
//! repeats, `repeats` keeps every repeat, and `engine` and the per-request CSV are the first repeat's.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ReportError;
use super::repeats::Repeat;
use crate::metrics::ServingMetrics;
use crate::replay::ReplayResult;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub created_unix_s: u64,
    pub metadata: RunMetadata,
    pub runs: Vec<RuntimeResult>,
    /// The quality run joined to this one (`bench --quality`), whole: speed and quality in one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::quality::QualityReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    pub git_commit: Option<String>,
    pub cpu_model: String,
    pub cores: usize,
    /// The CPU in detail (absent in files written before it existed): timing figures compare only between runs
    /// whose CPUs have the same fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::machine::CpuIdentity>,
    pub bundle: BundleMeta,
    pub workload: WorkloadMeta,
    pub engine: EngineMeta,
    pub percentiles: Vec<f64>,
    pub slo: BTreeMap<String, f64>,
    /// How, where and from what the run was made (absent in files written before it existed, and in imports of
    /// other tools' results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::provenance::Provenance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    pub name: String,
    pub dir: String,
    pub manifest_sha256: String,
    /// A bundle's files alone (`Bundle::model_sha256`); absent in runs written before it and for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

impl BundleMeta {
    /// Whether two runs ran the same model: the same files where both runs know them (a manifest whose
    /// tolerances were re-derived is the same model), else the same manifest.
    pub fn same_model(&self, other: &Self) -> bool {
        match (&self.model_sha256, &other.model_sha256) {
            (Some(a), Some(b)) => a == b,
            _ => self.manifest_sha256 == other.manifest_sha256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadMeta {
    pub source: String,
    pub num_requests: usize,
    pub warmup: usize,
    /// sha256 of the resolved requests (token ids, arrivals, parameters): equal hashes, same workload.
    pub sha256: String,
    pub seed: Option<u64>,
    pub mode: String,
    pub request_rate: Option<f64>,
    pub burstiness: Option<f64>,
    /// `--max-concurrency`: at most this many requests in flight per row, arrivals gated by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineMeta {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub block_size: usize,
    pub num_kv_blocks: usize,
    pub prefix_caching: bool,
    pub chunked_prefill: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineFigures {
    pub steps: usize,
    pub preemptions: usize,
    pub prefix_hit_tokens: usize,
    pub admitted_prompt_tokens: usize,
    pub prefix_hit_rate: f64,
    pub peak_kv_blocks: usize,
    pub num_kv_blocks: usize,
    pub mean_batch_seqs: f64,
    pub schedule_ms: f64,
    pub runtime_ms: f64,
    pub postprocess_ms: f64,
    /// KV blocks in use over time, at most 200 points.
    pub kv_blocks_timeline: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeResult {
    pub runtime: String,
    pub version: String,
    pub device: String,
    pub dtype: String,
    pub settings: BTreeMap<String, String>,
    pub status: String,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub engine: EngineFigures,
    pub requests_csv: String,
    /// xxh64 (16 hex digits) of every measured request's output token ids, in workload order: equal digests, the
    /// same tokens. Empty in files written before it existed.
    #[serde(default)]
    pub output_digest: String,
    /// Every repeat of a repeated run, in round order (empty for a single run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<Repeat>,
    /// `in-process` (a runtime driven by this harness's engine) or `http` (a server measured over HTTP by a client
    /// on this machine); empty in files written before it existed (in-process).
    #[serde(default)]
    pub measured: String,
    /// Failed requests by kind (`timeout`, `http_500`, `dropped_stream`, `malformed_chunk`, ...); HTTP targets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, usize>,
    /// The tool that measured this row when it was imported from another tool's results (`vllm bench serve`,
    /// `llama-bench`, `guidellm`); empty for this harness's own rows.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool: String,
}

/// The digest of [`RuntimeResult::output_digest`]: per request its index, its number of tokens, and its ids.
pub fn output_digest(records: &[crate::metrics::RequestRecord]) -> String {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for r in records {
        h.update(&(r.index as u64).to_le_bytes());
        h.update(&(r.output_token_ids.len() as u64).to_le_bytes());
        for id in &r.output_token_ids {
            h.update(&id.to_le_bytes());
        }
    }
    format!("{:016x}", h.digest())
}

impl RuntimeResult {
    /// A run's result; metrics over the measured requests.
    pub fn from_replay(r: &ReplayResult, percentiles: &[f64], slo: &crate::metrics::Slo) -> Self {
        let m = ServingMetrics::compute(&r.records, percentiles, slo);
        let s = &r.steps;
        let sum = |f: fn(&crate::replay::StepRecord) -> f64| s.iter().map(f).sum::<f64>();
        let (hits, admitted) = (
            s.iter().map(|x| x.prefix_hit_tokens).sum::<usize>(),
            s.iter().map(|x| x.admitted_prompt_tokens).sum::<usize>(),
        );
        let stride = s.len().div_ceil(200).max(1);
        let status = if r.error.is_some() {
            "failed"
        } else if r.interrupted {
            "interrupted"
        } else {
            "ok"
        };
        Self {
            runtime: r.runtime.name.clone(),
            version: r.runtime.version.clone(),
            device: r.runtime.device.clone(),
            dtype: r.runtime.dtype.clone(),
            settings: r.runtime.settings.iter().cloned().collect(),
            status: status.into(),
            error: r.error.clone(),
            metrics: m.flat().into_iter().filter(|(_, v)| v.is_finite()).collect(),
            engine: EngineFigures {
                steps: s.len(),
                preemptions: s.iter().map(|x| x.num_preemptions).sum(),
                prefix_hit_tokens: hits,
                admitted_prompt_tokens: admitted,
                prefix_hit_rate: if admitted == 0 { 0.0 } else { hits as f64 / admitted as f64 },
                peak_kv_blocks: s.iter().map(|x| x.kv_blocks_used).max().unwrap_or(0),
                num_kv_blocks: r.num_kv_blocks,
                mean_batch_seqs: if s.is_empty() {
                    0.0
                } else {
                    s.iter().map(|x| x.num_seqs).sum::<usize>() as f64 / s.len() as f64
                },
                schedule_ms: sum(|x| x.schedule_ms),
                runtime_ms: sum(|x| x.runtime_ms),
                postprocess_ms: sum(|x| x.postprocess_ms),
                kv_blocks_timeline: s.iter().step_by(stride).map(|x| [x.t_s, x.kv_blocks_used as f64]).collect(),
            },
            requests_csv: super::tables::requests_csv_name(&r.runtime.name),
            output_digest: output_digest(&r.records),
            repeats: Vec::new(),
            measured: "in-process".into(),
            failures: BTreeMap::new(),
            tool: String::new(),
        }
    }

    /// Measured over HTTP (a server), not in process.
    pub fn is_http(&self) -> bool {
        self.measured == "http"
    }

    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }
}

/// Reads a `results.json`, refusing another schema version.
pub fn read_results(path: &Path) -> Result<Results, ReportError> {
    let bytes = std::fs::read(path).map_err(|source| ReportError::Io { path: path.into(), source })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ReportError::Format { path: path.into(), message: format!("not JSON: {e}") })?;
    match v.get("schema_version").and_then(|x| x.as_u64()) {
        Some(n) if n == SCHEMA_VERSION as u64 => {}
        other => {
            return Err(ReportError::Format {
                path: path.into(),
                message: format!("schema_version {other:?} is not supported (this build reads {SCHEMA_VERSION})"),
            });
        }
    }
    serde_json::from_value(v).map_err(|e| ReportError::Format { path: path.into(), message: e.to_string() })
}
