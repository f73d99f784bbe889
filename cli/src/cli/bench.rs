//! `nano-vllm bench`: a workload replayed against one or more runtimes, one after another under identical engine
//! settings, with reports written to a run directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use nano_vllm_engine::Config;
use nano_vllm_harness::bench::{self, BenchEvents, BenchSettings, BenchWorkload, HttpSettings};
use nano_vllm_harness::http::{self, Balance, Endpoint, PromptFormat, Target};
use nano_vllm_harness::metrics::{Slo, format_percentile};
use nano_vllm_harness::quality::QualityReport;
use nano_vllm_harness::replay::{Mode, Progress};
use nano_vllm_harness::report::{self, RuntimeResult};
use nano_vllm_harness::workload::read_trace;
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};

use super::workload::WorkloadSpecArgs;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model: a GGUF file, a Hugging Face directory (config.json, safetensors, tokenizer.json) or a bundle
    /// directory. Each runtime loads the file it reads and says which it needs when the model has none.
    #[arg(long, alias = "bundle", default_value = "fixtures/tiny-llama")]
    model: PathBuf,
    /// Runtimes, comma-separated, `none`, or `all`: every compiled-in runtime that can load the model (a bundle: all of
    /// them, and llama-cpp:q8_0; a GGUF: llama-cpp, and native and candle for Llama, Qwen2, Qwen3, Gemma 3, Phi-3,
    /// GPT-2; an HF directory: native, candle, and onnx with model.onnx).
    /// Default: `all`, or none when `--target` is given.
    #[arg(long)]
    runtime: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
    /// A JSONL trace; without it a synthetic workload is generated (see the workload options).
    #[arg(long)]
    workload: Option<PathBuf>,
    #[command(flatten)]
    spec: WorkloadSpecArgs,
    /// offline: every request at t=0 (maximum throughput); online: released at their arrival times.
    #[arg(long, value_enum, default_value_t = ModeArg::Offline)]
    mode: ModeArg,
    /// Run the synthetic workload at each of these request rates (online), e.g. 2,4,8.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    rate_sweep: Vec<f64>,
    /// Unmeasured requests first (the workload's first N).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    warmup: usize,
    /// Goodput SLOs, e.g. ttft=200ms,tpot=50ms.
    #[arg(long, default_value = "")]
    slo: Slo,
    #[arg(long, value_delimiter = ',', default_value = "50,90,99", allow_hyphen_values = true)]
    percentiles: Vec<f64>,
    /// Run directory (default: reports/runs/<unix time>-<bundle>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure every runtime N times in rounds (round i runs each runtime once, so repeats are measured side by
    /// side); metrics are each metric's median over the repeats, every repeat is kept in results.json.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000), allow_negative_numbers = true)]
    repeat: u32,
    /// Ratios in the comparison table are against this runtime (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// A `nano-vllm quality` report (quality.json) of the same model: the reports then show speed beside quality
    /// (perplexity, KL divergence, the Pareto front and its chart), joined by runtime name.
    #[arg(long)]
    quality: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// HTTP targets: OpenAI-compatible servers measured by this client, rows of the same comparison.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// An OpenAI-compatible server, `openai:http://HOST:PORT/v1` (repeatable; each one a row, or with --fleet
    /// the members of one fleet).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The model name each target serves (the request's `model`): one for all targets, or one per target,
    /// comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    served_model: Vec<String>,
    /// Spread the requests across the --target servers as one fleet of this name: a row for the fleet and one per
    /// server.
    #[arg(long)]
    fleet: Option<String>,
    /// How the fleet picks each request's server.
    #[arg(long, value_enum, default_value_t = Balance::RoundRobin)]
    balance: Balance,
    /// The API: completions (`/v1/completions`) or chat (`/v1/chat/completions`).
    #[arg(long, value_enum, default_value_t = Endpoint::Completions)]
    endpoint: Endpoint,
    /// How a completion prompt is sent: text (decoded from the workload's tokens, as `vllm bench serve` does) or
    /// the token ids.
    #[arg(long, value_enum, default_value_t = PromptFormat::Text)]
    prompt_format: PromptFormat,
    /// At most N requests in flight per runtime or target (arrivals are then gated by the client, and TTFT starts
    /// when a request is released, as in `vllm bench serve --max-concurrency`); default: open loop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    max_concurrency: Option<u64>,
    /// Seconds a request may take from its send to its last chunk before it counts as failed (`timeout`).
    #[arg(long, default_value_t = 600.0, allow_hyphen_values = true)]
    request_timeout: f64,
}

