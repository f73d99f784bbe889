//! The gate's thresholds, kept in a TOML file (the project's is `ci/gate.toml`).

use std::path::Path;

use serde::Deserialize;

use super::GateError;

/// What the gate compares and how much it tolerates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Runtimes gated; every one must be in both runs. Empty: every runtime of the baseline.
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// Fewest repeats each run must have (its figures are medians over them).
    #[serde(default = "default_min_repeats")]
    pub min_repeats: usize,
    pub relative: RelativeConfig,
    pub exact: ExactConfig,
    /// The instruction-count gate (`nano-vllm gate --instructions`).
    #[serde(default)]
    pub instructions: InstructionsConfig,
}

/// Instruction counts of the benchmarks in `harness/benches/instructions.rs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionsConfig {
    /// A benchmark fails when its count rises more than this fraction above the baseline's.
    pub max_increase: f64,
    /// ... or more than this fraction above the anchor's (the older baseline that refreshes keep), so that small rises
    /// absorbed by refresh after refresh cannot add up unseen.
    #[serde(default = "default_max_drift")]
    pub max_drift: f64,
}

fn default_max_drift() -> f64 {
    0.05
}

impl Default for InstructionsConfig {
    fn default() -> Self {
        Self { max_increase: 0.02, max_drift: default_max_drift() }
    }
}

/// Performance figures as ratios measured in the same run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelativeConfig {
    /// results.json metric keys. Throughputs are higher-better; `*_ms` latencies are lower-better (their inverse
    /// is used, so every relative figure is "higher is faster").
    pub metrics: Vec<String>,
    /// A runtime fails when its relative figure falls below baseline x (1 - max_drop).
    pub max_drop: f64,
}

/// Figures that must equal the baseline's for the same workload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactConfig {
    /// Any of [`EXACT_FIELDS`].
    pub fields: Vec<String>,
}

/// The exact fields the gate knows: request and token counts, engine figures, and the output tokens' digest.
pub const EXACT_FIELDS: [&str; 7] = [
    "completed",
    "total_input_tokens",
    "total_output_tokens",
    "steps",
    "preemptions",
    "prefix_hit_tokens",
    "output_digest",
];

fn default_min_repeats() -> usize {
    3
}

impl GateConfig {
    /// Reads and validates a gate config file.
    pub fn from_file(path: &Path) -> Result<Self, GateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GateError::Config { path: path.into(), message: e.to_string() })?;
        Self::parse(&text).map_err(|message| GateError::Config { path: path.into(), message })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: GateConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.relative.max_drop > 0.0 && self.relative.max_drop < 1.0) {
            return Err(format!("relative.max_drop must be in (0, 1), got {}", self.relative.max_drop));
        }
        if self.min_repeats == 0 {
            return Err("min_repeats must be at least 1".into());
        }
        if let Some(f) = self.exact.fields.iter().find(|f| !EXACT_FIELDS.contains(&f.as_str())) {
            return Err(format!("exact.fields: unknown field '{f}' (known: {})", EXACT_FIELDS.join(", ")));
        }
        if !(self.instructions.max_increase > 0.0 && self.instructions.max_increase < 1.0) {
            return Err(format!("instructions.max_increase must be in (0, 1), got {}", self.instructions.max_increase));
        }
        if !(self.instructions.max_drift >= self.instructions.max_increase && self.instructions.max_drift < 1.0) {
            return Err(format!(
                "instructions.max_drift must be in [max_increase, 1), got {}",
                self.instructions.max_drift
            ));
        }
        if self.relative.metrics.is_empty() && self.exact.fields.is_empty() {
            return Err("nothing to gate: relative.metrics and exact.fields are both empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
min_repeats = 5
[relative]
metrics = ["output_throughput", "median_tpot_ms"]
max_drop = 0.3
[exact]
fields = ["completed", "output_digest"]
"#;

    #[test]
    fn parses_and_validates() {
        let c = GateConfig::parse(GOOD).unwrap();
        assert_eq!((c.min_repeats, c.relative.max_drop, c.runtimes.len()), (5, 0.3, 0));
        assert_eq!(c.exact.fields, ["completed", "output_digest"]);
        let err = GateConfig::parse(&GOOD.replace("0.3", "1.5")).unwrap_err();
        assert!(err.contains("max_drop must be in (0, 1), got 1.5"), "{err}");
        let err = GateConfig::parse(&GOOD.replace("\"completed\"", "\"speed\"")).unwrap_err();
        assert!(err.contains("unknown field 'speed'"), "{err}");
        let err = GateConfig::parse(&GOOD.replace("min_repeats", "min_repeat")).unwrap_err();
        assert!(err.contains("min_repeat"), "{err}");
    }

    #[test]
    fn the_project_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/gate.toml");
        let c = GateConfig::from_file(&path).unwrap();
        assert!(c.relative.metrics.contains(&"output_throughput".to_string()));
        assert!(c.exact.fields.contains(&"output_digest".to_string()));
    }
}
