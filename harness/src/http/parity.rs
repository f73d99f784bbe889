//! Conformance over HTTP: each reference prompt of a bundle sent to a server greedy (temperature 0, fixed length,
//! not streamed, with `logprobs`), its tokens compared with the reference continuation made by transformers, and
//! where the server returns log-probabilities, theirs against the reference's (log-softmax of the reference
//! logits) up to the first divergence, for every token whose id is known. Those are judged too: a float32 server
//! whose logits are within the bundle's float32 tolerance `t` of the reference has log-probabilities within `2 t`
//! (log-softmax subtracts one log-sum-exp, which moves by at most `t`), so that is the default bound
//! (`--max-logprob-diff` sets another).
//!
//! Token ids come from the server when it can give them (vLLM: `return_tokens_as_token_ids`, tokens
//! `token_id:N`); otherwise the returned text is tokenized with the bundle's tokenizer, and the text itself is also
//! compared with the decoded reference. A server in a float32 configuration should match token for token.

use std::time::Duration;

use nano_vllm_bundle::{Logits, ReferencePrompt};
use serde::Serialize;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::chunk::clip;
use super::client::Failure;
use super::{HttpError, PromptFormat, Server};

/// How one prompt compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptAgreement {
    pub prompt: String,
    /// The server's count of prompt tokens (its `usage`), else the reference's.
    pub prompt_tokens: usize,
    /// Whether the server saw the reference's prompt: `false` when its usage counts another length, or a text
    /// prompt does not tokenize back to the reference's ids (`None`: unknown, no usage). Such a prompt's
    /// continuation is not comparable.
    pub prompt_tokens_match: Option<bool>,
    /// Reference continuation length.
    pub reference_tokens: usize,
    /// Tokens the server returned.
    pub server_tokens: usize,
    /// `server` (ids from the server) or `tokenizer` (its text tokenized with the bundle's tokenizer).
    pub ids_from: String,
    /// Positions whose token equals the reference's, over the reference's length.
    pub agreement: f64,
    /// First position that differs (`None`: every token matches).
    pub first_divergence: Option<usize>,
    pub text_match: bool,
    /// |server logprob - reference logprob| over the returned top tokens with known ids, before the first
    /// divergence; `None` without logprobs.
    pub max_abs_logprob_diff: Option<f64>,
    pub mean_abs_logprob_diff: Option<f64>,
    pub logprobs_compared: usize,
    pub error: Option<String>,
}

impl PromptAgreement {
    pub fn matches(&self) -> bool {
        self.error.is_none() && self.first_divergence.is_none()
    }
    /// The server saw the reference's prompt (as far as its usage tells).
    pub fn comparable(&self) -> bool {
        self.prompt_tokens_match != Some(false)
    }
}

/// Every prompt of a bundle against one server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerParity {
    pub target: String,
    pub served_model: String,
    pub prompt_format: String,
    pub prompts: Vec<PromptAgreement>,
    /// Mean of the prompts' agreements.
    pub greedy_agreement: f64,
    /// Every comparable prompt matched token for token (and at least one was comparable).
    pub exact: bool,
    /// Prompts the server tokenized differently (text prompts), left out of `exact` and `greedy_agreement`.
    pub not_comparable: usize,
    /// The largest |server - reference| log-probability allowed.
    pub max_logprob_diff_bound: f64,
    /// Whether every comparable prompt's log-probabilities are within the bound; `None`: the server returned none
    /// to judge.
    pub logprobs_within: Option<bool>,
}

impl ServerParity {
    /// Greedy tokens equal the reference's, and the log-probabilities (where the server gives them) are within the
    /// bound.
    pub fn passed(&self) -> bool {
        self.exact && self.logprobs_within != Some(false)
    }
}

/// The default log-probability bound for a bundle: twice its float32 logit tolerance (the larger of `f32` and
/// `llama_cpp_f32`: a server may run either kind of float32 kernels).
pub fn default_logprob_bound(tolerances: &nano_vllm_bundle::Tolerances) -> f64 {
    let t = tolerances.llama_cpp_f32.as_ref().map_or(0.0, |l| l.max_abs_diff).max(tolerances.f32.max_abs_diff);
    2.0 * t as f64
}