impl HttpArgs {
    fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let servers = http::servers(&self.targets, &self.served_model)?;
        if self.targets.is_empty() && (self.fleet.is_some() || !self.served_model.is_empty()) {
            bail!("--fleet and --served-model need --target");
        }
        if !(self.request_timeout.is_finite() && self.request_timeout > 0.0) {
            bail!("--request-timeout must be a positive number of seconds");
        }
        Ok(match &self.fleet {
            Some(name) => vec![Target::fleet(name, servers, self.balance)?],
            None => servers.into_iter().map(Target::single).collect(),
        })
    }

    fn settings(&self) -> HttpSettings {
        HttpSettings {
            endpoint: self.endpoint,
            prompt_format: self.prompt_format,
            max_concurrency: self.max_concurrency.map(|n| n as usize),
            request_timeout: std::time::Duration::from_secs_f64(self.request_timeout),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Offline,
    Online,
}

/// Engine settings, identical for every runtime of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[arg(long, default_value_t = 16, value_parser = |s: &str| super::bounded(s, 1, 1 << 16), allow_negative_numbers = true)]
    pub(super) max_num_seqs: usize,
    #[arg(long, default_value_t = 512, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    pub(super) max_num_batched_tokens: usize,
    #[arg(long, default_value_t = 16, value_parser = |s: &str| super::bounded(s, 1, 1024), allow_negative_numbers = true)]
    pub(super) block_size: usize,
    /// KV blocks (default: enough for max_num_seqs sequences of max_model_len).
    #[arg(long, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    pub(super) kv_blocks: Option<usize>,
    /// Longest sequence (prompt + output) the engine admits (default: the workload's longest request; at most the
    /// model's context). Runtimes size per-sequence caches from it.
    #[arg(long, value_parser = |s: &str| super::bounded(s, 1, 1 << 27), allow_negative_numbers = true)]
    pub(super) max_model_len: Option<usize>,
    #[arg(long)]
    pub(super) no_prefix_caching: bool,
    #[arg(long)]
    pub(super) no_chunked_prefill: bool,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::thread_count, allow_negative_numbers = true)]
    pub(super) threads: usize,
}

/// Progress bars (unless quiet) and a line for each failed runtime.
struct Bars {
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl BenchEvents for Bars {
    fn started(&mut self, label: &str, total: usize) -> Option<Progress> {
        if self.quiet {
            return None;
        }
        // Where no bar can be drawn (a log, a pipe), one line says what is being measured now.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("{label}: measuring {total} requests");
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>14} {bar:30} {pos}/{len} requests {elapsed}")
                .expect("template"),
        );
        bar.set_prefix(label.to_owned());
        self.bar = Some(bar.clone());
        Some(Progress(Arc::new(move |done, _| bar.set_position(done as u64))))
    }

    fn finished(&mut self, label: &str, result: &RuntimeResult) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(err) = &result.error {
            eprintln!("{label}: failed: {err}");
        }
    }
}

