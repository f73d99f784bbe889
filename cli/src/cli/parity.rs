//! `nano-vllm parity`: every selected runtime against each bundle's reference, and the tokenizers; a table on
//! stdout, `parity.json`, and a non-zero exit on any failure.

use std::path::PathBuf;

use anyhow::{Context, bail};
use nano_vllm_harness::http::{self, PromptFormat};
use nano_vllm_harness::parity::{self, PARITY_SCHEMA_VERSION, ParityReport, ToleranceOverrides};
use nano_vllm_harness::report::write_atomic;
use nano_vllm_models::registry::{self, RuntimeSettings};

#[derive(Debug, clap::Args)]
pub struct ParityArgs {
    /// Bundle directories, comma-separated or repeated (any bundle made by fixtures/generate.py); default: every
    /// committed fixture (fixtures/tiny-llama, fixtures/tiny-qwen2, fixtures/tiny-gpt2).
    #[arg(long, value_delimiter = ',')]
    bundle: Vec<PathBuf>,
    /// Runtimes, comma-separated, or `all`: every compiled-in runtime but mock with its lossy settings (`:q8_0`,
    /// `:q4_0`, the Q4_K_M pair, `native:f16`, `native:bf16`, `llama-cpp:defaults`; the last three where the
    /// bundle's manifest has their tolerances), and on a bundle made from a shipped GGUF the runtimes that read it
    /// (`native:shipped`, `candle:shipped`, `llama-cpp:shipped`). Lossy settings are judged teacher forced, each by
    /// the manifest's tolerance of its kind (`q8_0`, `q4_0`, `f16`, `bf16`, `llama_cpp_defaults`, `shipped`).
    #[arg(long, default_value = "all")]
    runtime: String,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::thread_count, allow_negative_numbers = true)]
    threads: usize,
    /// Override the manifest's element-wise tolerance: largest |runtime - reference| logit difference.
    #[arg(long, allow_hyphen_values = true)]
    max_abs_diff: Option<f32>,
    /// Override the manifest's element-wise tolerance: smallest fraction of rows with the reference's argmax.
    #[arg(long, allow_hyphen_values = true)]
    argmax_agreement: Option<f64>,
    /// Override the manifest's q8_0 tolerance: largest mean KL(reference || runtime), teacher forced.
    #[arg(long, allow_hyphen_values = true)]
    max_mean_kl: Option<f64>,
    /// Override the manifest's q8_0 tolerance: smallest top-1 agreement, teacher forced.
    #[arg(long, allow_hyphen_values = true)]
    min_top1_agreement: Option<f64>,
    /// Where to write the JSON report (default: reports/runs/parity-<unix time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check OpenAI-compatible servers instead of runtimes, `openai:http://HOST:PORT/v1` (repeatable): each
    /// reference prompt of the one --bundle is sent greedy with logprobs, and the tokens and log-probabilities
    /// that come back are compared with the reference. The server must serve the bundle's model.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The model name each target serves: one for all, or one per target.
    #[arg(long, value_delimiter = ',')]
    served_model: Vec<String>,
    /// How prompts are sent to a target: token ids (exact), or text (the server tokenizes it; a prompt it tokenizes
    /// differently is reported as not comparable). Default: ids, or text when the server refuses ids.
    #[arg(long, value_enum)]
    prompt_format: Option<PromptFormat>,
    /// Seconds a target may take for one prompt.
    #[arg(long, default_value_t = 300.0, allow_hyphen_values = true)]
    request_timeout: f64,
    /// With --target: the largest |server - reference| log-probability that passes (default: twice the bundle's
    /// float32 logit tolerance, what a float32 server within it can differ by).
    #[arg(long, allow_hyphen_values = true)]
    max_logprob_diff: Option<f64>,
}