/// The request for one reference prompt.
pub fn body(
    prompt: &ReferencePrompt,
    served_model: &str,
    format: PromptFormat,
    tokenizer: &Tokenizer,
    top: usize,
) -> Result<Value, HttpError> {
    let prompt_value = match format {
        PromptFormat::Ids => json!(prompt.prompt_ids),
        PromptFormat::Text => json!(
            tokenizer
                .decode(&prompt.prompt_ids, true)
                .map_err(|e| HttpError::Decode { request: prompt.name.clone(), message: e.to_string() })?
        ),
    };
    let n = prompt.greedy_tokens.len();
    Ok(json!({
        "model": served_model,
        "prompt": prompt_value,
        "max_tokens": n,
        "min_tokens": n,
        "ignore_eos": true,
        "temperature": 0.0,
        // llama.cpp's Python server penalizes repeats by default (1.1), which is not greedy decoding.
        "repeat_penalty": 1.0,
        "logprobs": top,
        "return_tokens_as_token_ids": true,
    }))
}

/// Compares a server's non-streamed completion response with the reference.
pub fn compare(prompt: &ReferencePrompt, response: &Value, tokenizer: &Tokenizer) -> PromptAgreement {
    let reference = &prompt.greedy_tokens;
    let mut out = PromptAgreement {
        prompt: prompt.name.clone(),
        prompt_tokens: prompt.prompt_ids.len(),
        prompt_tokens_match: None,
        reference_tokens: reference.len(),
        server_tokens: 0,
        ids_from: String::new(),
        agreement: 0.0,
        first_divergence: Some(0),
        text_match: false,
        max_abs_logprob_diff: None,
        mean_abs_logprob_diff: None,
        logprobs_compared: 0,
        error: None,
    };
    let choice = &response["choices"][0];
    let Some(text) = choice["text"].as_str() else {
        out.error = Some(format!("no choices[0].text in the response: {}", clip(&response.to_string())));
        return out;
    };
    if let Some(n) = response["usage"]["prompt_tokens"].as_u64() {
        out.prompt_tokens = n as usize;
        out.prompt_tokens_match = Some(n as usize == prompt.prompt_ids.len());
    }
    let logprobs = &choice["logprobs"];
    let server_ids: Option<Vec<u32>> =
        logprobs["tokens"].as_array().and_then(|t| t.iter().map(|s| s.as_str().and_then(token_id)).collect());
    let ids = match server_ids {
        Some(ids) => {
            out.ids_from = "server".into();
            ids
        }
        None => {
            out.ids_from = "tokenizer".into();
            tokenizer.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default()
        }
    };
    out.server_tokens = ids.len();
    let same = reference.iter().zip(&ids).filter(|(a, b)| a == b).count();
    out.agreement = if reference.is_empty() { 1.0 } else { same as f64 / reference.len() as f64 };
    out.first_divergence = (0..reference.len().max(ids.len())).find(|&i| reference.get(i) != ids.get(i));
    out.text_match = tokenizer.decode(reference, false).is_ok_and(|r| r == text);

    // Log-probabilities of the returned top tokens (and of the chosen one), before the first divergence.
    let until = out.first_divergence.unwrap_or(reference.len()).min(prompt.greedy_logits.rows());
    let mut diffs = Vec::new();
    if let Some(tops) = logprobs["top_logprobs"].as_array() {
        for (step, top) in tops.iter().enumerate().take(until) {
            let reference_lp = log_softmax(&prompt.greedy_logits, step);
            for (token, lp) in top.as_object().into_iter().flatten() {
                if let (Some(id), Some(lp)) = (token_id(token).or_else(|| single_token(tokenizer, token)), lp.as_f64())
                    && let Some(r) = reference_lp.get(id as usize)
                {
                    diffs.push((lp - r).abs());
                }
            }
        }
    }
    if !diffs.is_empty() {
        out.logprobs_compared = diffs.len();
        out.max_abs_logprob_diff = Some(diffs.iter().copied().fold(0.0, f64::max));
        out.mean_abs_logprob_diff = Some(diffs.iter().sum::<f64>() / diffs.len() as f64);
    }
    out
}

