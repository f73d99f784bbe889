//! `nano-vllm bench`: a workload replayed against one or more runtimes, one after another under identical engine
//! settings, with reports written to a run directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use nano_vllm_bundle::{Bundle, HfConfig};
use nano_vllm_engine::Config;
use nano_vllm_harness::metrics::{Slo, format_percentile};
use nano_vllm_harness::registry::{self, RuntimeSettings};
use nano_vllm_harness::replay::{Mode, Progress, ReplayOptions, ResolvedRequest, replay};
use nano_vllm_harness::report::{
    self, BundleMeta, EngineMeta, Records, RepeatedRun, Results, RunMetadata, RuntimeResult, SCHEMA_VERSION,
    WorkloadMeta,
};
use nano_vllm_harness::workload::{Prompt, Workload, read_trace};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::workload_cmd::WorkloadSpecArgs;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A model bundle directory.
    #[arg(long, default_value = "fixtures/tiny-llama")]
    bundle: PathBuf,
    /// Runtimes, comma-separated, or `all` (every compiled-in runtime but mock).
    #[arg(long, default_value = "all")]
    runtime: String,
    /// A JSONL trace; without it a synthetic workload is generated (see the workload options).
    #[arg(long)]
    workload: Option<PathBuf>,
    #[command(flatten)]
    spec: WorkloadSpecArgs,
    /// offline: every request at t=0 (maximum throughput); online: released at their arrival times.
    #[arg(long, value_enum, default_value_t = ModeArg::Offline)]
    mode: ModeArg,
    /// Run the synthetic workload at each of these request rates (online), e.g. 2,4,8.
    #[arg(long, value_delimiter = ',')]
    rate_sweep: Vec<f64>,
    /// Unmeasured requests first (the workload's first N).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Goodput SLOs, e.g. ttft=200ms,tpot=50ms.
    #[arg(long, default_value = "")]
    slo: Slo,
    #[arg(long, value_delimiter = ',', default_value = "50,90,99")]
    percentiles: Vec<f64>,
    /// Run directory (default: reports/runs/<unix time>-<bundle>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure every runtime N times in rounds (round i runs each runtime once, so repeats are measured side by
    /// side); metrics are each metric's median over the repeats, every repeat is kept in results.json.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Ratios in the comparison table are against this runtime (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Offline,
    Online,
}

/// Engine settings, identical for every runtime of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[arg(long, default_value_t = 16)]
    max_num_seqs: usize,
    #[arg(long, default_value_t = 512)]
    max_num_batched_tokens: usize,
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// KV blocks (default: enough for max_num_seqs sequences of the full context).
    #[arg(long)]
    kv_blocks: Option<usize>,
    #[arg(long)]
    no_prefix_caching: bool,
    #[arg(long)]
    no_chunked_prefill: bool,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub(crate) fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// Tokenizes text prompts and checks every request against the model's limits, naming the request.
fn resolve(
    workload: &Workload,
    tokenizer: &Tokenizer,
    vocab: usize,
    context: usize,
) -> anyhow::Result<Vec<ResolvedRequest>> {
    workload
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r.id.clone().unwrap_or_else(|| format!("#{i}"));
            let prompt = match r.prompt() {
                Prompt::Ids(ids) => ids,
                Prompt::Text(t) => tokenizer
                    .encode(t.as_str(), false)
                    .map_err(|e| anyhow::anyhow!("request {name}: {e}"))?
                    .get_ids()
                    .to_vec(),
            };
            if prompt.is_empty() {
                bail!("request {name}: the prompt is empty");
            }
            if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
                bail!("request {name}: token id {t} is outside the vocabulary ({vocab})");
            }
            if prompt.len() + r.max_tokens > context {
                bail!(
                    "request {name}: prompt ({} tokens) + max_tokens ({}) exceeds the model's context ({context})",
                    prompt.len(),
                    r.max_tokens
                );
            }
            Ok(ResolvedRequest { id: r.id.clone(), arrival_s: r.arrival_s, prompt, params: r.sampling_params() })
        })
        .collect()
}

