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
    /// EOS and stop tokens can neither be sampled nor end the request before this many output tokens (vLLM's
    /// `min_tokens`: their logits are masked).
    pub min_tokens: usize,
    /// Report the sampled token's log-probability and this many most likely alternatives with each token
    /// (`Some(0)`: the sampled token's alone), from the raw logits as vLLM does.
    pub logprobs: Option<usize>,
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
            min_tokens: 0,
            logprobs: None,
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
        if self.min_tokens > self.max_tokens {
            return Err(SamplingError::MinTokens { min_tokens: self.min_tokens, max_tokens: self.max_tokens });
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return Err(SamplingError::Logprobs { got: n, max: MAX_LOGPROBS });
        }
        Ok(())
    }

    #[inline]
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// The most alternatives `logprobs` may ask for (vLLM's default `max_logprobs`).
pub const MAX_LOGPROBS: usize = 20;

/// A sampled token's log-probability and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The `top_n` most likely tokens, most likely first (ties towards the lower id).
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    /// Log-softmax of `logits` at `token` and at the `top_n` most likely tokens (non-finite logits count as
    /// impossible).
    pub fn from_logits(logits: &[f32], token: u32, top_n: usize) -> Self {
        let max = logits.iter().copied().filter(|x| x.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().filter(|x| x.is_finite()).map(|&x| ((x - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        let lp = |x: f32| if x.is_finite() { (x as f64 - log_z) as f32 } else { f32::NEG_INFINITY };
        let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n);
        if top_n > 0 {
            let mut order: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
            let by_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
            let n = top_n.min(order.len());
            if n > 0 && n < order.len() {
                order.select_nth_unstable_by(n - 1, by_desc);
            }
            order.truncate(n);
            order.sort_unstable_by(by_desc);
            top.extend(order.into_iter().map(|i| (i, lp(logits[i as usize]))));
        }
        let logprob = logits.get(token as usize).map_or(f32::NEG_INFINITY, |&x| lp(x));
        Self { token, logprob, top }
    }
}

/// A sequence's random generator.
pub(crate) fn rng_for(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Argmax over the logits that are not NaN, ties to the lowest id; `None` when every logit is NaN (or none is given).
///
/// A row of a real vocabulary goes in two passes: the largest value over 16 independent lanes (`f32::max` skips NaN;
/// the loop vectorizes, where a running index does not), then the first block of 16 holding it and the position in
/// that block. On 32 greedy rows of Gemma 3's 262,144 logits a step, one branchy pass made sampling and
/// postprocessing 2.6 % of a native decode step (`nano-vllm bench`, batch 32); this, under 1 %. Rows shorter than two
/// blocks (the engine benchmarks' null and mock runtimes) take the one pass, which costs fewer instructions there.
#[inline]
pub fn argmax(logits: &[f32]) -> Option<u32> {
    const LANES: usize = 16;
    if logits.len() < 2 * LANES {
        return first_max(logits);
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    let best = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    logits.chunks(LANES).enumerate().find_map(|(c, block)| {
        let holds = block.iter().fold(false, |hit, &x| hit | (x == best));
        holds.then(|| block.iter().position(|&x| x == best).map(|i| (c * LANES + i) as u32)).flatten()
    })
}

/// [`argmax`] in one pass: the first largest value that is not NaN.
fn first_max(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
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

    proptest::proptest! {
        /// The two-pass argmax is the one-pass definition: the first index of the largest non-NaN value.
        #[test]
        fn argmax_is_the_first_largest_non_nan(
            v in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -4i8..4i8,
                    1 => proptest::strategy::Just(i8::MIN),
                    1 => proptest::strategy::Just(i8::MAX),
                ],
                0..80,
            )
        ) {
            // Small integers make ties; i8::MIN / MAX stand for NaN / -inf.
            let logits: Vec<f32> = v
                .iter()
                .map(|&x| match x {
                    i8::MIN => f32::NAN,
                    i8::MAX => f32::NEG_INFINITY,
                    x => f32::from(x),
                })
                .collect();
            let mut want: Option<(usize, f32)> = None;
            for (i, &x) in logits.iter().enumerate() {
                if !x.is_nan() && want.is_none_or(|(_, b)| x > b) {
                    want = Some((i, x));
                }
            }
            proptest::prop_assert_eq!(argmax(&logits), want.map(|(i, _)| i as u32));
        }
    }

    #[test]
    fn argmax_breaks_ties_low_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), Some(1));
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
        // Every value -inf (all masked): the first.
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
        // Longer than the lanes, the maximum in the tail, and a tie across lanes.
        let mut long: Vec<f32> = (0..37).map(|i| (i % 5) as f32).collect();
        long[20] = f32::NAN;
        assert_eq!(argmax(&long), Some(4));
        long[35] = 9.0;
        assert_eq!(argmax(&long), Some(35));
    }

    #[test]
    fn logprobs_are_the_log_softmax_and_rank_the_top_tokens() {
        let logits = [1.0f32, 3.0, 3.0, f32::NEG_INFINITY, 0.0];
        let z = (1.0f64.exp() + 2.0 * 3.0f64.exp() + 1.0).ln();
        let lp = TokenLogprobs::from_logits(&logits, 0, 3);
        assert!((lp.logprob as f64 - (1.0 - z)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!((lp.top[0].1 as f64 - (3.0 - z)).abs() < 1e-6);
        let none = TokenLogprobs::from_logits(&logits, 3, 0);
        assert!(none.top.is_empty() && none.logprob == f32::NEG_INFINITY);
        assert_eq!(TokenLogprobs::from_logits(&logits, 1, 10).top.len(), 4, "impossible tokens are not alternatives");
    }

    #[test]
    fn validate_names_the_parameter() {
        let p = SamplingParams { temperature: -1.0, ..SamplingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("temperature"));
        let p = SamplingParams { top_p: 0.0, ..SamplingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        assert_eq!(SamplingParams::greedy(0).validate(), Err(SamplingError::MaxTokens));
        let p = SamplingParams { min_tokens: 5, ..SamplingParams::greedy(4) };
        assert!(p.validate().unwrap_err().to_string().contains("min_tokens (5)"));
        let p = SamplingParams { logprobs: Some(21), ..SamplingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("logprobs must be at most 20"));
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
