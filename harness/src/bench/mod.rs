//! A benchmark run as `nano-vllm bench` makes it, without the command line: one workload replayed against several
//! runtimes, one after another under identical engine settings, in rounds (round `i` runs every runtime once, so
//! repeat `i` of every runtime is measured side by side), into one [`Results`].
//!
//! HTTP targets (servers and fleets, [`crate::http`]) are measured in the same rounds after the runtimes, on the
//! same requests, and are rows of the same results (a fleet adds a row per server).
//!
//! A runtime that fails to build or fails mid-run is marked failed with its error and the others go on; a cancel
//! flag (Ctrl-C) stops the run, keeping what completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nano_vllm_engine::Config;
use tokenizers::Tokenizer;

use crate::http::{self, Endpoint, PromptFormat, Target};
use crate::machine::CpuIdentity;
use crate::metrics::Slo;
use crate::replay::{Mode, Progress, ReplayOptions, ResolvedRequest, replay};
use crate::report::{
    self, BundleMeta, EngineFigures, EngineMeta, Records, RepeatedRun, Results, RunMetadata, RuntimeResult,
    SCHEMA_VERSION, WorkloadMeta,
};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};

mod resolve;

pub use resolve::{BenchError, BenchWorkload, MAX_ARRIVAL_S, resolve, workload_hash};

/// How to measure: the same for every runtime of the run.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub runtimes: Vec<RuntimeSpec>,
    pub runtime: RuntimeSettings,
    pub engine: Config,
    pub mode: Mode,
    /// The workload's first `warmup` requests run unmeasured.
    pub warmup: usize,
    /// Rounds: each runtime is measured this many times.
    pub repeat: usize,
    pub percentiles: Vec<f64>,
    pub slo: Slo,
    /// Servers and fleets measured over HTTP, after the runtimes in each round.
    pub targets: Vec<Target>,
    pub http: HttpSettings,
}

/// How HTTP targets are driven.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub endpoint: Endpoint,
    pub prompt_format: PromptFormat,
    /// Cap on requests in flight, for runtimes and targets alike (arrivals then gated by the client).
    pub max_concurrency: Option<usize>,
    pub request_timeout: std::time::Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            endpoint: Endpoint::Completions,
            prompt_format: PromptFormat::Text,
            max_concurrency: None,
            request_timeout: std::time::Duration::from_secs(600),
        }
    }
}

impl HttpSettings {
    /// How an HTTP row was measured, for its `settings`.
    fn describe(&self, target: &Target) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        m.insert("endpoint".into(), format!("/v1{}", self.endpoint.path()));
        m.insert("prompt_format".into(), format!("{:?}", self.prompt_format).to_lowercase());
        m.insert(
            "max_concurrency".into(),
            self.max_concurrency
                .map_or("unlimited (open loop)".into(), |n| format!("{n} (arrivals gated by the client)")),
        );
        m.insert("request_timeout_s".into(), self.request_timeout.as_secs_f64().to_string());
        m.insert(
            "served_model".into(),
            target.servers.iter().map(|s| s.served_model.as_str()).collect::<Vec<_>>().join(" "),
        );
        if target.fleet {
            m.insert("balance".into(), target.balance.as_str().into());
        }
        m
    }
}

/// What a caller sees while a run goes on (progress bars, failure lines).
pub trait BenchEvents {
    /// A runtime's measured replay starts (`label`: the runtime, with `i/n` when repeated); the returned callback
    /// gets (completed, total) after every step.
    fn started(&mut self, _label: &str, _total: usize) -> Option<Progress> {
        None
    }
    /// It ended; `result.error` says why when it failed.
    fn finished(&mut self, _label: &str, _result: &RuntimeResult) {}
}

/// No events.
impl BenchEvents for () {}

