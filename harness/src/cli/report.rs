//! `nano-vllm report`: a comparison over existing run directories.

use std::path::PathBuf;

use nano_vllm_harness::report;

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

pub fn run(a: &ReportArgs) -> anyhow::Result<()> {
    let results =
        a.runs.iter().map(|d| report::read_results(&d.join("results.json"))).collect::<Result<Vec<_>, _>>()?;
    let html = report::write_comparison(&a.out, &results, &[], a.baseline.as_deref())?;
    print!("{}", report::markdown::comparison(&results, a.baseline.as_deref()));
    println!("HTML: {}", html.display());
    Ok(())
}
