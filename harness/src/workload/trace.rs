//! The JSONL trace format: one request a line.
//!
//! ```json
//! {"id": "r0", "arrival_s": 0.25, "prompt_ids": [5, 17, 9], "max_tokens": 32}
//! {"arrival_s": 0.5, "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.8, "seed": 7}
//! ```
//!
//! Fields: `arrival_s` (seconds from the start, default 0), exactly one of `prompt` (text, tokenized with the
//! bundle's tokenizer) and `prompt_ids`, `max_tokens` (required), and optionally `id`, `temperature` (0 = greedy),
//! `top_p`, `top_k`, `seed`, `ignore_eos` (default true: benchmarks generate exactly `max_tokens`),
//! `stop_token_ids`. Unknown fields are errors, so a typo is not silently ignored.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use nano_vllm_engine::SamplingParams;
use serde::{Deserialize, Serialize};

/// A request's prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub arrival_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ids: Option<Vec<u32>>,
    pub max_tokens: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_token_ids: Vec<u32>,
}

impl TraceRequest {
    /// A request of token ids arriving at `arrival_s`.
    pub fn ids(arrival_s: f64, prompt_ids: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            id: None,
            arrival_s,
            prompt: None,
            prompt_ids: Some(prompt_ids),
            max_tokens,
            temperature: None,
            top_p: None,
            top_k: None,
            seed: None,
            ignore_eos: None,
            stop_token_ids: Vec::new(),
        }
    }

    pub fn prompt(&self) -> Prompt {
        match (&self.prompt, &self.prompt_ids) {
            (Some(text), _) => Prompt::Text(text.clone()),
            (None, Some(ids)) => Prompt::Ids(ids.clone()),
            (None, None) => Prompt::Ids(Vec::new()),
        }
    }

    pub fn sampling_params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.unwrap_or(0.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k,
            seed: self.seed,
            ignore_eos: self.ignore_eos.unwrap_or(true),
            stop_token_ids: self.stop_token_ids.clone(),
            ..SamplingParams::greedy(self.max_tokens)
        }
    }

    /// Checks what serde cannot: one prompt, a finite non-negative arrival, valid sampling parameters.
    fn validate(&self) -> Result<(), String> {
        match (&self.prompt, &self.prompt_ids) {
            (Some(_), Some(_)) => return Err("has both `prompt` and `prompt_ids`".into()),
            (None, None) => return Err("has neither `prompt` nor `prompt_ids`".into()),
            (None, Some(ids)) if ids.is_empty() => return Err("`prompt_ids` is empty".into()),
            _ => {}
        }
        if !(self.arrival_s.is_finite() && self.arrival_s >= 0.0) {
            return Err(format!("`arrival_s` must be a finite number >= 0, got {}", self.arrival_s));
        }
        self.sampling_params().validate().map_err(|e| e.to_string())
    }
}

/// A trace that could not be read; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line { path: PathBuf, line: usize, message: String },
    #[error("{}: the trace holds no request", path.display())]
    Empty { path: PathBuf },
}

/// A run's requests, sorted by arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub requests: Vec<TraceRequest>,
}

impl Workload {
    pub fn new(mut requests: Vec<TraceRequest>) -> Self {
        requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        Self { requests }
    }
    /// The same requests all arriving at t = 0 (offline: maximum throughput).
    pub fn offline(&self) -> Self {
        Self { requests: self.requests.iter().cloned().map(|r| TraceRequest { arrival_s: 0.0, ..r }).collect() }
    }
}

/// The longest trace line read (a request with a prompt of millions of tokens fits).
const MAX_LINE_BYTES: u64 = 64 << 20;

/// Reads a JSONL trace (blank lines and lines starting with `#` are skipped).
pub fn read_trace(path: &Path) -> Result<Workload, TraceError> {
    use std::io::Read;
    let io = |source| TraceError::Io { path: path.into(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut requests = Vec::new();
    let mut buf = Vec::new();
    for i in 0.. {
        // One line at a time, at most MAX_LINE_BYTES: a file with no newline (or /dev/zero) is an error, not a hang.
        buf.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let bad = |message: String| TraceError::Line { path: path.into(), line: i + 1, message };
        if buf.len() as u64 > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            return Err(bad(format!("longer than {} MiB without a newline: not a JSONL trace", MAX_LINE_BYTES >> 20)));
        }
        let text = std::str::from_utf8(&buf).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        // A byte-order mark (editors on Windows write one) is not part of the first line's JSON.
        let text = if i == 0 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text }.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let request: TraceRequest = serde_json::from_str(text).map_err(|e| bad(line_error(text, &e)))?;
        request.validate().map_err(bad)?;
        requests.push(request);
    }
    if requests.is_empty() {
        return Err(TraceError::Empty { path: path.into() });
    }
    Ok(Workload::new(requests))
}

/// What is wrong with a line that is not a request: its JSON kind when it is valid JSON of another kind (an array,
/// a number, ...), else serde's message.
fn line_error(text: &str, e: &serde_json::Error) -> String {
    let kind = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) | Err(_) => return e.to_string(),
        Ok(serde_json::Value::Array(_)) => "an array",
        Ok(serde_json::Value::String(_)) => "a string",
        Ok(serde_json::Value::Number(_)) => "a number",
        Ok(serde_json::Value::Bool(_)) => "a boolean",
        Ok(serde_json::Value::Null) => "null",
    };
    format!(
        "expected a request, a JSON object such as {{\"prompt\": \"...\", \"max_tokens\": 16}}, one per line; found {kind}"
    )
}

