//! The JSON of one streamed event of an OpenAI-compatible server (`data: {...}` of `/v1/completions` or
//! `/v1/chat/completions` with `stream: true`), read leniently: servers differ in the fields they send, so only the
//! text, the finish reason and the usage are read, and a chunk that is not JSON, or JSON of another shape, is
//! malformed.

use serde::Deserialize;

use super::Endpoint;

/// Token counts a server reports (`usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// What one event carried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Generated text of the first choice (empty for a role-only or usage-only chunk).
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

/// `data: [DONE]`, a chunk, or an error the server sent in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Done,
    Chunk(Chunk),
    ServerError(String),
}

#[derive(Deserialize)]
struct RawChunk {
    #[serde(default)]
    choices: Vec<RawChoice>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawChoice {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    delta: Option<RawDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct RawDelta {
    #[serde(default)]
    content: Option<String>,
}

/// Some servers send `"usage": null`, others counts of their own beside these two.
#[derive(Deserialize)]
struct RawUsage {
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
}

/// Parses the `data` of one event. `Err` names what is wrong with it (a malformed chunk).
pub fn parse_event(data: &str, endpoint: Endpoint) -> Result<StreamEvent, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let raw: RawChunk =
        serde_json::from_str(data).map_err(|e| format!("not a completion chunk ({e}): {}", clip(data)))?;
    if let Some(error) = raw.error {
        let message = error.get("message").and_then(|m| m.as_str()).map_or_else(|| error.to_string(), str::to_owned);
        return Ok(StreamEvent::ServerError(message));
    }
    let usage = raw
        .usage
        .and_then(|u| Some(Usage { prompt_tokens: u.prompt_tokens?, completion_tokens: u.completion_tokens? }));
    let mut chunk = Chunk { usage, ..Chunk::default() };
    if let Some(choice) = raw.choices.into_iter().next() {
        chunk.finish_reason = choice.finish_reason;
        chunk.text = match endpoint {
            Endpoint::Completions => choice.text.or_else(|| choice.delta.and_then(|d| d.content)),
            Endpoint::Chat => choice.delta.and_then(|d| d.content).or(choice.text),
        }
        .unwrap_or_default();
    } else if chunk.usage.is_none() {
        return Err(format!("a chunk with neither choices nor usage: {}", clip(data)));
    }
    Ok(StreamEvent::Chunk(chunk))
}

/// The first 200 characters, for messages.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_chat_usage_and_done_chunks() {
        let c = parse_event(
            r#"{"id":"x","choices":[{"index":0,"text":" Paris","finish_reason":null}]}"#,
            Endpoint::Completions,
        );
        assert_eq!(c, Ok(StreamEvent::Chunk(Chunk { text: " Paris".into(), ..Chunk::default() })));
        let role = parse_event(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#, Endpoint::Chat).unwrap();
        assert_eq!(role, StreamEvent::Chunk(Chunk::default()));
        let chat = parse_event(r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"length"}]}"#, Endpoint::Chat);
        let StreamEvent::Chunk(chat) = chat.unwrap() else { panic!() };
        assert_eq!((chat.text.as_str(), chat.finish_reason.as_deref()), ("Hi", Some("length")));
        let usage = parse_event(
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":16,"total_tokens":23}}"#,
            Endpoint::Chat,
        );
        let StreamEvent::Chunk(usage) = usage.unwrap() else { panic!() };
        assert_eq!(usage.usage, Some(Usage { prompt_tokens: 7, completion_tokens: 16 }));
        assert_eq!(parse_event(" [DONE] ", Endpoint::Completions), Ok(StreamEvent::Done));
        // `"usage": null` beside a choice (vLLM sends it on every chunk when usage is asked for).
        assert!(parse_event(r#"{"choices":[{"text":"a"}],"usage":null}"#, Endpoint::Completions).is_ok());
    }

    #[test]
    fn malformed_chunks_and_server_errors_are_named() {
        let e = parse_event("{not json", Endpoint::Completions).unwrap_err();
        assert!(e.starts_with("not a completion chunk"), "{e}");
        let e = parse_event(r#"{"object":"text_completion"}"#, Endpoint::Completions).unwrap_err();
        assert!(e.contains("neither choices nor usage"), "{e}");
        let e = parse_event(r#"{"choices":"many"}"#, Endpoint::Completions).unwrap_err();
        assert!(e.starts_with("not a completion chunk"), "{e}");
        let err = parse_event(r#"{"error":{"message":"out of memory","code":500}}"#, Endpoint::Completions);
        assert_eq!(err, Ok(StreamEvent::ServerError("out of memory".into())));
        assert_eq!(clip(&"é".repeat(300)).chars().count(), 203);
    }
}
