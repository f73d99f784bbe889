//! The instruction-count gate: the benchmarks of `harness/benches/instructions.rs` (the engine on the mock and null
//! runtimes, the replay path with its metrics, and the native, ONNX Runtime and llama.cpp runtimes on tiny-llama)
//! run once under Valgrind's Callgrind, and each count is compared with a committed baseline.
//!
//! Instruction counts do not depend on the machine's load, and under Valgrind not on the CPU generation either: it
//! presents the same CPU to every AVX2 machine, so runtime-dispatched kernels take the same path everywhere. Twenty
//! runs of an unchanged tree gave counts within 0.22% of each other (ONNX Runtime; the engine's are identical), so
//! the threshold (`ci/gate.toml` `[instructions] max_increase`) can be a few percent where the wall-clock gate needs
//! 35%. They do depend on the compilers (rustc, pinned by `rust-toolchain.toml`; the C compiler that built llama.cpp)
//! and Valgrind: against a baseline of another toolchain the gate fails, since nothing can be compared (refresh the
//! baseline under the new toolchain, deliberately). A count that falls by more than the threshold is noted, so that a
//! real improvement gets protected by refreshing the baseline (`ci/refresh-instructions.sh`).
//!
//! Refreshing moves the baseline, so rises under the threshold could be absorbed refresh after refresh. The baseline
//! therefore keeps an **anchor**: an older set of counts that refreshes carry over unchanged, against which each
//! count may rise at most `max_drift` (5%) in all. Moving the anchor is its own deliberate step
//! (`REANCHOR=1 ci/refresh-instructions.sh`), with its reason in the commit.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::InstructionsConfig;
use super::{GateCheck, GateError, GateReport};

pub const INSTRUCTIONS_SCHEMA_VERSION: u32 = 1;

/// The compilers and Valgrind the counts were measured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    pub rustc: String,
    /// The C/C++ compiler that built llama.cpp (`cc --version`, first line).
    #[serde(default)]
    pub cc: String,
    pub valgrind: String,
}

/// The first line of `program --version`, or `unknown`.
fn version_of(program: &str) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

impl Toolchain {
    /// This build's Rust compiler, and the `cc` and `valgrind` on the PATH.
    pub fn current() -> Self {
        Self {
            rustc: env!("NANO_VLLM_RUSTC_VERSION").to_owned(),
            cc: version_of("cc"),
            valgrind: version_of("valgrind"),
        }
    }
}

/// A committed baseline: `reports/instructions.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionBaseline {
    pub schema_version: u32,
    pub toolchain: Toolchain,
    pub git_commit: Option<String>,
    /// Benchmark id (`group::function.case`) -> instructions executed.
    pub benchmarks: BTreeMap<String, u64>,
    /// The older counts that cumulative drift is gated against (see the module docs).
    #[serde(default)]
    pub anchor: Option<Anchor>,
}

/// Counts that refreshes of the baseline keep, to gate the drift of many small refreshes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub git_commit: Option<String>,
    pub toolchain: Toolchain,
    pub benchmarks: BTreeMap<String, u64>,
}

