//! What the gate found: one check per compared figure, and notes.

use std::fmt::Write as _;

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCheck {
    pub runtime: String,
    /// e.g. `output_throughput (relative)`, `preemptions`.
    pub figure: String,
    pub baseline: String,
    pub current: String,
    /// What `current` must satisfy.
    pub limit: String,
    pub passed: bool,
}

/// Every comparison, and notes (differences that are not regressions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateReport {
    pub checks: Vec<GateCheck>,
    pub notes: Vec<String>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &GateCheck> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// A Markdown table of every check, then the notes.
    pub fn table(&self) -> String {
        let mut s =
            String::from("| runtime | figure | baseline | current | limit | result |\n|---|---|---:|---:|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                c.runtime,
                c.figure,
                c.baseline,
                c.current,
                c.limit,
                if c.passed { "ok" } else { "REGRESSION" }
            );
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