/// `token_id:123` (vLLM's `return_tokens_as_token_ids`) -> 123.
fn token_id(s: &str) -> Option<u32> {
    s.strip_prefix("token_id:")?.parse().ok()
}

/// Whether the prompt's text tokenizes back to its ids: when it does not (the reference substituted tokens, or
/// merges differ), a server given the text sees another prompt.
fn text_round_trips(prompt: &ReferencePrompt, tokenizer: &Tokenizer) -> bool {
    let text = tokenizer.decode(&prompt.prompt_ids, true).unwrap_or_default();
    tokenizer.encode(text.as_str(), false).is_ok_and(|e| e.get_ids() == prompt.prompt_ids.as_slice())
}

/// A server's token text (llama.cpp's server returns pieces, not ids) as the one token it encodes to, if one.
fn single_token(tokenizer: &Tokenizer, piece: &str) -> Option<u32> {
    let e = tokenizer.encode(piece, false).ok()?;
    match e.get_ids() {
        [id] => Some(*id),
        _ => None,
    }
}

fn log_softmax(logits: &Logits, row: usize) -> Vec<f64> {
    let row = logits.row(row);
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    row.iter().map(|&x| x as f64 - log_z).collect()
}

/// Sends every prompt of `prompts` to `server` and compares. A request that fails is that prompt's error.
/// `format` `None`: token ids, or text when the server refuses ids on the first prompt and takes text (llama.cpp's
/// Python server takes only text).
pub fn check_server(
    server: &Server,
    prompts: &[ReferencePrompt],
    tokenizer: &Tokenizer,
    format: Option<PromptFormat>,
    timeout: Duration,
    logprob_bound: f64,
) -> Result<ServerParity, HttpError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HttpError::Client(e.to_string()))?;
    let client = super::load::http_client()?;
    let url = format!("{}/completions", server.base_url);
    let mut results = Vec::new();
    let mut format = format;
    for prompt in prompts {
        let fmt = format.unwrap_or(PromptFormat::Ids);
        let body = body(prompt, &server.served_model, fmt, tokenizer, 5)?;
        let response = runtime.block_on(async {
            let send = async {
                // A request that never reached the server (its connection closed under it) is sent once more: a
                // greedy completion is the same whenever it runs, and the check is of the answer, not of timing.
                let r = match client.post(&url).json(&body).send().await {
                    Err(e) if e.is_request() || e.is_connect() => client.post(&url).json(&body).send().await,
                    r => r,
                }
                .map_err(|e| Failure::Other(e.to_string()))?;
                let status = r.status().as_u16();
                let text = r.text().await.map_err(|e| Failure::Dropped(Some(e.to_string())))?;
                if !(200..300).contains(&status) {
                    return Err(Failure::Status { status, body: clip(text.trim()) });
                }
                serde_json::from_str::<Value>(&text).map_err(|e| Failure::Malformed(format!("{e}: {}", clip(&text))))
            };
            tokio::time::timeout(timeout, send).await.unwrap_or(Err(Failure::Timeout(timeout)))
        });
        if format.is_none() {
            if matches!(response, Err(Failure::Status { .. })) {
                // Refused token ids (HTTP 400/422, or 500 from llama.cpp's Python server): this prompt as text,
                // and every other one too if that works.
                let text = check_server(
                    server,
                    std::slice::from_ref(prompt),
                    tokenizer,
                    Some(PromptFormat::Text),
                    timeout,
                    logprob_bound,
                )?;
                if text.prompts.iter().all(|p| p.error.is_none()) {
                    format = Some(PromptFormat::Text);
                    results.extend(text.prompts);
                    continue;
                }
            }
            format = Some(fmt);
        }
        let round_trips = fmt == PromptFormat::Ids || text_round_trips(prompt, tokenizer);
        results.push(match response {
            Ok(v) => {
                let mut a = compare(prompt, &v, tokenizer);
                if !round_trips {
                    a.prompt_tokens_match = Some(false);
                }
                a
            }
            Err(f) => {
                let mut a = compare(prompt, &Value::Null, tokenizer);
                a.error = Some(f.to_string());
                a
            }
        });
    }
    let comparable: Vec<&PromptAgreement> = results.iter().filter(|r| r.comparable()).collect();
    let greedy_agreement = if comparable.is_empty() {
        0.0
    } else {
        comparable.iter().map(|r| r.agreement).sum::<f64>() / comparable.len() as f64
    };
    let exact = !comparable.is_empty() && comparable.iter().all(|r| r.matches());
    let not_comparable = results.len() - comparable.len();
    let judged: Vec<f64> = comparable.iter().filter_map(|r| r.max_abs_logprob_diff).collect();
    let logprobs_within = (!judged.is_empty()).then(|| judged.iter().all(|&d| d <= logprob_bound));
    Ok(ServerParity {
        target: server.label(),
        served_model: server.served_model.clone(),
        prompt_format: match format {
            Some(PromptFormat::Text) => "text",
            _ => "ids",
        }
        .into(),
        exact,
        not_comparable,
        greedy_agreement,
        max_logprob_diff_bound: logprob_bound,
        logprobs_within,
        prompts: results,
    })
}