impl InstructionBaseline {
    pub fn read(path: &Path) -> Result<Self, GateError> {
        let err = |message: String| GateError::Instructions { path: path.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let baseline: Self =
            serde_json::from_str(&text).map_err(|e| err(format!("not an instruction baseline: {e}")))?;
        if baseline.schema_version != INSTRUCTIONS_SCHEMA_VERSION {
            return Err(err(format!(
                "schema version {} (this build reads {INSTRUCTIONS_SCHEMA_VERSION})",
                baseline.schema_version
            )));
        }
        Ok(baseline)
    }
}

/// Reads gungraun's `--output-format=json` output (one JSON object per benchmark and line): benchmark id -> total
/// instructions (`Ir`) over every thread and process it counted.
pub fn parse_gungraun(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut counts = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |what: &str| format!("line {}: {what}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&format!("not JSON: {e}")))?;
        let module = v["module_path"].as_str().ok_or_else(|| at("no module_path"))?;
        let id = v["id"].as_str().ok_or_else(|| at("no id"))?;
        // `instructions::engine::serve` (bench file::group::function) -> `engine::serve.mixed`.
        let name = module.split_once("::").map_or(module, |(_, rest)| rest);
        let ir = v["profiles"]
            .as_array()
            .and_then(|profiles| profiles.iter().find(|p| p["tool"] == "Callgrind"))
            .and_then(|p| p["data"]["total"]["metrics"]["Ir"]["values"]["new"].as_u64())
            .ok_or_else(|| at(&format!("{name}.{id}: no Callgrind instruction count (Ir)")))?;
        counts.insert(format!("{name}.{id}"), ir);
    }
    if counts.is_empty() {
        return Err("no benchmark results (did the instruction benchmarks run?)".into());
    }
    Ok(counts)
}

/// Compares instruction counts with the baseline.
pub fn gate(
    baseline: &InstructionBaseline,
    current: &BTreeMap<String, u64>,
    toolchain: &Toolchain,
    config: &InstructionsConfig,
) -> GateReport {
    let mut report = GateReport::default();
    let gated = baseline.toolchain == *toolchain;
    if !gated {
        report.notes.push(format!(
            "instruction counts cannot be compared, so the gate fails: the baseline was measured with {}, {} and {}, \
             this run with {}, {} and {}; counts compare only under the same compilers and Valgrind (rustc is pinned \
             by rust-toolchain.toml; after a deliberate toolchain change, refresh the baseline and its anchor with \
             REANCHOR=1 ci/refresh-instructions.sh)",
            baseline.toolchain.rustc,
            baseline.toolchain.cc,
            baseline.toolchain.valgrind,
            toolchain.rustc,
            toolchain.cc,
            toolchain.valgrind
        ));
    }
    let limit = config.max_increase;
    for (name, &b) in &baseline.benchmarks {
        let Some(&c) = current.get(name) else {
            report.checks.push(GateCheck {
                runtime: name.clone(),
                figure: "instructions".into(),
                baseline: b.to_string(),
                current: "missing".into(),
                limit: "measured".into(),
                passed: false,
            });
            continue;
        };
        let change = c as f64 / b as f64 - 1.0;
        let ceiling = (b as f64 * (1.0 + limit)).floor() as u64;
        let rule = format!("<= {ceiling} (+{:.0}%)", limit * 100.0);
        report.checks.push(GateCheck {
            runtime: name.clone(),
            figure: "instructions".into(),
            baseline: b.to_string(),
            current: format!("{c} ({:+.2}%)", change * 100.0),
            limit: if gated { rule } else { format!("another toolchain, not comparable: {rule}") },
            passed: c <= ceiling && gated,
        });
        if gated && change < -limit {
            report.notes.push(format!(
                "{name}: {:.1}% fewer instructions than the baseline; if the improvement is intended, refresh the \
                 baseline (ci/refresh-instructions.sh) so that the gate protects it",
                -change * 100.0
            ));
        }
    }
    for name in current.keys().filter(|n| !baseline.benchmarks.contains_key(*n)) {
        report.notes.push(format!("{name}: measured but not in the baseline (not gated)"));
    }
    match &baseline.anchor {
        Some(anchor) if anchor.toolchain == *toolchain => {
            let commit = anchor.git_commit.as_deref().map_or("?", |c| &c[..c.len().min(7)]);
            for (name, &a) in &anchor.benchmarks {
                let Some(&c) = current.get(name) else { continue };
                let ceiling = (a as f64 * (1.0 + config.max_drift)).floor() as u64;
                report.checks.push(GateCheck {
                    runtime: name.clone(),
                    figure: format!("instructions since the anchor ({commit})"),
                    baseline: a.to_string(),
                    current: format!("{c} ({:+.2}%)", (c as f64 / a as f64 - 1.0) * 100.0),
                    limit: format!("<= {ceiling} (+{:.0}% in all)", config.max_drift * 100.0),
                    passed: c <= ceiling,
                });
            }
        }
        Some(anchor) => report.notes.push(format!(
            "the anchor was measured with {}, {} and {}: cumulative drift is not gated until it is moved \
             (REANCHOR=1 ci/refresh-instructions.sh)",
            anchor.toolchain.rustc, anchor.toolchain.cc, anchor.toolchain.valgrind
        )),
        None => report.notes.push(
            "the baseline has no anchor: cumulative drift is not gated (REANCHOR=1 ci/refresh-instructions.sh sets one)"
                .into(),
        ),
    }
    report
}

/// The baseline that `--record` writes for `counts`: the anchor of the `previous` baseline is kept (`reanchor`: the
/// new counts become the anchor too).
pub fn record(
    counts: BTreeMap<String, u64>,
    toolchain: Toolchain,
    git_commit: Option<String>,
    previous: Option<&InstructionBaseline>,
    reanchor: bool,
) -> InstructionBaseline {
    let anchor = if reanchor {
        Some(Anchor { git_commit: git_commit.clone(), toolchain: toolchain.clone(), benchmarks: counts.clone() })
    } else {
        previous.and_then(|p| p.anchor.clone())
    };
    InstructionBaseline {
        schema_version: INSTRUCTIONS_SCHEMA_VERSION,
        toolchain,
        git_commit,
        benchmarks: counts,
        anchor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(module: &str, id: &str, ir: u64) -> String {
        format!(
            r#"{{"module_path":"{module}","id":"{id}","profiles":[{{"tool":"Callgrind","data":{{"total":{{"metrics":{{"Ir":{{"values":{{"new":{ir},"old":null}}}}}}}}}}}}]}}"#
        )
    }

    fn toolchain() -> Toolchain {
        Toolchain {
            rustc: "rustc 1.95.0".into(),
            cc: "cc (Debian 12.2.0-14) 12.2.0".into(),
            valgrind: "valgrind-3.19.0".into(),
        }
    }

    fn baseline() -> InstructionBaseline {
        InstructionBaseline {
            schema_version: 1,
            toolchain: toolchain(),
            git_commit: None,
            benchmarks: [
                ("engine::serve.mixed".to_string(), 1_000_000),
                ("runtimes::serve.native".to_string(), 2_000_000),
            ]
            .into(),
            anchor: None,
        }
    }

    #[test]
    fn gungraun_lines_are_read_by_benchmark_id() {
        let text = format!(
            "{}\n\n{}\n",
            line("instructions::engine::serve", "mixed", 1_000_500),
            line("instructions::runtimes::serve", "native", 7)
        );
        let counts = parse_gungraun(&text).unwrap();
        assert_eq!(counts["engine::serve.mixed"], 1_000_500);
        assert_eq!(counts["runtimes::serve.native"], 7);
        assert!(parse_gungraun("{").unwrap_err().starts_with("line 1: not JSON"));
        assert!(parse_gungraun("").unwrap_err().contains("no benchmark results"));
        let no_ir = r#"{"module_path":"instructions::a::b","id":"c","profiles":[]}"#;
        assert_eq!(parse_gungraun(no_ir).unwrap_err(), "line 1: a::b.c: no Callgrind instruction count (Ir)");
    }

    #[test]
    fn a_rise_beyond_the_threshold_fails_and_a_fall_is_noted() {
        let config = InstructionsConfig { max_increase: 0.02, max_drift: 0.05 };
        let same: BTreeMap<String, u64> = baseline().benchmarks;
        assert!(gate(&baseline(), &same, &toolchain(), &config).passed());
        // +1.9% passes, +5% fails naming the benchmark.
        let mut slower = same.clone();
        slower.insert("engine::serve.mixed".into(), 1_019_000);
        assert!(gate(&baseline(), &slower, &toolchain(), &config).passed());
        slower.insert("engine::serve.mixed".into(), 1_050_000);
        let r = gate(&baseline(), &slower, &toolchain(), &config);
        let failed: Vec<String> = r.failures().map(|c| format!("{} {} {}", c.runtime, c.current, c.limit)).collect();
        assert_eq!(failed, ["engine::serve.mixed 1050000 (+5.00%) <= 1020000 (+2%)"]);
        // A big fall passes with a note; a missing benchmark fails; a new one is noted.
        let mut faster = same.clone();
        faster.insert("runtimes::serve.native".into(), 1_000_000);
        faster.remove("engine::serve.mixed");
        faster.insert("engine::new.case".into(), 5);
        let r = gate(&baseline(), &faster, &toolchain(), &config);
        let failed: Vec<String> = r.failures().map(|c| format!("{} {}", c.runtime, c.current)).collect();
        assert_eq!(failed, ["engine::serve.mixed missing"]);
        assert!(
            r.notes.iter().any(|n| n.starts_with("runtimes::serve.native: 50.0% fewer instructions")),
            "{:?}",
            r.notes
        );
        assert!(r.notes.iter().any(|n| n.starts_with("engine::new.case: measured but not in the baseline")));
    }

    #[test]
    fn another_toolchain_fails_the_gate_naming_both() {
        let config = InstructionsConfig { max_increase: 0.02, max_drift: 0.05 };
        let same = baseline().benchmarks;
        let other = Toolchain { rustc: "rustc 1.96.0".into(), ..toolchain() };
        let r = gate(&baseline(), &same, &other, &config);
        assert!(!r.passed(), "{}", r.table());
        assert!(r.notes[0].contains("cannot be compared") && r.notes[0].contains("rustc 1.96.0"), "{:?}", r.notes);
    }

    #[test]
    fn refreshes_keep_the_anchor_and_drift_beyond_it_fails() {
        let config = InstructionsConfig { max_increase: 0.02, max_drift: 0.05 };
        let first = record(baseline().benchmarks, toolchain(), Some("aaaaaaa1".into()), None, true);
        // Three refreshes of +1.9% each: every one passes the +2% gate against the baseline before it.
        let mut previous = first;
        let mut counts = baseline().benchmarks;
        for round in 1..=3 {
            counts.values_mut().for_each(|c| *c = (*c as f64 * 1.019) as u64);
            let r = gate(&previous, &counts, &toolchain(), &config);
            let drift_failed = r.failures().any(|c| c.figure.starts_with("instructions since the anchor"));
            // +1.9%, +3.8%, +5.8% since the anchor: the third crosses the 5% bound though its own step is +1.9%.
            assert_eq!(drift_failed, round == 3, "round {round}: {}", r.table());
            assert!(!r.failures().any(|c| c.figure == "instructions"));
            previous = record(counts.clone(), toolchain(), Some(format!("round{round}")), Some(&previous), false);
            assert_eq!(previous.anchor.as_ref().unwrap().git_commit.as_deref(), Some("aaaaaaa1"));
        }
        // Re-anchoring moves it.
        let moved = record(counts.clone(), toolchain(), Some("bbbbbbb2".into()), Some(&previous), true);
        assert_eq!(moved.anchor.as_ref().unwrap().benchmarks, counts);
        assert!(gate(&moved, &counts, &toolchain(), &config).passed());
    }
}
