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

use nano_vllm_engine::{Config, SamplingParams};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::http::{self, Endpoint, PromptFormat, Target};
use crate::machine::CpuIdentity;
use crate::metrics::Slo;
use crate::replay::{Mode, Progress, ReplayOptions, ResolvedRequest, replay};
use crate::report::{
    self, BundleMeta, EngineFigures, EngineMeta, Records, RepeatedRun, Results, RunMetadata, RuntimeResult,
    SCHEMA_VERSION, WorkloadMeta,
};
use crate::workload::{Prompt, Workload};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};

/// A workload that cannot run on the model; names the request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    #[error("request {request}: cannot tokenize the prompt: {message}")]
    Tokenize { request: String, message: String },
    #[error("request {request}: a text prompt needs the model's tokenizer")]
    NoTokenizer { request: String },
    #[error("request {request}: the prompt is empty")]
    EmptyPrompt { request: String },
    #[error("request {request}: token id {token} is outside the vocabulary ({vocab_size})")]
    TokenOutOfRange { request: String, token: u32, vocab_size: usize },
    #[error(
        "request {request}: prompt ({prompt} tokens) + max_tokens ({max_tokens}) exceeds the model's context ({context})"
    )]
    TooLong { request: String, prompt: usize, max_tokens: usize, context: usize },
    #[error(
        "request {request}: arrives at {arrival_s:.3e} s, beyond the longest run this harness replays ({MAX_ARRIVAL_S} s): \
         a rate or trace in other units?"
    )]
    ArrivalTooLate { request: String, arrival_s: f64 },
    #[error("--warmup {warmup} leaves no measured request of {requests}")]
    NoMeasuredRequest { warmup: usize, requests: usize },
}

/// The latest arrival time a workload may have (about 11.6 days): a replay waits for every arrival, so a rate given
/// in the wrong units (or an arrival time of 1e300) would otherwise wait forever.
pub const MAX_ARRIVAL_S: f64 = 1e6;

/// Tokenizes text prompts (`tokenizer`; a workload of token ids needs none) and checks every request against the
/// model's limits.
pub fn resolve(
    workload: &Workload,
    tokenizer: Option<&Tokenizer>,
    vocab_size: usize,
    context: usize,
) -> Result<Vec<ResolvedRequest>, BenchError> {
    workload
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let request = r.id.clone().unwrap_or_else(|| format!("#{i}"));
            let prompt = match r.prompt() {
                Prompt::Ids(ids) => ids,
                // As a server tokenizes a completion prompt: with the model's special tokens (e.g. BOS).
                Prompt::Text(t) => tokenizer
                    .ok_or_else(|| BenchError::NoTokenizer { request: request.clone() })?
                    .encode(t.as_str(), true)
                    .map_err(|e| BenchError::Tokenize { request: request.clone(), message: e.to_string() })?
                    .get_ids()
                    .to_vec(),
            };
            if prompt.is_empty() {
                return Err(BenchError::EmptyPrompt { request });
            }
            if let Some(&token) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(BenchError::TokenOutOfRange { request, token, vocab_size });
            }
            if prompt.len().saturating_add(r.max_tokens) > context {
                return Err(BenchError::TooLong { request, prompt: prompt.len(), max_tokens: r.max_tokens, context });
            }
            Ok(ResolvedRequest { id: r.id.clone(), arrival_s: r.arrival_s, prompt, params: r.sampling_params() })
        })
        .collect()
}

/// sha256 of the resolved requests (arrivals, token ids, parameters): equal hashes, the same workload.
pub fn workload_hash(requests: &[ResolvedRequest]) -> String {
    let mut h = Sha256::new();
    for r in requests {
        h.update(format!("{}|{:?}|{}\n", r.arrival_s, r.prompt, params_key(&r.params)).as_bytes());
    }
    hex::encode(h.finalize())
}