/// One line per prompt.
pub fn table(p: &ServerParity) -> String {
    use std::fmt::Write;
    let logprobs = match p.logprobs_within {
        Some(true) => format!("log-probabilities within {:.1e}", p.max_logprob_diff_bound),
        Some(false) => format!("LOG-PROBABILITIES DIFFER beyond {:.1e}", p.max_logprob_diff_bound),
        None => "no log-probabilities to judge".into(),
    };
    let mut out = format!(
        "{} (model {}, prompt as {}): greedy agreement {:.3}, {}, {logprobs}{}\n",
        p.target,
        p.served_model,
        p.prompt_format,
        p.greedy_agreement,
        if p.exact { "every comparable prompt token for token" } else { "DIVERGES" },
        if p.not_comparable > 0 {
            format!(" ({} prompts tokenized differently by the server, not compared)", p.not_comparable)
        } else {
            String::new()
        }
    );
    for r in &p.prompts {
        let lp = match (r.max_abs_logprob_diff, r.mean_abs_logprob_diff) {
            (Some(max), Some(mean)) => {
                format!("logprob |diff| max {max:.2e} mean {mean:.2e} over {}", r.logprobs_compared)
            }
            _ => "no logprobs".into(),
        };
        let status = match (&r.error, r.first_divergence) {
            (Some(e), _) => format!("error: {e}"),
            (None, _) if !r.comparable() => {
                format!("not comparable: its text is not the reference's tokens ({} prompt tokens)", r.prompt_tokens)
            }
            (None, None) => "match".into(),
            (None, Some(i)) => format!("diverges at token {i}"),
        };
        let _ = writeln!(
            out,
            "  {:<10} prompt {:>4} tok  agreement {:.3} ({}/{} tokens, ids from {})  text {}  {lp}  {status}",
            r.prompt,
            r.prompt_tokens,
            r.agreement,
            (r.agreement * r.reference_tokens as f64).round(),
            r.reference_tokens,
            r.ids_from,
            if r.text_match { "same" } else { "differs" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> (ReferencePrompt, Tokenizer) {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        let r = bundle.reference().unwrap();
        let tok = Tokenizer::from_file(bundle.dir().join("tokenizer.json")).unwrap();
        (r.prompts.into_iter().find(|p| p.name == "short").unwrap(), tok)
    }

    fn response(ids: &[u32], tok: &Tokenizer, with_ids: bool, logprob_shift: f64, p: &ReferencePrompt) -> Value {
        let tokens: Vec<String> = ids
            .iter()
            .map(|id| if with_ids { format!("token_id:{id}") } else { tok.id_to_token(*id).unwrap() })
            .collect();
        let tops: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let lp = log_softmax(&p.greedy_logits, i.min(p.greedy_logits.rows() - 1))[*id as usize] + logprob_shift;
                json!({ format!("token_id:{id}"): lp })
            })
            .collect();
        json!({
            "choices": [{ "text": tok.decode(ids, false).unwrap(), "logprobs": { "tokens": tokens, "top_logprobs": tops } }],
            "usage": { "prompt_tokens": p.prompt_ids.len(), "completion_tokens": ids.len() }
        })
    }

    #[test]
    fn an_exact_server_matches_and_a_divergent_one_is_located() {
        let (p, tok) = reference();
        let exact = compare(&p, &response(&p.greedy_tokens, &tok, true, 0.0, &p), &tok);
        assert!(exact.matches() && exact.text_match, "{exact:?}");
        assert_eq!((exact.agreement, exact.ids_from.as_str()), (1.0, "server"));
        assert!(exact.max_abs_logprob_diff.unwrap() < 1e-9);
        assert_eq!(exact.logprobs_compared, p.greedy_tokens.len());

        let mut wrong = p.greedy_tokens.clone();
        let k = wrong.len() - 3;
        wrong[k] = (wrong[k] + 1) % 512;
        let d = compare(&p, &response(&wrong, &tok, true, 0.25, &p), &tok);
        assert_eq!(d.first_divergence, Some(k));
        assert!((d.agreement - (wrong.len() - 1) as f64 / wrong.len() as f64).abs() < 1e-12);
        // Log-probabilities are compared before the divergence only.
        assert_eq!(d.logprobs_compared, k);
        assert!((d.max_abs_logprob_diff.unwrap() - 0.25).abs() < 1e-9);

        // Without ids from the server, its text is tokenized.
        let t = compare(&p, &response(&p.greedy_tokens, &tok, false, 0.0, &p), &tok);
        assert_eq!(t.ids_from, "tokenizer");
        let shorter = compare(&p, &response(&p.greedy_tokens[..4], &tok, true, 0.0, &p), &tok);
        assert_eq!(shorter.first_divergence, Some(4));
        let broken = compare(&p, &json!({"object": "error"}), &tok);
        assert!(broken.error.unwrap().starts_with("no choices[0].text"));
    }

    #[test]
    fn log_probabilities_are_judged_against_twice_the_float32_tolerance() {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        // tiny-llama's float32 tolerance is 1e-4.
        assert!((default_logprob_bound(bundle.tolerances()) - 2e-4).abs() < 1e-9);
        let server = |exact: bool, within: Option<bool>| ServerParity {
            target: "t".into(),
            served_model: "m".into(),
            prompt_format: "ids".into(),
            prompts: Vec::new(),
            greedy_agreement: 1.0,
            exact,
            not_comparable: 0,
            max_logprob_diff_bound: 2e-4,
            logprobs_within: within,
        };
        assert!(server(true, Some(true)).passed() && server(true, None).passed());
        assert!(!server(true, Some(false)).passed() && !server(false, Some(true)).passed());
        let t = table(&server(true, Some(false)));
        assert!(t.contains("LOG-PROBABILITIES DIFFER beyond 2.0e-4"), "{t}");
    }

    #[test]
    fn the_request_asks_for_greedy_fixed_length_with_logprobs() {
        let (p, tok) = reference();
        let b = body(&p, "tiny", PromptFormat::Ids, &tok, 5).unwrap();
        assert_eq!(b["prompt"], json!(p.prompt_ids));
        assert_eq!((b["max_tokens"].as_u64(), b["min_tokens"].as_u64()), (Some(16), Some(16)));
        assert_eq!((b["temperature"].as_f64(), b["logprobs"].as_u64()), (Some(0.0), Some(5)));
        assert!(body(&p, "tiny", PromptFormat::Text, &tok, 5).unwrap()["prompt"].is_string());
    }
}
