//! Import of a local ShareGPT-format JSON file (a list of `{"conversations": [{"from": "human", "value": ...},
//! {"from": "gpt", "value": ...}, ...]}`), as vLLM's benchmark samples it: each conversation's first human turn is
//! the prompt and the reply's token count is the request's `max_tokens`; conversations with a prompt or reply under
//! 4 tokens, or longer than the limits, are skipped; a seeded shuffle picks the requests.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::synthetic::Arrivals;
use super::{TraceRequest, Workload};

#[derive(Debug, Deserialize)]
struct Conversation {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Debug, Deserialize)]
struct Turn {
    from: String,
    value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ShareGptError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a ShareGPT JSON list: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: tokenizing conversation {index}: {message}", path.display())]
    Tokenize { path: PathBuf, index: usize, message: String },
    #[error("{}: only {found} usable conversations, {wanted} requested", path.display())]
    TooFew { path: PathBuf, found: usize, wanted: usize },
}

/// Limits on imported requests.
#[derive(Debug, Clone, Copy)]
pub struct ShareGptLimits {
    pub max_prompt_tokens: usize,
    pub max_output_tokens: usize,
    /// Prompt + output must fit the model.
    pub max_model_len: usize,
}

/// Imports `num_requests` conversations. `count_tokens` tokenizes a text (the bundle's tokenizer).
pub fn import(
    path: &Path,
    num_requests: usize,
    limits: ShareGptLimits,
    arrivals: Arrivals,
    seed: u64,
    count_tokens: impl Fn(&str) -> Result<usize, String>,
) -> Result<Workload, ShareGptError> {
    let bytes = std::fs::read(path).map_err(|source| ShareGptError::Io { path: path.into(), source })?;
    let data: Vec<Conversation> =
        serde_json::from_slice(&bytes).map_err(|source| ShareGptError::Json { path: path.into(), source })?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    let mut picked = Vec::new();
    for index in order {
        if picked.len() == num_requests {
            break;
        }
        let turns = &data[index].conversations;
        let Some(h) = turns.iter().position(|t| t.from == "human" || t.from == "user") else { continue };
        let Some(reply) = turns[h + 1..].iter().find(|t| t.from == "gpt" || t.from == "assistant") else { continue };
        let tokenize = |text: &str| {
            count_tokens(text).map_err(|message| ShareGptError::Tokenize { path: path.into(), index, message })
        };
        let (prompt_len, output_len) = (tokenize(&turns[h].value)?, tokenize(&reply.value)?);
        if prompt_len < 4
            || output_len < 4
            || prompt_len > limits.max_prompt_tokens
            || prompt_len + output_len.min(limits.max_output_tokens) > limits.max_model_len
        {
            continue;
        }
        picked.push((turns[h].value.clone(), output_len.min(limits.max_output_tokens)));
    }
    if picked.len() < num_requests {
        return Err(ShareGptError::TooFew { path: path.into(), found: picked.len(), wanted: num_requests });
    }
    let times = arrivals.times(picked.len(), &mut rng);
    Ok(Workload::new(
        picked
            .into_iter()
            .zip(times)
            .enumerate()
            .map(|(i, ((text, max_tokens), arrival_s))| TraceRequest {
                id: Some(format!("sharegpt-{i}")),
                prompt: Some(text),
                prompt_ids: None,
                ..TraceRequest::ids(arrival_s, Vec::new(), max_tokens)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_first_human_turn_and_reply_length_and_skips_short_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sg.json");
        let convs = serde_json::json!([
            {"conversations": [{"from": "human", "value": "a b c d e"}, {"from": "gpt", "value": "w x y z q r"}]},
            {"conversations": [{"from": "human", "value": "too short"}, {"from": "gpt", "value": "one two three four"}]},
            {"conversations": [{"from": "system", "value": "s"}, {"from": "user", "value": "p q r s t u"}, {"from": "assistant", "value": "1 2 3 4 5 6 7 8"}]},
            {"conversations": [{"from": "gpt", "value": "no human here at all"}]}
        ]);
        std::fs::write(&path, convs.to_string()).unwrap();
        let words = |t: &str| Ok(t.split_whitespace().count());
        let limits = ShareGptLimits { max_prompt_tokens: 100, max_output_tokens: 7, max_model_len: 100 };
        let w = import(&path, 2, limits, Arrivals::Offline, 0, words).unwrap();
        let mut got: Vec<(String, usize)> =
            w.requests.iter().map(|r| (r.prompt.clone().unwrap(), r.max_tokens)).collect();
        got.sort();
        assert_eq!(got, [("a b c d e".to_string(), 6), ("p q r s t u".to_string(), 7)]);
        let err = import(&path, 3, limits, Arrivals::Offline, 0, words).unwrap_err().to_string();
        assert!(err.contains("only 2 usable conversations, 3 requested"), "{err}");
        std::fs::write(&path, "{\"not\": \"a list\"}").unwrap();
        assert!(
            import(&path, 1, limits, Arrivals::Offline, 0, words)
                .unwrap_err()
                .to_string()
                .contains("not a ShareGPT JSON list")
        );
    }
}