/// The sampling parameters as the workload hash sees them: the engine's original fields as `Debug` printed them,
/// and fields added since (`min_tokens`, `logprobs`) only when set, so that a workload that does not use them keeps
/// the hash recorded in committed baselines.
fn params_key(p: &SamplingParams) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "SamplingParams {{ temperature: {:?}, top_k: {:?}, top_p: {:?}, max_tokens: {:?}, ignore_eos: {:?}, \
         stop_token_ids: {:?}, seed: {:?}",
        p.temperature, p.top_k, p.top_p, p.max_tokens, p.ignore_eos, p.stop_token_ids, p.seed
    );
    if p.min_tokens != 0 {
        let _ = write!(s, ", min_tokens: {:?}", p.min_tokens);
    }
    if let Some(n) = p.logprobs {
        let _ = write!(s, ", logprobs: {n:?}");
    }
    let _ = write!(s, ", logits: {:?} }}", p.logits);
    s
}

/// One workload to measure: its requests (warm-up first) and where they came from.
#[derive(Debug, Clone)]
pub struct BenchWorkload {
    /// `synthetic`, `synthetic@RATE` or the trace's path.
    pub source: String,
    pub requests: Vec<ResolvedRequest>,
    /// The synthetic workload's seed.
    pub seed: Option<u64>,
    /// Online request rate and burstiness (`None`: offline, or a trace's own timestamps).
    pub rate: Option<f64>,
    pub burstiness: Option<f64>,
}

