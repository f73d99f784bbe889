//! `nano-vllm report`: a comparison over existing runs, and other tools' results imported into it; two runs of this
//! harness are also compared A/B, with their spread over repeats.

use std::path::PathBuf;

use anyhow::bail;
use nano_vllm_harness::quality::QualityReport;
use nano_vllm_harness::report::{self, ab, import};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Runs: run directories or results.json files of this harness, or other tools' results files (vllm bench serve
    /// --save-result JSON, llama-bench -o json/jsonl, a GuideLLM report), recognized by their content. Exactly two
    /// runs of this harness are also compared A/B (the first is A).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write summary.csv, report.md and report.html (and ab.md, ab.json for an A/B comparison); not one of
    /// the run directories, whose own report (with its latency charts) it would replace.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    baseline: Option<String>,
    /// A `nano-vllm quality` report (quality.json) of the same model: speed beside quality (perplexity, KL
    /// divergence, the Pareto front and its chart), joined by runtime name (default: the quality run a run made
    /// with `bench --quality` carries in its results.json).
    #[arg(long)]
    quality: Option<PathBuf>,
}

pub fn run(a: &ReportArgs) -> anyhow::Result<()> {
    for run in &a.runs {
        // A run directory, or the directory of its results.json.
        let run_dir = match run.parent() {
            _ if run.is_dir() => run.as_path(),
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        let holds_run = run_dir.join("results.json").is_file() || run.is_dir();
        if holds_run && same_dir(run_dir, &a.out) {
            bail!(
                "--out {} is the run directory {}: its report.html (with the latency charts of its per-request records) \
                 would be replaced; write the comparison elsewhere",
                a.out.display(),
                run.display()
            );
        }
    }
    let quality = a.quality.as_deref().map(QualityReport::read).transpose().map_err(anyhow::Error::msg)?;
    let mut results = Vec::new();
    let mut formats = Vec::new();
    for run in &a.runs {
        let (r, format) = import::read_any(run)?;
        results.push(r);
        formats.push(format);
    }
    // A run made with `bench --quality` carries its quality run in results.json.
    let quality = quality.or_else(|| results.iter().find_map(|r| r.quality.clone()));
    let ab = (results.len() == 2 && formats.iter().all(|f| *f == import::Format::NanoVllm)).then(|| {
        ab::compare(&a.runs[0].display().to_string(), &results[0], &a.runs[1].display().to_string(), &results[1])
    });
    let html = report::write_comparison(&a.out, &results, &[], a.baseline.as_deref(), quality.as_ref())?;
    print!("{}", report::markdown::comparison(&results, a.baseline.as_deref()));
    if let Some(q) = &quality {
        print!("\n{}", report::speed_quality::markdown(&report::speed_quality::join(&results, q), q));
    }
    if let Some(ab) = &ab {
        let md = ab.markdown();
        report::write_atomic(&a.out.join("ab.md"), md.as_bytes())?;
        report::write_atomic(&a.out.join("ab.json"), &serde_json::to_vec_pretty(ab)?)?;
        print!("\n{md}");
    }
    println!("HTML: {}", html.display());
    Ok(())
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
