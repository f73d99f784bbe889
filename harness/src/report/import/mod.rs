//! Results of the benchmarking tools users already have, read into this harness's [`Results`] so that they join the
//! same comparison table (`nano-vllm report RUN other.json ...`): vLLM's `vllm bench serve --save-result` JSON,
//! llama.cpp's `llama-bench -o json` (or `-o jsonl`), and GuideLLM's `--output-path report.json`. Their metric names
//! are mapped to ours (vLLM's: `request_throughput`, `output_throughput`, `median_ttft_ms`, ...); a figure a tool does
//! not measure is absent, never made up. Each imported row says which tool measured it (`tool`) and keeps the
//! tool's own settings.
//!
//! The format is recognized from the content, not the file name. A file that is none of them, or one of them with a
//! field of the wrong type, is an error naming the file and the field.

mod guidellm;
mod llama_bench;
mod vllm_bench;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{BundleMeta, EngineFigures, EngineMeta, ReportError, Results, RunMetadata, RuntimeResult, WorkloadMeta};

/// A results file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// This harness's `results.json`.
    NanoVllm,
    VllmBenchServe,
    LlamaBench,
    GuideLlm,
}

impl Format {
    pub fn tool(self) -> &'static str {
        match self {
            Self::NanoVllm => "nano-vllm",
            Self::VllmBenchServe => "vllm bench serve",
            Self::LlamaBench => "llama-bench",
            Self::GuideLlm => "guidellm",
        }
    }
}

/// Reads a run: a run directory (its `results.json`), this harness's `results.json`, or another tool's results file.
pub fn read_any(path: &Path) -> Result<(Results, Format), ReportError> {
    let file = if path.is_dir() { path.join("results.json") } else { path.to_owned() };
    let bytes = std::fs::read(&file).map_err(|source| ReportError::Io { path: file.clone(), source })?;
    let format = detect(&bytes).ok_or_else(|| ReportError::Format {
        path: file.clone(),
        message: "not a results file this harness reads: expected nano-vllm's results.json, vllm bench serve's \
                  --save-result JSON, llama-bench's -o json/jsonl output or a GuideLLM report"
            .into(),
    })?;
    let err = |message: String| ReportError::Format { path: file.clone(), message };
    let results = match format {
        Format::NanoVllm => super::read_results(&file)?,
        Format::VllmBenchServe => vllm_bench::read(&parse(&bytes).map_err(err)?, &file).map_err(err)?,
        Format::LlamaBench => llama_bench::read(&parse_json_or_lines(&bytes).map_err(err)?, &file).map_err(err)?,
        Format::GuideLlm => guidellm::read(&parse(&bytes).map_err(err)?, &file).map_err(err)?,
    };
    Ok((results, format))
}

/// The format of a results file, from its content.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    let value = parse_json_or_lines(bytes).ok()?;
    match &value {
        Value::Object(o) if o.contains_key("schema_version") && o.contains_key("runs") => Some(Format::NanoVllm),
        Value::Object(o) if o.contains_key("benchmarks") => Some(Format::GuideLlm),
        Value::Object(o) if o.contains_key("request_throughput") && o.contains_key("completed") => {
            Some(Format::VllmBenchServe)
        }
        Value::Array(tests) if !tests.is_empty() && tests.iter().all(|t| t.get("avg_ts").is_some()) => {
            Some(Format::LlamaBench)
        }
        // `llama-bench -o jsonl` with one test: one object.
        Value::Object(o) if o.contains_key("avg_ts") && o.contains_key("n_prompt") => Some(Format::LlamaBench),
        _ => None,
    }
}

fn parse(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))
}

/// One JSON document, or JSON Lines (llama-bench's `-o jsonl`) as an array of its lines. A bare `nan` / `-nan` value
/// (what llama-bench's printer writes for a NaN, e.g. `stddev_ts` of identical samples; not JSON) reads as null.
fn parse_json_or_lines(bytes: &[u8]) -> Result<Value, String> {
    let fixed;
    let bytes = match nan_as_null(bytes) {
        Some(b) => {
            fixed = b;
            &fixed[..]
        }
        None => bytes,
    };
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(whole) => {
            let text = std::str::from_utf8(bytes).map_err(|_| format!("not JSON: {whole}"))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() < 2 {
                return Err(format!("not JSON: {whole}"));
            }
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: not JSON: {e}", i + 1)))
                .collect::<Result<Vec<Value>, _>>()
                .map(Value::Array)
        }
    }
}