impl EngineArgs {
    /// The engine configuration for `max_model_len`-token sequences.
    pub(super) fn config(&self, max_model_len: usize, eos_token_ids: Vec<u32>) -> anyhow::Result<Config> {
        let num_kv_blocks =
            self.kv_blocks.unwrap_or(self.max_num_seqs * max_model_len.div_ceil(self.block_size.max(1)));
        Config::builder()
            .max_num_seqs(self.max_num_seqs)
            .max_num_batched_tokens(self.max_num_batched_tokens)
            .max_model_len(max_model_len)
            .block_size(self.block_size)
            .num_kv_blocks(num_kv_blocks)
            .eos_token_ids(eos_token_ids)
            .enable_prefix_caching(!self.no_prefix_caching)
            .enable_chunked_prefill(!self.no_chunked_prefill)
            .build()
            .context("engine settings")
    }
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    if let Some(p) = a.percentiles.iter().find(|p| !(p.is_finite() && **p > 0.0 && **p <= 100.0)) {
        bail!("--percentiles: {p} is not a percentile (0 < p <= 100)");
    }
    let model = ModelSource::open(&a.model)?;
    // A bundle's identity in results.json (and the gate's) is its manifest's hash: the files must be the ones the
    // manifest lists, or the run would be filed under a model it did not measure.
    if let Some(bundle) = model.bundle() {
        bundle
            .verify()
            .with_context(|| format!("{}: the bundle's files do not match its manifest", bundle.dir().display()))?;
    }
    let tokenizer = model.tokenizer()?;
    let targets = a.http.targets()?;
    let runtime_spec =
        a.runtime.clone().unwrap_or_else(|| if targets.is_empty() { "all".into() } else { "none".into() });
    let runtimes = if runtime_spec == "none" {
        Vec::new()
    } else {
        registry::runtime_list(&runtime_spec, &registry::default_runtimes_for(&model))?
    };
    if runtimes.is_empty() && targets.is_empty() {
        bail!("nothing to measure: --runtime none and no --target");
    }
    // A baseline that is not one of the rows would silently compare against the first row instead.
    if let Some(b) = &a.baseline {
        let rows: Vec<String> = runtimes
            .iter()
            .map(|r| r.name().to_owned())
            .chain(targets.iter().flat_map(|t| {
                let servers = t.servers.iter().filter(|_| t.fleet).map(move |s| format!("{}@{}", t.name, s.label()));
                std::iter::once(t.name.clone()).chain(servers)
            }))
            .collect();
        if !rows.contains(b) {
            bail!("--baseline {b} is not one of the rows this run measures ({})", rows.join(", "));
        }
    }
    // Arrivals are online only: in offline mode every request is sent at t = 0, so a rate would be ignored.
    if a.mode != ModeArg::Online
        && a.rate_sweep.is_empty()
        && (a.spec.rate != f64::INFINITY || a.spec.burstiness != 1.0)
    {
        bail!(
            "--rate and --burstiness set arrivals, which only --mode online has (offline sends every request at t = 0): \
             add --mode online, or drop them"
        );
    }
    let info = model.info().clone();
    let (context, vocab) = (info.context_length, info.vocab_size);

