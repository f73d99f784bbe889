//! `nano-vllm gate`: a run against the committed baseline; non-zero exit on a regression beyond the config's
//! thresholds (see `nano_vllm_harness::gate`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use nano_vllm_harness::gate::{self, GateConfig};
use nano_vllm_harness::report::read_results;

#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// The baseline: a results.json (or a run directory holding one).
    #[arg(long, default_value = "reports/baseline.json")]
    baseline: PathBuf,
    /// The run to check: a run directory of `nano-vllm bench` (or its results.json).
    #[arg(long, required_unless_present = "pick_typical")]
    current: Option<PathBuf>,
    /// Instead of gating: of these runs of the same benchmark (comma-separated), copy the most typical (its relative
    /// figures stray least from the others') to --baseline. Used by ci/refresh-baseline.sh.
    #[arg(long, value_delimiter = ',', conflicts_with = "current")]
    pick_typical: Vec<PathBuf>,
    /// Thresholds and figures gated (TOML).
    #[arg(long, default_value = "ci/gate.toml")]
    config: PathBuf,
}

fn results_path(p: &Path) -> PathBuf {
    if p.is_dir() { p.join("results.json") } else { p.to_path_buf() }
}

pub fn run(a: &GateArgs) -> anyhow::Result<()> {
    let config = GateConfig::from_file(&a.config)?;
    if !a.pick_typical.is_empty() {
        let runs = a.pick_typical.iter().map(|p| read_results(&results_path(p))).collect::<Result<Vec<_>, _>>()?;
        let pick = &a.pick_typical[gate::most_typical(&runs, &config)?];
        std::fs::copy(results_path(pick), &a.baseline)?;
        println!("{} (the most typical of {} runs) -> {}", pick.display(), runs.len(), a.baseline.display());
        return Ok(());
    }
    let baseline = read_results(&results_path(&a.baseline))?;
    let current = read_results(&results_path(a.current.as_deref().expect("required unless --pick-typical")))?;
    let report = gate::gate(&baseline, &current, &config)?;
    print!("{}", report.table());
    if !report.passed() {
        let failed: Vec<String> = report.failures().map(|c| format!("{} {}", c.runtime, c.figure)).collect();
        let (b, c) = (&baseline.metadata, &current.metadata);
        let machine = if (&b.cpu_model, b.cores) != (&c.cpu_model, c.cores) {
            " (the baseline comes from another machine: if this machine is where the gate runs now, refresh the \
             baseline on it with ci/refresh-baseline.sh)"
        } else {
            ""
        };
        bail!("regression gate failed: {}{machine}", failed.join("; "));
    }
    println!("regression gate passed: {} checks against {}", report.checks.len(), a.baseline.display());
    Ok(())
}