/// `bytes` with every bare `nan` / `-nan` value (after a `:`, outside strings) replaced by `null`; `None` when there is
/// none.
fn nan_as_null(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped, mut value_next, mut changed) = (false, false, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            value_next = false;
        } else if matches!(b, b':' | b',' | b'[') {
            value_next = true;
        } else if value_next && !b.is_ascii_whitespace() {
            value_next = false;
            let bare_nan = [&b"-nan"[..], b"nan"].into_iter().find(|w| {
                bytes[i..].starts_with(w) && bytes.get(i + w.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
            });
            if let Some(word) = bare_nan {
                out.extend_from_slice(b"null");
                i += word.len();
                changed = true;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// Typed access to a JSON object's fields, with errors naming the field's path.
struct Fields<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: impl Into<String>) -> Self {
        Self { value, path: path.into() }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn child(&self, key: &str) -> Result<Fields<'a>, String> {
        match self.get(key) {
            Some(v @ Value::Object(_)) => Ok(Fields::new(v, self.name(key))),
            Some(_) => Err(format!("field `{}` is not an object", self.name(key))),
            None => Err(format!("field `{}` is missing", self.name(key))),
        }
    }

    /// A number, if present; an error if present with another type. Accepts "inf" / "nan" strings as Python's json
    /// writes them for `float("inf")` in some tools.
    fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if matches!(s.as_str(), "inf" | "Infinity") => Ok(Some(f64::INFINITY)),
            Some(other) => Err(format!("field `{}` is not a number: {other}", self.name(key))),
        }
    }

    fn f64(&self, key: &str) -> Result<f64, String> {
        self.opt_f64(key)?.ok_or_else(|| format!("field `{}` is missing", self.name(key)))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("field `{}` is not a string: {other}", self.name(key))),
        }
    }

    /// A field as text whatever its JSON type (settings to display).
    fn text(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The metadata of an imported run: what the tool recorded; the machine, engine and build are the tool's and unknown
/// here.
struct ImportedRun<'a> {
    file: &'a Path,
    format: Format,
    created_unix_s: u64,
    model: String,
    workload: WorkloadMeta,
    percentiles: Vec<f64>,
    rows: Vec<RuntimeResult>,
}

impl ImportedRun<'_> {
    fn into_results(self) -> Results {
        Results {
            schema_version: super::SCHEMA_VERSION,
            created_unix_s: self.created_unix_s,
            metadata: RunMetadata {
                git_commit: None,
                cpu_model: format!("unknown (imported from {})", self.format.tool()),
                cores: 0,
                cpu: None,
                bundle: BundleMeta {
                    name: self.model,
                    dir: self.file.display().to_string(),
                    manifest_sha256: String::new(),
                    model_sha256: None,
                },
                workload: self.workload,
                engine: EngineMeta {
                    max_num_seqs: 0,
                    max_num_batched_tokens: 0,
                    max_model_len: 0,
                    block_size: 0,
                    num_kv_blocks: 0,
                    prefix_caching: false,
                    chunked_prefill: false,
                },
                percentiles: self.percentiles,
                slo: BTreeMap::new(),
                provenance: None,
            },
            runs: self.rows,
            quality: None,
        }
    }
}

/// A row of an imported run.
fn row(
    format: Format,
    name: String,
    version: String,
    measured: &str,
    settings: BTreeMap<String, String>,
    metrics: BTreeMap<String, f64>,
) -> RuntimeResult {
    RuntimeResult {
        runtime: name,
        version,
        device: "cpu or gpu: not recorded by the tool".into(),
        dtype: String::new(),
        settings,
        status: "ok".into(),
        error: None,
        metrics: metrics.into_iter().filter(|(_, v)| v.is_finite()).collect(),
        engine: EngineFigures::default(),
        requests_csv: String::new(),
        output_digest: String::new(),
        repeats: Vec::new(),
        measured: measured.into(),
        failures: BTreeMap::new(),
        tool: format.tool().into(),
    }
}

/// A file's name without its directory and extension, for row names.
fn stem(file: &Path) -> String {
    file.file_stem().map_or_else(|| file.display().to_string(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognized_by_content() {
        assert_eq!(detect(br#"{"schema_version": 1, "runs": []}"#), Some(Format::NanoVllm));
        assert_eq!(detect(br#"{"request_throughput": 1.0, "completed": 3}"#), Some(Format::VllmBenchServe));
        assert_eq!(detect(br#"[{"avg_ts": 1.0}]"#), Some(Format::LlamaBench));
        assert_eq!(detect(b"{\"avg_ts\": 1.0}\n{\"avg_ts\": 2.0}\n"), Some(Format::LlamaBench));
        assert_eq!(detect(br#"{"benchmarks": []}"#), Some(Format::GuideLlm));
        assert_eq!(detect(br#"{"something": "else"}"#), None);
        assert_eq!(detect(br#"{"avg_ts": 1.0, "n_prompt": 64}"#), Some(Format::LlamaBench));
        assert_eq!(detect(b"not json"), None);
        assert_eq!(detect(b"[]"), None);
    }

    #[test]
    fn bare_nan_values_read_as_null_outside_strings() {
        let fixed = nan_as_null(br#"{"a": nan, "b": -nan,"c":"nan", "d": [1, nan], "nano": 3, "e": nanx}"#).unwrap();
        assert_eq!(
            String::from_utf8(fixed).unwrap(),
            r#"{"a": null, "b": null,"c":"nan", "d": [1, null], "nano": 3, "e": nanx}"#
        );
        assert!(nan_as_null(br#"{"a": 1, "s": "x: nan"}"#).is_none());
    }

    #[test]
    fn field_errors_name_the_path() {
        let v: Value = serde_json::from_str(r#"{"a": {"b": "x", "c": 2, "d": "inf"}}"#).unwrap();
        let a = Fields::new(&v, "").child("a").unwrap();
        assert_eq!(a.f64("b").unwrap_err(), "field `a.b` is not a number: \"x\"");
        assert_eq!(a.f64("z").unwrap_err(), "field `a.z` is missing");
        assert_eq!(a.f64("c").unwrap(), 2.0);
        assert_eq!(a.f64("d").unwrap(), f64::INFINITY);
        assert_eq!(Fields::new(&v, "").child("q").err().unwrap(), "field `q` is missing");
    }
}