/// Writes a trace as JSONL.
pub fn write_trace(path: &Path, workload: &Workload) -> Result<(), TraceError> {
    let io = |source| TraceError::Io { path: path.into(), source };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in &workload.requests {
        serde_json::to_writer(&mut out, r).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_sorted_requests_with_defaults() {
        let (_d, p) = trace(
            "# comment\n{\"arrival_s\": 1.5, \"prompt\": \"hi\", \"max_tokens\": 4}\n\n{\"prompt_ids\": [3, 4], \"max_tokens\": 2, \"temperature\": 0.5, \"seed\": 9}\n",
        );
        let w = read_trace(&p).unwrap();
        assert_eq!(w.requests.len(), 2);
        assert_eq!(w.requests[0].prompt(), Prompt::Ids(vec![3, 4]));
        assert_eq!(w.requests[1].prompt(), Prompt::Text("hi".into()));
        let sp = w.requests[0].sampling_params();
        assert_eq!((sp.temperature, sp.seed, sp.ignore_eos, sp.max_tokens), (0.5, Some(9), true, 2));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        for (text, needle) in [
            ("{\"prompt\": \"a\", \"max_tokens\": 1}\n{\"prompt\": \"b\"}\n", ":2: missing field `max_tokens`"),
            ("{\"prompt\": \"a\", \"max_token\": 1}\n", ":1: unknown field `max_token`"),
            ("{\"prompt\": \"a\", \"prompt_ids\": [1], \"max_tokens\": 1}\n", ":1: has both `prompt` and `prompt_ids`"),
            ("{\"max_tokens\": 1}\n", ":1: has neither"),
            ("{\"prompt_ids\": [1], \"max_tokens\": 0}\n", ":1: max_tokens must be at least 1"),
            ("{\"prompt_ids\": [1], \"max_tokens\": 1, \"arrival_s\": -2}\n", ":1: `arrival_s` must be"),
            ("not json\n", ":1: expected"),
        ] {
            let (_d, p) = trace(text);
            let err = read_trace(&p).unwrap_err().to_string();
            assert!(err.contains("t.jsonl") && err.contains(needle), "{err} (wanted {needle})");
        }
        let (_d, p) = trace("\n# only comments\n");
        assert!(read_trace(&p).unwrap_err().to_string().contains("holds no request"));
        assert!(
            read_trace(Path::new("/nonexistent/t.jsonl")).unwrap_err().to_string().contains("/nonexistent/t.jsonl")
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let w = Workload::new(vec![TraceRequest::ids(0.5, vec![1, 2], 3), TraceRequest::ids(0.1, vec![4], 1)]);
        let (_d, p) = trace("");
        write_trace(&p, &w).unwrap();
        assert_eq!(read_trace(&p).unwrap(), w);
        assert!(w.offline().requests.iter().all(|r| r.arrival_s == 0.0));
    }

    mod fuzz {
        //! Random lines (the trace's own keys with values of every JSON type and extreme numbers, and raw bytes):
        //! each is a request that validates, or an error naming its line; never a panic. proptest, 512 cases per
        //! run, failures shrunk and kept in proptest-regressions/.
        use proptest::prelude::*;

        use super::*;

        const KEYS: [&str; 13] = [
            "id",
            "arrival_s",
            "prompt",
            "prompt_ids",
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "seed",
            "ignore_eos",
            "stop_token_ids",
            "min_tokens",
            "logprobs",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                any::<i64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| format!("{v:e}")),
                prop::sample::select(vec!["1e308", "-0", "1e-320", "18446744073709551616", "4294967296", "0.5"])
                    .prop_map(str::to_owned),
                "[a-z ]{0,8}".prop_map(|v| format!("{v:?}")),
                prop::collection::vec(any::<i64>(), 0..6).prop_map(|v| format!("{v:?}")),
                prop::collection::vec(0u32..600, 0..6).prop_map(|v| format!("{v:?}")),
            ]
        }

        fn line() -> impl Strategy<Value = String> {
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..8).prop_map(|fields| {
                let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_line_is_a_valid_request_or_a_named_error(lines in prop::collection::vec(line(), 1..4)) {
                let (_dir, p) = trace(&(lines.join("\n") + "\n"));
                match read_trace(&p) {
                    Ok(w) => {
                        for r in &w.requests {
                            prop_assert!(r.validate().is_ok());
                            prop_assert!(r.arrival_s.is_finite() && r.arrival_s >= 0.0 && r.max_tokens >= 1);
                        }
                    }
                    Err(e) => prop_assert!(e.to_string().contains("t.jsonl"), "{e}"),
                }
            }

            #[test]
            fn any_bytes_are_a_trace_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("t.jsonl");
                std::fs::write(&p, &bytes).unwrap();
                if let Err(e) = read_trace(&p) {
                    prop_assert!(e.to_string().contains("t.jsonl"), "{e}");
                }
            }
        }
    }
}