/// `parity --target`: servers against one bundle's reference.
fn run_targets(a: &ParityArgs) -> anyhow::Result<()> {
    let [dir] = a.bundle.as_slice() else {
        bail!("--target needs exactly one --bundle: the reference of the model the servers serve");
    };
    if !(a.request_timeout.is_finite() && a.request_timeout > 0.0) {
        bail!("--request-timeout must be a positive number of seconds");
    }
    let servers = http::servers(&a.targets, &a.served_model)?;
    let bundle = nano_vllm_bundle::Bundle::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let reference = bundle.reference()?;
    let tokenizer = tokenizers::Tokenizer::from_file(bundle.dir().join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.dir().join("tokenizer.json").display()))?;
    let timeout = std::time::Duration::from_secs_f64(a.request_timeout);
    let bound = match a.max_logprob_diff {
        Some(b) if !(b.is_finite() && b >= 0.0) => bail!("--max-logprob-diff must be a number >= 0, got {b}"),
        Some(b) => b,
        None => http::parity::default_logprob_bound(bundle.tolerances()),
    };
    let mut reports = Vec::new();
    for server in &servers {
        let p = http::parity::check_server(server, &reference.prompts, &tokenizer, a.prompt_format, timeout, bound)?;
        print!("{}", http::parity::table(&p));
        reports.push(p);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("reports/runs/parity-http-{now}.json")));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::json!({
        "schema_version": 1,
        "created_unix_s": now,
        "bundle": bundle.dir().display().to_string(),
        "servers": reports,
    });
    write_atomic(&out, &serde_json::to_vec_pretty(&json)?)?;
    println!("JSON: {}", out.display());
    let bad: Vec<&str> = reports.iter().filter(|p| !p.exact).map(|p| p.target.as_str()).collect();
    if !bad.is_empty() {
        bail!("greedy tokens differ from the reference on {}", bad.join(", "));
    }
    let off: Vec<&str> = reports.iter().filter(|p| !p.passed()).map(|p| p.target.as_str()).collect();
    if !off.is_empty() {
        bail!("log-probabilities differ from the reference by more than {bound:.1e} on {}", off.join(", "));
    }
    Ok(())
}

pub fn run(a: &ParityArgs) -> anyhow::Result<()> {
    if !a.targets.is_empty() {
        return run_targets(a);
    }
    if !a.served_model.is_empty() {
        bail!("--served-model needs --target");
    }
    // Names are checked before anything runs; `all` is resolved per bundle (a bundle with a shipped GGUF adds the
    // runtimes that read it).
    registry::runtime_list(&a.runtime, &registry::default_runtimes())?;
    let bundles: Vec<PathBuf> = if a.bundle.is_empty() {
        nano_vllm_bundle::COMMITTED_BUNDLES.iter().map(|name| PathBuf::from("fixtures").join(name)).collect()
    } else {
        a.bundle.clone()
    };
    for (name, value) in [("--argmax-agreement", a.argmax_agreement), ("--min-top1-agreement", a.min_top1_agreement)] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bail!("{name} must be a fraction in [0, 1]");
        }
    }
    if a.max_abs_diff.is_some_and(|v| v.is_nan() || v < 0.0) || a.max_mean_kl.is_some_and(|v| v.is_nan() || v < 0.0) {
        bail!("--max-abs-diff and --max-mean-kl must be non-negative numbers");
    }
    let overrides = ToleranceOverrides {
        max_abs_diff: a.max_abs_diff,
        argmax_agreement: a.argmax_agreement,
        max_mean_kl: a.max_mean_kl,
        min_top1_agreement: a.min_top1_agreement,
    };
    let settings = RuntimeSettings { threads: a.threads, ..Default::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let bundles: Vec<_> = bundles
        .iter()
        .map(|dir| {
            eprintln!("== {}", dir.display());
            parity::check_bundle(dir, &a.runtime, &settings, &overrides)
        })
        .collect();
    let report = ParityReport {
        schema_version: PARITY_SCHEMA_VERSION,
        created_unix_s: now,
        git_commit: nano_vllm_harness::machine::git_commit(),
        passed: bundles.iter().all(|b| b.passed()),
        bundles,
    };
    // The table first: a JSON path that cannot be written loses nothing that was measured.
    print!("{}", parity::table(&report));
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("reports/runs/parity-{now}.json")));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_atomic(&out, &serde_json::to_vec_pretty(&report)?)?;
    println!("JSON: {}", out.display());
    let checks: Vec<_> = report.bundles.iter().flat_map(|b| b.runtimes.iter().map(|r| r.status)).collect();
    let tokenizers: Vec<_> = report.bundles.iter().flat_map(|b| b.tokenizers.iter().map(|t| t.status)).collect();
    let failed = |v: &[parity::Status]| v.iter().filter(|s| **s != parity::Status::Pass).count();
    let bad_bundles: Vec<&str> = report.bundles.iter().filter_map(|b| b.error.as_deref()).collect();
    if !report.passed {
        let why = if bad_bundles.is_empty() { String::new() } else { format!(": {}", bad_bundles.join("; ")) };
        bail!(
            "parity failed: {} of {} runtime checks, {} of {} tokenizer checks, {} unreadable bundles{why}",
            failed(&checks),
            checks.len(),
            failed(&tokenizers),
            tokenizers.len(),
            bad_bundles.len()
        );
    }
    println!(
        "parity passed: {} runtime checks and {} tokenizer checks on {} bundles",
        checks.len(),
        tokenizers.len(),
        report.bundles.len()
    );
    Ok(())
}