/// How to measure: the same for every runtime of the run.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub runtimes: Vec<String>,
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
        for (k, name) in names.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) || repeated[k].stopped() {
                continue;
            }
            let label = if rounds > 1 { format!("{name} {}/{rounds}", round + 1) } else { name.clone() };
            let progress = events.started(&label, requests.len() - settings.warmup);
            let options = ReplayOptions {
                mode: settings.mode,
                warmup: settings.warmup,
                cancel: cancel.clone(),
                progress,
                max_concurrency: settings.http.max_concurrency,
            };
            let outcome = registry::build(name, model, &settings.runtime)
                .map_err(|e| e.to_string())
                .and_then(|rt| replay(rt, settings.engine.clone(), requests, &options).map_err(|e| e.to_string()));
            let result = match outcome {
                Ok(r) => {
                    let mut result = RuntimeResult::from_replay(&r, &settings.percentiles, &settings.slo);
                    // Label runs as requested (`mock:delay-us=300` is not `mock`); file names follow.
                    result.runtime = name.clone();
                    result.requests_csv = report::tables::requests_csv_name(name);
                    if round == 0 {
                        records.push((name.clone(), r.records));
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
            let label = if rounds > 1 { format!("{name} {}/{rounds}", round + 1) } else { name.clone() };
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
mod tests {
    use super::*;

    #[test]
    fn the_workload_hash_of_unset_new_parameters_is_the_one_baselines_recorded() {
        let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(16) };
        assert_eq!(
            params_key(&p),
            "SamplingParams { temperature: 0.0, top_k: None, top_p: 1.0, max_tokens: 16, ignore_eos: true, \
             stop_token_ids: [], seed: None, logits: None }"
        );
        let with = SamplingParams { min_tokens: 4, logprobs: Some(2), ..p };
        assert!(params_key(&with).ends_with("seed: None, min_tokens: 4, logprobs: 2, logits: None }"));
    }
    use crate::workload::TraceRequest;

    fn settings(runtimes: &[&str], repeat: usize) -> BenchSettings {
        BenchSettings {
            runtimes: runtimes.iter().map(|s| (*s).to_owned()).collect(),
            runtime: RuntimeSettings::default(),
            engine: Config::builder().max_model_len(256).num_kv_blocks(64).build().unwrap(),
            mode: Mode::Offline,
            warmup: 1,
            repeat,
            percentiles: vec![50.0, 99.0],
            slo: Slo::default(),
            targets: Vec::new(),
            http: HttpSettings::default(),
        }
    }

    fn workload(n: usize) -> BenchWorkload {
        let requests = (0..n)
            .map(|i| TraceRequest::ids(0.0, vec![(i % 50) as u32 + 2; 8], 4))
            .map(|r| ResolvedRequest { id: None, arrival_s: 0.0, prompt: vec![5; 8], params: r.sampling_params() })
            .collect();
        BenchWorkload { source: "test".into(), requests, seed: Some(0), rate: None, burstiness: None }
    }

    #[derive(Default)]
    struct Seen(Vec<String>);
    impl BenchEvents for Seen {
        fn finished(&mut self, label: &str, result: &RuntimeResult) {
            self.0.push(format!("{label}: {}", result.status));
        }
    }

    #[test]
    fn runtimes_run_in_rounds_and_a_failing_one_does_not_stop_the_others() {
        let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
        let mut seen = Seen::default();
        let cancel = Arc::new(AtomicBool::new(false));
        let s = settings(&["mock", "mock:fail-at=2", "nope"], 2);
        let (results, records) = run(&bundle, &workload(6), &s, &cancel, &mut seen).unwrap();
        // The failing mock and the unknown runtime stop after their first round; the good one runs twice.
        assert_eq!(seen.0, ["mock 1/2: ok", "mock:fail-at=2 1/2: failed", "nope 1/2: failed", "mock 2/2: ok"]);
        let statuses: Vec<(&str, &str)> =
            results.runs.iter().map(|r| (r.runtime.as_str(), r.status.as_str())).collect();
        assert_eq!(statuses, [("mock", "ok"), ("mock:fail-at=2", "failed"), ("nope", "failed")]);
        assert_eq!(results.runs[0].repeats.len(), 2);
        assert!(results.runs[2].error.as_deref().unwrap().contains("unknown runtime 'nope'"));
        assert_eq!(results.metadata.workload.num_requests, 5);
        assert!(results.metadata.cpu.as_ref().is_some_and(|c| c.cores >= 1));
        // Per-request records of every runtime that replayed (the failing mock's completed requests are kept).
        let recorded: Vec<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(recorded, ["mock", "mock:fail-at=2"]);
        // A warm-up that leaves nothing to measure is refused up front.
        let err = run(&bundle, &workload(1), &s, &cancel, &mut ()).unwrap_err();
        assert_eq!(err.to_string(), "--warmup 1 leaves no measured request of 1");
    }

    #[test]
    fn a_cancelled_run_measures_nothing_more() {
        let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
        let cancel = Arc::new(AtomicBool::new(true));
        let (results, _) = run(&bundle, &workload(4), &settings(&["mock"], 3), &cancel, &mut ()).unwrap();
        assert!(results.runs.is_empty());
    }

    #[test]
    fn requests_are_checked_against_the_model() {
        let tok = Tokenizer::from_file(nano_vllm_bundle::fixtures_dir().join("tiny-llama/tokenizer.json")).unwrap();
        let w = |r: TraceRequest| Workload::new(vec![r]);
        let tok = Some(&tok);
        let err = resolve(&w(TraceRequest::ids(0.0, vec![600], 4)), tok, 512, 256).unwrap_err();
        assert_eq!(err.to_string(), "request #0: token id 600 is outside the vocabulary (512)");
        let err = resolve(&w(TraceRequest::ids(0.0, vec![5; 250], 8)), tok, 512, 256).unwrap_err();
        assert_eq!(
            err.to_string(),
            "request #0: prompt (250 tokens) + max_tokens (8) exceeds the model's context (256)"
        );
        let err = resolve(&w(TraceRequest::ids(0.0, vec![], 8)), tok, 512, 256).unwrap_err();
        assert_eq!(err.to_string(), "request #0: the prompt is empty");
        assert_eq!(resolve(&w(TraceRequest::ids(0.5, vec![5, 6], 8)), tok, 512, 256).unwrap()[0].prompt, [5, 6]);
    }
}