/// The run's metadata: machine, model, workload and engine settings.
pub fn metadata(model: &ModelSource, workload: &BenchWorkload, s: &BenchSettings) -> RunMetadata {
    let cpu = CpuIdentity::current();
    let e = &s.engine;
    // One reading of the checkout: the commit in the metadata is the provenance's.
    let provenance = crate::provenance::Provenance::current(s.runtime.threads);
    RunMetadata {
        git_commit: provenance.git_commit.clone(),
        cpu_model: cpu.model_name.clone(),
        cores: cpu.cores,
        cpu: Some(cpu),
        bundle: BundleMeta {
            name: model.name().to_owned(),
            dir: model.path().display().to_string(),
            manifest_sha256: model.digest(),
            model_sha256: model.model_digest(),
        },
        workload: WorkloadMeta {
            source: workload.source.clone(),
            num_requests: workload.requests.len().saturating_sub(s.warmup),
            warmup: s.warmup,
            sha256: workload_hash(&workload.requests),
            seed: workload.seed,
            mode: if s.mode == Mode::Online { "online" } else { "offline" }.into(),
            request_rate: workload.rate,
            burstiness: workload.burstiness,
            max_concurrency: s.http.max_concurrency,
        },
        engine: EngineMeta {
            max_num_seqs: e.max_num_seqs(),
            max_num_batched_tokens: e.max_num_batched_tokens(),
            max_model_len: e.max_model_len(),
            block_size: e.block_size(),
            num_kv_blocks: e.resolve_num_blocks(None).unwrap_or(0),
            prefix_caching: e.enable_prefix_caching(),
            chunked_prefill: e.enable_chunked_prefill(),
        },
        percentiles: s.percentiles.clone(),
        slo: [("ttft_ms", s.slo.ttft_ms), ("tpot_ms", s.slo.tpot_ms), ("e2el_ms", s.slo.e2el_ms)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
        provenance: Some(provenance),
    }
}

/// Measures `workload` on every runtime of `settings`, in rounds. Returns the results (per runtime the median over
/// its repeats, every repeat kept) and the first round's per-request records.
pub fn run(
    model: &ModelSource,
    workload: &BenchWorkload,
    settings: &BenchSettings,
    cancel: &Arc<AtomicBool>,
    events: &mut dyn BenchEvents,
) -> Result<(Results, Records), BenchError> {
    let requests = &workload.requests;
    if settings.warmup >= requests.len() {
        return Err(BenchError::NoMeasuredRequest { warmup: settings.warmup, requests: requests.len() });
    }
    // Online, the replay waits for every arrival (offline ignores them: a trace of epoch timestamps runs).
    if settings.mode == Mode::Online
        && let Some((i, r)) = requests.iter().enumerate().find(|(_, r)| r.arrival_s > MAX_ARRIVAL_S)
    {
        let request = r.id.clone().unwrap_or_else(|| format!("#{i}"));
        return Err(BenchError::ArrivalTooLate { request, arrival_s: r.arrival_s });
    }
    let metadata = metadata(model, workload, settings);
    let names = &settings.runtimes;
    let rounds = settings.repeat.max(1);
    // Rows: one per runtime, then per target (a fleet: the fleet, then each server).
    let target_rows: Vec<usize> =
        settings.targets.iter().map(|t| if t.fleet { 1 + t.servers.len() } else { 1 }).collect();
    let mut repeated: Vec<RepeatedRun> = vec![RepeatedRun::default(); names.len() + target_rows.iter().sum::<usize>()];
    let mut records: Records = Vec::new();
    // HTTP request bodies, made once (the prompt decoded to text needs the model's tokenizer).
    let prepared =
        if settings.targets.is_empty() { Err(String::new()) } else { prepare_http(model, requests, settings) };
    for round in 0..rounds {
        for (k, spec) in names.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) || repeated[k].stopped() {
                continue;
            }
            let name = spec.name();
            let label = if rounds > 1 { format!("{name} {}/{rounds}", round + 1) } else { name.to_owned() };
            let progress = events.started(&label, requests.len() - settings.warmup);
            let options = ReplayOptions {
                mode: settings.mode,
                warmup: settings.warmup,
                cancel: cancel.clone(),
                progress,
                max_concurrency: settings.http.max_concurrency,
            };
            let outcome = registry::build(spec, model, &settings.runtime)
                .map_err(|e| e.to_string())
                .and_then(|rt| replay(rt, settings.engine.clone(), requests, &options).map_err(|e| e.to_string()));
            let result = match outcome {
                Ok(r) => {
                    let mut result = RuntimeResult::from_replay(&r, &settings.percentiles, &settings.slo);
                    // Label runs as requested (`mock:delay-us=300` is not `mock`); file names follow.
                    result.runtime = name.to_owned();
                    result.requests_csv = report::tables::requests_csv_name(name);
                    if round == 0 {
                        records.push((name.to_owned(), r.records));
                    }
                    result
                }
                Err(error) => failed_run(name, error),
            };
            events.finished(&label, &result);
            repeated[k].push(result, round, rounds);
        }
        let mut k = names.len();
        for (target, &n_rows) in settings.targets.iter().zip(&target_rows) {
            let first = k;
            k += n_rows;
            if cancel.load(Ordering::Relaxed) || repeated[first].stopped() {
                continue;
            }
            let name = &target.name;
            let label = if rounds > 1 { format!("{name} {}/{rounds}", round + 1) } else { name.to_owned() };
            let progress = events.started(&label, requests.len() - settings.warmup);
            let options = http::LoadOptions {
                endpoint: settings.http.endpoint,
                mode: settings.mode,
                warmup: settings.warmup,
                max_concurrency: settings.http.max_concurrency,
                request_timeout: settings.http.request_timeout,
                cancel: cancel.clone(),
                progress,
            };
            let outcome = prepared.clone().and_then(|(bodies, tokenizer)| {
                http::load::run(target, &bodies, &tokenizer, &options).map_err(|e| e.to_string())
            });
            match outcome {
                Ok(load) => {
                    let describe = settings.http.describe(target);
                    let rows = http::result::rows(target, &load, &describe, &settings.percentiles, &settings.slo);
                    for (i, (result, recs)) in rows.into_iter().enumerate() {
                        if i == 0 {
                            events.finished(&label, &result);
                        }
                        if round == 0 {
                            records.push((result.runtime.clone(), recs));
                        }
                        repeated[first + i].push(result, round, rounds);
                    }
                }
                Err(error) => {
                    let mut result = failed_run(name, error);
                    result.measured = "http".into();
                    events.finished(&label, &result);
                    repeated[first].push(result, round, rounds);
                }
            }
        }
    }
    let results = Results {
        schema_version: SCHEMA_VERSION,
        created_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        metadata,
        runs: repeated.into_iter().filter_map(RepeatedRun::finish).collect(),
        quality: None,
    };
    Ok((results, records))
}

/// Request bodies for the HTTP targets and the tokenizer that counts their output; the error fails every target.
fn prepare_http(
    model: &ModelSource,
    requests: &[ResolvedRequest],
    settings: &BenchSettings,
) -> Result<(Vec<http::PreparedRequest>, Tokenizer), String> {
    let tokenizer = model.tokenizer().map_err(|e| format!("HTTP targets need the model's tokenizer: {e}"))?;
    let h = &settings.http;
    let bodies = requests
        .iter()
        .map(|r| http::prepare(r, h.endpoint, h.prompt_format, &tokenizer, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((bodies, tokenizer))
}

/// The result of a runtime that did not run.
pub fn failed_run(name: &str, error: String) -> RuntimeResult {
    RuntimeResult {
        runtime: name.to_owned(),
        version: String::new(),
        device: String::new(),
        dtype: String::new(),
        settings: Default::default(),
        status: "failed".into(),
        error: Some(error),
        metrics: Default::default(),
        engine: EngineFigures::default(),
        requests_csv: String::new(),
        output_digest: String::new(),
        repeats: Vec::new(),
        measured: "in-process".into(),
        failures: Default::default(),
        tool: String::new(),
    }
}

#[cfg(test)]
mod tests;