fn workload_hash(requests: &[ResolvedRequest]) -> String {
    let mut h = Sha256::new();
    for r in requests {
        h.update(format!("{}|{:?}|{:?}\n", r.arrival_s, r.prompt, r.params).as_bytes());
    }
    hex::encode(h.finalize())
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    let bundle = Bundle::open(&a.bundle).with_context(|| format!("opening bundle {}", a.bundle.display()))?;
    let hf = HfConfig::from_dir(bundle.hf_dir())?;
    let tokenizer = Tokenizer::from_file(bundle.tokenizer_json())
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.tokenizer_json().display()))?;
    let runtimes: Vec<String> = if a.runtime == "all" {
        registry::available().into_iter().filter(|r| *r != "mock").map(str::to_owned).collect()
    } else {
        a.runtime.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    };
    if runtimes.is_empty() {
        bail!("no runtime to run (--runtime)");
    }
    for r in &runtimes {
        if !registry::available().contains(&r.as_str()) && !r.contains(':') {
            // Same message as building it would give.
            registry::build(r, &bundle, &RuntimeSettings::default())?;
        }
    }
    let context = bundle.config().context_length;
    let vocab = bundle.config().vocab_size;
    let e = &a.engine;
    let num_kv_blocks = e.kv_blocks.unwrap_or(e.max_num_seqs * context.div_ceil(e.block_size));
    let config = Config::builder()
        .max_num_seqs(e.max_num_seqs)
        .max_num_batched_tokens(e.max_num_batched_tokens)
        .max_model_len(context)
        .block_size(e.block_size)
        .num_kv_blocks(num_kv_blocks)
        .eos_token_ids(hf.eos_token_ids.clone())
        .enable_prefix_caching(!e.no_prefix_caching)
        .enable_chunked_prefill(!e.no_chunked_prefill)
        .build()
        .context("engine settings")?;

    // One workload per rate (the sweep), or the one given.
    let count = |t: &str| tokenizer.encode(t, false).map(|e| e.len()).map_err(|e| e.to_string());
    let mut plans: Vec<(Option<f64>, Workload, String)> = Vec::new();
    if let Some(path) = &a.workload {
        if !a.rate_sweep.is_empty() {
            bail!("--rate-sweep needs a synthetic workload (drop --workload)");
        }
        plans.push((None, read_trace(path)?, path.display().to_string()));
    } else if a.rate_sweep.is_empty() {
        let rate = if a.mode == ModeArg::Online { a.spec.rate } else { f64::INFINITY };
        let rate_meta = rate.is_finite().then_some(rate);
        plans.push((rate_meta, a.spec.build(rate, vocab, context, count)?, "synthetic".into()));
    } else {
        for &rate in &a.rate_sweep {
            plans.push((Some(rate), a.spec.build(rate, vocab, context, count)?, format!("synthetic@{rate}")));
        }
    }
    let mode = if a.mode == ModeArg::Online || !a.rate_sweep.is_empty() { Mode::Online } else { Mode::Offline };

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second Ctrl-C while results are written still exits via the default handler only after this returns.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let out_dir = a.out.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("reports/runs").join(format!("{now}-{}", bundle.name()))
    });
    let mut all_results = Vec::new();
    let mut all_records: Vec<Records> = Vec::new();
    for (rate, workload, source) in &plans {
        let requests = resolve(workload, &tokenizer, vocab, context)?;
        if a.warmup >= requests.len() {
            bail!("--warmup {} leaves no measured request of {}", a.warmup, requests.len());
        }
        let metadata = RunMetadata {
            git_commit: git_commit(),
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            bundle: BundleMeta {
                name: bundle.name().to_owned(),
                dir: bundle.dir().display().to_string(),
                manifest_sha256: bundle.manifest_sha256().to_owned(),
            },
            workload: WorkloadMeta {
                source: source.clone(),
                num_requests: requests.len() - a.warmup,
                warmup: a.warmup,
                sha256: workload_hash(&requests),
                seed: a.workload.is_none().then_some(a.spec.seed),
                mode: if mode == Mode::Online { "online" } else { "offline" }.into(),
                request_rate: *rate,
                burstiness: rate.map(|_| a.spec.burstiness),
            },
            engine: EngineMeta {
                max_num_seqs: e.max_num_seqs,
                max_num_batched_tokens: e.max_num_batched_tokens,
                max_model_len: context,
                block_size: e.block_size,
                num_kv_blocks,
                prefix_caching: !e.no_prefix_caching,
                chunked_prefill: !e.no_chunked_prefill,
            },
            percentiles: a.percentiles.clone(),
            slo: [("ttft_ms", a.slo.ttft_ms), ("tpot_ms", a.slo.tpot_ms), ("e2el_ms", a.slo.e2el_ms)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        };
        // Rounds: each runs every runtime once, so repeat i of every runtime is measured side by side.
        let mut repeated: Vec<RepeatedRun> = vec![RepeatedRun::default(); runtimes.len()];
        let mut records: Records = Vec::new();
        let rounds = a.repeat as usize;
        for round in 0..rounds {
            for (k, name) in runtimes.iter().enumerate() {
                if cancel.load(Ordering::Relaxed) || repeated[k].stopped() {
                    continue;
                }
                let label = if a.repeat > 1 { format!("{name} {}/{}", round + 1, a.repeat) } else { name.clone() };
                let bar = (!a.quiet).then(|| {
                    let bar = indicatif::ProgressBar::new((requests.len() - a.warmup) as u64);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{prefix:>14} {bar:30} {pos}/{len} requests {elapsed}")
                            .expect("template"),
                    );
                    bar.set_prefix(label.clone());
                    bar
                });
                let progress = bar.clone().map(|b| Progress(Arc::new(move |done, _| b.set_position(done as u64))));
                let options = ReplayOptions { mode, warmup: a.warmup, cancel: cancel.clone(), progress };
                let settings = RuntimeSettings { threads: e.threads };
                let outcome = registry::build(name, &bundle, &settings)
                    .map_err(|e| e.to_string())
                    .and_then(|rt| replay(rt, config.clone(), &requests, &options).map_err(|e| e.to_string()));
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                let result = match outcome {
                    Ok(r) => {
                        let mut result = RuntimeResult::from_replay(&r, &a.percentiles, &a.slo);
                        // Label runs as requested (`mock:delay-us=300` is not `mock`); file names follow.
                        result.runtime = name.clone();
                        result.requests_csv = report::tables::requests_csv_name(name);
                        if round == 0 {
                            records.push((name.clone(), r.records));
                        }
                        result
                    }
                    Err(err) => failed_run(name, err),
                };
                if let Some(err) = &result.error {
                    eprintln!("{label}: failed: {err}");
                }
                repeated[k].push(result, round, rounds);
            }
        }
        let runs: Vec<RuntimeResult> = repeated.into_iter().filter_map(RepeatedRun::finish).collect();
        let results = Results {
            schema_version: SCHEMA_VERSION,
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            metadata,
            runs,
        };
        let dir = if plans.len() == 1 {
            out_dir.clone()
        } else {
            out_dir.join(format!("rate-{}", rate.map_or("inf".into(), |r| r.to_string())))
        };
        report::write_run_dir(&dir, &results, &records)?;
        all_results.push(results);
        all_records.push(records);
        if cancel.load(Ordering::Relaxed) {
            break;
        }
    }
    let html = report::write_comparison(&out_dir, &all_results, &all_records, a.baseline.as_deref())?;
    print!("{}", report::markdown::comparison(&all_results, a.baseline.as_deref()));
    println!(
        "percentiles: {}; reports in {}; HTML: {}",
        a.percentiles.iter().map(|p| format_percentile(*p)).collect::<Vec<_>>().join(", "),
        out_dir.display(),
        html.display()
    );
    if cancel.load(Ordering::Relaxed) {
        bail!("interrupted: partial results written to {}", out_dir.display());
    }
    if all_results.iter().flat_map(|r| &r.runs).any(|r| r.status == "failed") {
        bail!("a runtime failed (see the report)");
    }
    Ok(())
}

fn failed_run(name: &str, error: String) -> RuntimeResult {
    RuntimeResult {
        runtime: name.to_owned(),
        version: String::new(),
        device: String::new(),
        dtype: String::new(),
        settings: Default::default(),
        status: "failed".into(),
        error: Some(error),
        metrics: Default::default(),
        engine: report::EngineFigures::default(),
        requests_csv: String::new(),
        output_digest: String::new(),
        repeats: Vec::new(),
    }
}

/// `nano-vllm report`: a comparison over existing run directories.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directories (each with a results.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write summary.csv, report.md and report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    baseline: Option<String>,
}

pub fn report_cmd(a: &ReportArgs) -> anyhow::Result<()> {
    let results =
        a.runs.iter().map(|d| report::read_results(&d.join("results.json"))).collect::<Result<Vec<_>, _>>()?;
    let html = report::write_comparison(&a.out, &results, &[], a.baseline.as_deref())?;
    print!("{}", report::markdown::comparison(&results, a.baseline.as_deref()));
    println!("HTML: {}", html.display());
    Ok(())
}
