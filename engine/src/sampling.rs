//! Sampling parameters and the sampler. Sampling lives in the engine so every runtime samples identically: a
//! runtime only returns logits.
//!
//! Greedy (temperature 0) is the argmax with ties broken towards the lowest token id. Otherwise logits are divided by
//! the temperature, cut to the `top_k` largest and then to the smallest set whose probability reaches `top_p` (as
//! vLLM and Hugging Face do, in that order), and one token is drawn with the sequence's own ChaCha8 generator, seeded
//! from the request's seed. One draw per sampled token, so a sequence's outputs do not depend on the batch it ran in
//! or on preemption.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::SamplingError;

/// Which logits the engine keeps for a request (for parity checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsCapture {
    /// None: only tokens come back.
    #[default]
    None,
    /// The logits each output token was sampled from.
    Sampled,
    /// The logits at every prompt position as well (needs a runtime with full-position logits).
    All,
}

/// Per-request sampling parameters, vLLM's names.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; `None` keeps all.
    pub top_k: Option<usize>,
    /// Nucleus sampling; 1.0 keeps all.
    pub top_p: f32,
    /// Most output tokens.
    pub max_tokens: usize,
    /// Keep going after an EOS token.
    pub ignore_eos: bool,
    /// Tokens that end the request (finish reason `Stop`); the stop token is kept in the output.
    pub stop_token_ids: Vec<u32>,
    /// Seed of this request's generator; `None` derives one from the request id.
    pub seed: Option<u64>,
    /// Which logits to keep.
    pub logits: LogitsCapture,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            max_tokens: 16,
            ignore_eos: false,
            stop_token_ids: Vec::new(),
            seed: None,
            logits: LogitsCapture::None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self { max_tokens, ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if self.max_tokens == 0 {
            return Err(SamplingError::MaxTokens);
        }
        Ok(())
    }

    #[inline]
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// A sequence's random generator.
pub(crate) fn rng_for(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Argmax over the logits that are not NaN, ties to the lowest id; `None` when every logit is NaN (or none is given).
#[inline]
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if x <= b => {}
            _ => best = Some((i, x)),
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Draws tokens; holds a scratch buffer so sampling does not allocate per token.
#[derive(Debug, Default)]
pub struct Sampler {
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// Samples one token from `logits`; `None` when the logits hold no finite value (a runtime fault).
    pub fn sample(&mut self, logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Option<u32> {
        if params.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / params.temperature;
        self.scratch.clear();
        self.scratch
            .extend(logits.iter().enumerate().filter(|(_, x)| x.is_finite()).map(|(i, &x)| (x * inv_t, i as u32)));
        if self.scratch.is_empty() {
            return None;
        }
        // Descending by logit, ties towards the lower id, so the candidate order is fully determined.
        let by_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if let Some(k) = params.top_k.filter(|&k| k > 0 && k < self.scratch.len()) {
            self.scratch.select_nth_unstable_by(k - 1, by_desc);
            self.scratch.truncate(k);
        }
        self.scratch.sort_unstable_by(by_desc);
        let max = self.scratch[0].0;
        let mut total = 0.0f64;
        for c in self.scratch.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        if params.top_p < 1.0 {
            let cut = params.top_p as f64 * total;
            let mut cum = 0.0f64;
            let mut keep = self.scratch.len();
            for (i, c) in self.scratch.iter().enumerate() {
                cum += c.0 as f64;
                if cum >= cut {
                    keep = i + 1;
                    break;
                }
            }
            self.scratch.truncate(keep);
            total = cum.min(total);
        }
        let mut r = rng.random::<f64>() * total;
        for &(p, id) in &self.scratch {
            r -= p as f64;
            if r < 0.0 {
                return Some(id);
            }
        }
        self.scratch.last().map(|c| c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_breaks_ties_low_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), Some(1));
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn validate_names_the_parameter() {
        let p = SamplingParams { temperature: -1.0, ..SamplingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("temperature"));
        let p = SamplingParams { top_p: 0.0, ..SamplingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        assert_eq!(SamplingParams::greedy(0).validate(), Err(SamplingError::MaxTokens));
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY, 0.0];
        let params = SamplingParams { temperature: 1.0, ..SamplingParams::default() };
        let mut sampler = Sampler::default();
        let draw = |seed| {
            let mut rng = rng_for(seed);
            let mut s = Sampler::default();
            (0..1000).map(|_| s.sample(&logits, &params, &mut rng).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut rng = rng_for(1);
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sampler.sample(&logits, &params, &mut rng).unwrap() as usize] += 1;
        }
        // Probabilities 0.2, 0.6, 0, 0.2.
        assert_eq!(counts[2], 0);
        assert!((counts[1] as f64 / 20_000.0 - 0.6).abs() < 0.02, "{counts:?}");
        assert!((counts[0] as f64 / 20_000.0 - 0.2).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [1.0f32, 4.0, 3.0, 2.0];
        let mut sampler = Sampler::default();
        let mut rng = rng_for(3);
        let k2 = SamplingParams { temperature: 1.0, top_k: Some(2), ..SamplingParams::default() };
        for _ in 0..500 {
            let t = sampler.sample(&logits, &k2, &mut rng).unwrap();
            assert!(t == 1 || t == 2);
        }
        // softmax: p(1) ~ 0.644, so top_p 0.5 keeps token 1 alone.
        let p = SamplingParams { temperature: 1.0, top_p: 0.5, ..SamplingParams::default() };
        for _ in 0..500 {
            assert_eq!(sampler.sample(&logits, &p, &mut rng), Some(1));
        }
        // top_k 1 is greedy.
        let k1 = SamplingParams { temperature: 5.0, top_k: Some(1), ..SamplingParams::default() };
        assert_eq!(sampler.sample(&logits, &k1, &mut rng), Some(1));
    }
}
