//! `nano-vllm gate`: a run against the committed baselines; non-zero exit on a regression beyond the config's
//! thresholds (see `nano_vllm_harness::gate`). Two gates:
//!
//! - timing and exact figures of a `bench` run (`--current`) against the baseline of this CPU in `--baseline` (a
//!   directory of per-CPU baselines, or one file);
//! - instruction counts (`--instructions`, the JSON lines of the instruction benchmarks) against
//!   `--instructions-baseline`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nano_vllm_harness::gate::instructions::{self, InstructionBaseline, Toolchain, parse_gungraun};
use nano_vllm_harness::gate::{self, GateConfig, GateReport};
use nano_vllm_harness::report::{Results, read_results, write_atomic};

#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// Timing baselines: a directory with one results.json per CPU (`<fingerprint>.json`; the one of this CPU is
    /// used), or one file.
    #[arg(long, default_value = "reports/baselines")]
    baseline: PathBuf,
    /// The run to check: a run directory of `nano-vllm bench` (or its results.json).
    #[arg(long, required_unless_present_any = ["pick_typical", "instructions"])]
    current: Option<PathBuf>,
    /// Instead of gating: of these runs of the same benchmark (comma-separated), keep the most typical (its relative
    /// figures stray least from the others') as this CPU's baseline in --baseline. Used by ci/refresh-baseline.sh.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["current", "instructions"])]
    pick_typical: Vec<PathBuf>,
    /// Gate instruction counts instead: the output of `cargo bench --bench instructions -- --output-format=json`.
    #[arg(long, conflicts_with = "current")]
    instructions: Option<PathBuf>,
    /// The instruction-count baseline.
    #[arg(long, default_value = "reports/instructions.json")]
    instructions_baseline: PathBuf,
    /// With --instructions: write these counts as the new baseline instead of gating (ci/refresh-instructions.sh). The
    /// old baseline's anchor is kept.
    #[arg(long, requires = "instructions")]
    record: bool,
    /// With --record: make these counts the anchor too (cumulative drift is gated against the anchor).
    #[arg(long, requires = "record")]
    reanchor: bool,
    /// Thresholds and figures gated (TOML).
    #[arg(long, default_value = "ci/gate.toml")]
    config: PathBuf,
}

fn results_path(p: &Path) -> PathBuf {
    if p.is_dir() { p.join("results.json") } else { p.to_path_buf() }
}

/// Every baseline in `path`: the `*.json` files of a directory, or the file itself.
fn read_baselines(path: &Path) -> anyhow::Result<Vec<(PathBuf, Results)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        bail!("{}: no baseline (*.json) in it; record one with ci/refresh-baseline.sh", path.display());
    }
    files.into_iter().map(|f| Ok((f.clone(), read_results(&f)?))).collect()
}

fn finish(report: &GateReport, what: &str, against: &Path, hint: &str) -> anyhow::Result<()> {
    print!("{}", report.table());
    if !report.passed() {
        let failed: Vec<String> = report.failures().map(|c| format!("{} {}", c.runtime, c.figure)).collect();
        bail!("{what} gate failed: {}{hint}", failed.join("; "));
    }
    println!("{what} gate passed: {} checks against {}", report.checks.len(), against.display());
    Ok(())
}

pub fn run(a: &GateArgs) -> anyhow::Result<()> {
    let config = GateConfig::from_file(&a.config)?;
    if let Some(path) = &a.instructions {
        return instructions_gate(a, path, &config);
    }
    if !a.pick_typical.is_empty() {
        let runs = a.pick_typical.iter().map(|p| read_results(&results_path(p))).collect::<Result<Vec<_>, _>>()?;
        let pick = gate::most_typical(&runs, &config)?;
        // The default --baseline is a directory of per-CPU baselines: made when it does not exist yet.
        if !a.baseline.exists() && a.baseline.extension().is_none() {
            std::fs::create_dir_all(&a.baseline).with_context(|| format!("creating {}", a.baseline.display()))?;
        }
        let target = if a.baseline.is_dir() {
            let fingerprint = gate::cpu_fingerprint(&runs[pick]).context("the runs carry no CPU identity")?;
            a.baseline.join(format!("{fingerprint}.json"))
        } else {
            a.baseline.clone()
        };
        std::fs::copy(results_path(&a.pick_typical[pick]), &target)
            .with_context(|| format!("writing {}", target.display()))?;
        println!(
            "{} (the most typical of {} runs) -> {}",
            a.pick_typical[pick].display(),
            runs.len(),
            target.display()
        );
        return Ok(());
    }
    let current = read_results(&results_path(a.current.as_deref().expect("required unless --pick-typical")))?;
    let baselines = read_baselines(&a.baseline)?;
    let results: Vec<Results> = baselines.iter().map(|(_, r)| r.clone()).collect();
    let (index, same_cpu) = gate::pick_baseline(&results, &current).expect("at least one baseline");
    let (path, baseline) = &baselines[index];
    let report = gate::gate(baseline, &current, &config)?;
    let hint =
        if same_cpu { "" } else { " (exact figures; the baseline comes from another CPU, so timing was not gated)" };
    finish(&report, "regression", path, hint)
}

fn instructions_gate(a: &GateArgs, path: &Path, config: &GateConfig) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let counts =
        parse_gungraun(&text).map_err(|message| gate::GateError::Instructions { path: path.into(), message })?;
    let toolchain = Toolchain::current();
    if a.record {
        let previous = if a.instructions_baseline.exists() {
            Some(InstructionBaseline::read(&a.instructions_baseline)?)
        } else {
            None
        };
        if previous.as_ref().is_some_and(|p| p.anchor.is_none()) && !a.reanchor {
            bail!(
                "{} has no anchor to keep: record with --reanchor (REANCHOR=1 ci/refresh-instructions.sh)",
                a.instructions_baseline.display()
            );
        }
        let baseline = instructions::record(
            counts,
            toolchain,
            nano_vllm_harness::machine::git_commit(),
            previous.as_ref(),
            a.reanchor,
        );
        let mut json = serde_json::to_vec_pretty(&baseline)?;
        json.push(b'\n');
        write_atomic(&a.instructions_baseline, &json)?;
        println!("{} benchmarks -> {}", baseline.benchmarks.len(), a.instructions_baseline.display());
        return Ok(());
    }
    let baseline = InstructionBaseline::read(&a.instructions_baseline)?;
    let report = instructions::gate(&baseline, &counts, &toolchain, &config.instructions);
    finish(&report, "instruction-count", &a.instructions_baseline, "")
}
