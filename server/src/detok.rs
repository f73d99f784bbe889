//! Output text as tokens arrive: incremental detokenization (vLLM's and transformers' `TextStreamer` method: decode a
//! short window of recent tokens and emit what grew, holding back a piece that ends in an incomplete UTF-8
//! character) and stop strings (the text is cut before the first match, which is never sent; text that could still
//! be the start of a stop string is held back until it cannot). As in vLLM, stop strings are looked for only from the
//! `min_tokens`-th output token on, and only in text that ends after it (a match wholly inside text that came
//! earlier never stops the request).

use tokenizers::Tokenizer;

/// One request's text so far.
#[derive(Debug, Default)]
pub struct IncrementalText {
    ids: Vec<u32>,
    /// Tokens before `prefix` are settled; `prefix..read` were decoded last time (the context of the next piece).
    prefix: usize,
    read: usize,
    /// Text decoded, not yet sent (held back for stop strings).
    pending: String,
    stop: Vec<String>,
    /// Stop strings count from this many output tokens on (the request's `min_tokens`).
    min_tokens: usize,
    /// The stop string that matched.
    stopped: Option<String>,
}

impl IncrementalText {
    pub fn new(stop: Vec<String>, min_tokens: usize) -> Self {
        Self { stop: stop.into_iter().filter(|s| !s.is_empty()).collect(), min_tokens, ..Self::default() }
    }

    /// The stop string that ended the text, if one did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Adds a token; returns the text that may be sent now (empty when held back). After a stop string matched,
    /// further tokens add nothing.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<String, String> {
        if self.stopped.is_some() {
            return Ok(String::new());
        }
        self.ids.push(token);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], true).map_err(|e| e.to_string())?;
        let now = tokenizer.decode(&self.ids[self.prefix..], true).map_err(|e| e.to_string())?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            self.pending.push_str(&now[before.len()..]);
            self.prefix = self.read;
            self.read = self.ids.len();
        }
        Ok(self.release(false))
    }

    /// The rest of the text, once the request finished.
    pub fn finish(&mut self) -> String {
        self.release(true)
    }

    /// Sends what no stop string can still claim; cuts at a stop string that matched.
    fn release(&mut self, all: bool) -> String {
        if self.stopped.is_some() {
            return String::new();
        }
        let matching = self.ids.len() >= self.min_tokens;
        if let Some((at, stop)) = self
            .stop
            .iter()
            .filter(|_| matching)
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
        {
            self.stopped = Some(stop.clone());
            let out = self.pending[..at].to_owned();
            self.pending.clear();
            return out;
        }
        let keep = if all { 0 } else { self.held_back() };
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        out
    }

    /// Bytes at the end of the pending text that begin some stop string.
    fn held_back(&self) -> usize {
        let p = &self.pending;
        self.stop
            .iter()
            .flat_map(|s| {
                (1..s.len().min(p.len() + 1))
                    .filter(|&n| s.is_char_boundary(n) && p.is_char_boundary(p.len() - n) && p.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama/tokenizer.json");
        Tokenizer::from_file(path).unwrap()
    }

    fn stream(t: &Tokenizer, text: &str, stop: &[&str]) -> (Vec<String>, Option<String>) {
        stream_min(t, text, stop, 0)
    }

    fn stream_min(t: &Tokenizer, text: &str, stop: &[&str], min_tokens: usize) -> (Vec<String>, Option<String>) {
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        let mut d = IncrementalText::new(stop.iter().map(|s| s.to_string()).collect(), min_tokens);
        let mut pieces: Vec<String> = ids.iter().map(|&id| d.push(t, id).unwrap()).collect();
        pieces.push(d.finish());
        (pieces, d.stopped().map(str::to_owned))
    }

    #[test]
    fn pieces_add_up_to_the_decoded_text() {
        let t = tokenizer();
        let text = "The engine schedules requests, émigré naïve ☃ résumé.";
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        let (pieces, stopped) = stream(&t, text, &[]);
        assert_eq!(pieces.concat(), t.decode(&ids, true).unwrap());
        assert!(stopped.is_none());
        assert!(pieces.iter().filter(|p| !p.is_empty()).count() > 5, "text came in pieces: {pieces:?}");
    }

    #[test]
    fn a_stop_string_cuts_the_text_and_is_never_sent() {
        let t = tokenizer();
        let (pieces, stopped) = stream(&t, "one two three four five", &["three f", "zzz"]);
        assert_eq!(pieces.concat(), "one two ");
        assert_eq!(stopped.as_deref(), Some("three f"));
        // The prefix of a stop string that did not complete is released in the end.
        let (pieces, stopped) = stream(&t, "one two thr", &["three"]);
        assert_eq!(pieces.concat(), "one two thr");
        assert!(stopped.is_none());
    }

    #[test]
    fn stop_strings_count_only_from_min_tokens_on() {
        let t = tokenizer();
        let text = "one two one two three";
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        // Where the first "two" ends, in tokens.
        let first_two = (1..=ids.len()).find(|&n| t.decode(&ids[..n], true).unwrap().contains("two")).unwrap();
        // Reached before min_tokens: the first "two" is sent and the second one stops the text.
        let (pieces, stopped) = stream_min(&t, text, &["two"], first_two + 1);
        assert_eq!(pieces.concat(), "one two one ");
        assert_eq!(stopped.as_deref(), Some("two"));
        // At exactly min_tokens the match counts (vLLM checks once the output holds min_tokens tokens).
        let (pieces, _) = stream_min(&t, text, &["two"], first_two);
        assert_eq!(pieces.concat(), "one ");
        // No later match: the whole text, nothing stopped.
        let (pieces, stopped) = stream_min(&t, text, &["one"], ids.len());
        assert_eq!(pieces.concat(), text);
        assert!(stopped.is_none());
    }
}
