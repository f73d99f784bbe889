//! A workload made ready for a run: text prompts tokenized, every request checked against the model's limits, and
//! the hash that says two runs measured the same workload.

use nano_vllm_engine::SamplingParams;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::replay::ResolvedRequest;
use crate::workload::{Prompt, Workload};

/// A workload that cannot run on the model; names the request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    #[error("request {request}: cannot tokenize the prompt: {message}")]
    Tokenize { request: String, message: String },
    #[error("request {request}: a text prompt needs the model's tokenizer")]
    NoTokenizer { request: String },
    #[error("request {request}: the prompt is empty")]
    EmptyPrompt { request: String },
    #[error("request {request}: token id {token} is outside the vocabulary ({vocab_size})")]
    TokenOutOfRange { request: String, token: u32, vocab_size: usize },
    #[error(
        "request {request}: prompt ({prompt} tokens) + max_tokens ({max_tokens}) exceeds the model's context ({context})"
    )]
    TooLong { request: String, prompt: usize, max_tokens: usize, context: usize },
    #[error(
        "request {request}: arrives at {arrival_s:.3e} s, beyond the longest run this harness replays ({MAX_ARRIVAL_S} s): \
         a rate or trace in other units?"
    )]
    ArrivalTooLate { request: String, arrival_s: f64 },
    #[error("--warmup {warmup} leaves no measured request of {requests}")]
    NoMeasuredRequest { warmup: usize, requests: usize },
}

/// The latest arrival time a workload may have (about 11.6 days): a replay waits for every arrival, so a rate given
/// in the wrong units (or an arrival time of 1e300) would otherwise wait forever.
pub const MAX_ARRIVAL_S: f64 = 1e6;

/// Tokenizes text prompts (`tokenizer`; a workload of token ids needs none) and checks every request against the
/// model's limits.
pub fn resolve(
    workload: &Workload,
    tokenizer: Option<&Tokenizer>,
    vocab_size: usize,
    context: usize,
) -> Result<Vec<ResolvedRequest>, BenchError> {
    workload
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let request = r.id.clone().unwrap_or_else(|| format!("#{i}"));
            let prompt = match r.prompt() {
                Prompt::Ids(ids) => ids,
                // As a server tokenizes a completion prompt: with the model's special tokens (e.g. BOS).
                Prompt::Text(t) => tokenizer
                    .ok_or_else(|| BenchError::NoTokenizer { request: request.clone() })?
                    .encode(t.as_str(), true)
                    .map_err(|e| BenchError::Tokenize { request: request.clone(), message: e.to_string() })?
                    .get_ids()
                    .to_vec(),
            };
            if prompt.is_empty() {
                return Err(BenchError::EmptyPrompt { request });
            }
            if let Some(&token) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(BenchError::TokenOutOfRange { request, token, vocab_size });
            }
            if prompt.len().saturating_add(r.max_tokens) > context {
                return Err(BenchError::TooLong { request, prompt: prompt.len(), max_tokens: r.max_tokens, context });
            }
            Ok(ResolvedRequest { id: r.id.clone(), arrival_s: r.arrival_s, prompt, params: r.sampling_params() })
        })
        .collect()
}

/// sha256 of the resolved requests (arrivals, token ids, parameters): equal hashes, the same workload.
pub fn workload_hash(requests: &[ResolvedRequest]) -> String {
    let mut h = Sha256::new();
    for r in requests {
        h.update(format!("{}|{:?}|{}\n", r.arrival_s, r.prompt, params_key(&r.params)).as_bytes());
    }
    hex::encode(h.finalize())
}

/// The sampling parameters as the workload hash sees them: the engine's original fields as `Debug` printed them,
/// and fields added since (`min_tokens`, `logprobs`) only when set, so that a workload that does not use them keeps
/// the hash recorded in committed baselines.
pub(crate) fn params_key(p: &SamplingParams) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "SamplingParams {{ temperature: {:?}, top_k: {:?}, top_p: {:?}, max_tokens: {:?}, ignore_eos: {:?}, \
         stop_token_ids: {:?}, seed: {:?}",
        p.temperature, p.top_k, p.top_p, p.max_tokens, p.ignore_eos, p.stop_token_ids, p.seed
    );
    if p.min_tokens != 0 {
        let _ = write!(s, ", min_tokens: {:?}", p.min_tokens);
    }
    if let Some(n) = p.logprobs {
        let _ = write!(s, ", logprobs: {n:?}");
    }
    let _ = write!(s, ", logits: {:?} }}", p.logits);
    s
}

/// One workload to measure: its requests (warm-up first) and where they came from.
#[derive(Debug, Clone)]
pub struct BenchWorkload {
    /// `synthetic`, `synthetic@RATE` or the trace's path.
    pub source: String,
    pub requests: Vec<ResolvedRequest>,
    /// The synthetic workload's seed.
    pub seed: Option<u64>,
    /// Online request rate and burstiness (`None`: offline, or a trace's own timestamps).
    pub rate: Option<f64>,
    pub burstiness: Option<f64>,
}