    // One workload per rate (the sweep), or the one given.
    let count = |t: &str| tokenizer.encode(t, false).map(|e| e.len()).map_err(|e| e.to_string());
    let online = a.mode == ModeArg::Online;
    let mut workloads: Vec<BenchWorkload> = Vec::new();
    let synthetic = |rate: f64, source: String| -> anyhow::Result<BenchWorkload> {
        let requests = bench::resolve(&a.spec.build(rate, vocab, context, count)?, Some(&tokenizer), vocab, context)?;
        let rate = rate.is_finite().then_some(rate);
        Ok(BenchWorkload {
            source,
            requests,
            seed: Some(a.spec.seed),
            rate,
            burstiness: rate.map(|_| a.spec.burstiness),
        })
    };
    if let Some(path) = &a.workload {
        if !a.rate_sweep.is_empty() {
            bail!("--rate-sweep needs a synthetic workload (drop --workload)");
        }
        let requests = bench::resolve(&read_trace(path)?, Some(&tokenizer), vocab, context)?;
        workloads.push(BenchWorkload {
            source: path.display().to_string(),
            requests,
            seed: None,
            rate: None,
            burstiness: None,
        });
    } else if a.rate_sweep.is_empty() {
        workloads.push(synthetic(if online { a.spec.rate } else { f64::INFINITY }, "synthetic".into())?);
    } else {
        for &rate in &a.rate_sweep {
            workloads.push(synthetic(rate, format!("synthetic@{rate}"))?);
        }
    }
    let longest =
        workloads.iter().flat_map(|w| &w.requests).map(|r| r.prompt.len() + r.params.max_tokens).max().unwrap_or(1);
    let max_model_len = match a.engine.max_model_len {
        Some(n) if n > context => bail!("--max-model-len {n} exceeds the model's context ({context})"),
        Some(n) if n < longest => {
            bail!("--max-model-len {n} is shorter than the workload's longest request ({longest} tokens)")
        }
        Some(n) => n,
        None => longest.next_multiple_of(a.engine.block_size.max(1)).min(context),
    };
    let config = a.engine.config(max_model_len, info.eos_token_ids.clone())?;
    let settings = BenchSettings {
        runtimes,
        runtime: RuntimeSettings {
            threads: a.engine.threads,
            max_model_len: Some(max_model_len),
            max_num_seqs: Some(config.max_num_seqs()),
            max_num_batched_tokens: Some(config.max_num_batched_tokens()),
        },
        engine: config,
        mode: if online || !a.rate_sweep.is_empty() { Mode::Online } else { Mode::Offline },
        warmup: a.warmup,
        repeat: a.repeat as usize,
        percentiles: a.percentiles.clone(),
        slo: a.slo.clone(),
        targets,
        http: a.http.settings(),
    };

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second Ctrl-C while results are written still exits via the default handler only after this returns.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let out_dir = a.out.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("reports/runs").join(format!("{now}-{}", model.name()))
    });
    prepare_out_dir(&out_dir)?;
    // Read before measuring: a quality report that cannot be read fails the run before it starts.
    let quality = a.quality.as_deref().map(QualityReport::read).transpose().map_err(anyhow::Error::msg)?;
    let mut events = Bars { quiet: a.quiet, bar: None };
    let (mut all_results, mut all_records) = (Vec::new(), Vec::new());
    for workload in &workloads {
        let (mut results, records) = bench::run(&model, workload, &settings, &cancel, &mut events)?;
        results.quality = quality.clone();
        let dir = if workloads.len() == 1 {
            out_dir.clone()
        } else {
            out_dir.join(format!("rate-{}", workload.rate.map_or("inf".into(), |r| r.to_string())))
        };
        report::write_run_dir(&dir, &results, &records)?;
        all_results.push(results);
        all_records.push(records);
        if cancel.load(Ordering::Relaxed) {
            break;
        }
    }
    let html = report::write_comparison(&out_dir, &all_results, &all_records, a.baseline.as_deref(), quality.as_ref())?;
    print!("{}", report::markdown::comparison(&all_results, a.baseline.as_deref()));
    if let Some(q) = &quality {
        print!("\n{}", report::speed_quality::markdown(&report::speed_quality::join(&all_results, q), q));
    }
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
        bail!("a runtime or target failed (see the report)");
    }
    Ok(())
}

/// Checks before the benchmark runs that its results can be written to `dir`, and that they would not mix with an
/// earlier run's: a directory that already holds a run (its `results.json` or reports) is refused, so a run never
/// replaces another's results or leaves its CSVs beside new ones; an unwritable directory is found now, not after
/// the measurements.
fn prepare_out_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    const RUN_FILES: [&str; 4] = ["results.json", "summary.csv", "report.md", "report.html"];
    // A rate sweep's runs are in rate-<R>/ below it.
    let sweeps = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("results.json")))
        .filter(|p| p.parent().and_then(|d| d.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("rate-")));
    if let Some(f) = RUN_FILES.iter().map(|f| dir.join(f)).chain(sweeps).find(|f| f.exists()) {
        bail!(
            "--out {} already holds a run ({}): choose a new directory, or remove it; a new run's files would mix with \
             that run's",
            dir.display(),
            f.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create the directory", dir.display()))?;
    let probe = dir.join(format!(".nano-vllm-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("--out {}: cannot write there", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
