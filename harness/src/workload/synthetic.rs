//! Seeded synthetic workloads: prompt and output lengths from a distribution, arrivals offline, Poisson or gamma
//! (vLLM's `--burstiness`: gaps ~ Gamma(shape = burstiness, scale = 1 / (rate * burstiness)); 1 is Poisson), and
//! optional groups of requests sharing a prefix. The same spec and seed give the same trace, byte for byte.

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal};

use super::{TraceRequest, Workload};

/// A token-length distribution. Parsed from `128` / `fixed:128`, `uniform:64:256`, `normal:128:32`,
/// `hist:64=1,128=3` (length=weight pairs).
#[derive(Debug, Clone, PartialEq)]
pub enum LengthDist {
    Fixed(usize),
    Uniform {
        min: usize,
        max: usize,
    },
    /// Rounded and clamped to at least 1.
    Normal {
        mean: f64,
        std: f64,
    },
    Histogram(Vec<(usize, f64)>),
}

impl FromStr for LengthDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("'{v}' is not a length in '{s}'"));
        let float = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("'{v}' is not a number in '{s}'"));
        let parts: Vec<&str> = s.split(':').collect();
        let dist = match parts.as_slice() {
            [n] | ["fixed", n] => Self::Fixed(num(n)?),
            ["uniform", a, b] => Self::Uniform { min: num(a)?, max: num(b)? },
            ["normal", m, d] => Self::Normal { mean: float(m)?, std: float(d)? },
            ["hist", pairs] => Self::Histogram(
                pairs
                    .split(',')
                    .map(|p| {
                        let (len, w) =
                            p.split_once('=').ok_or_else(|| format!("'{p}' is not length=weight in '{s}'"))?;
                        Ok((num(len)?, float(w)?))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(format!("'{s}': expected N, fixed:N, uniform:MIN:MAX, normal:MEAN:STD or hist:LEN=W,...")),
        };
        dist.validate().map(|()| dist)
    }
}

impl LengthDist {
    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Fixed(0) => Err("a length must be at least 1".into()),
            Self::Uniform { min, max } if *min == 0 || min > max => {
                Err(format!("uniform:{min}:{max} needs 1 <= min <= max"))
            }
            Self::Normal { mean, std } if !(mean.is_finite() && *mean >= 1.0 && std.is_finite() && *std >= 0.0) => {
                Err(format!("normal:{mean}:{std} needs mean >= 1 and std >= 0"))
            }
            Self::Histogram(h) if h.is_empty() || h.iter().any(|&(l, w)| l == 0 || !(w.is_finite() && w >= 0.0)) => {
                Err("a histogram needs lengths >= 1 and finite weights >= 0".into())
            }
            Self::Histogram(h) if h.iter().all(|&(_, w)| w == 0.0) => Err("a histogram needs a positive weight".into()),
            _ => Ok(()),
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { min, max } => rng.random_range(*min..=*max),
            Self::Normal { mean, std } => {
                let n = Normal::new(*mean, *std).expect("validated");
                (n.sample(rng).round() as i64).max(1) as usize
            }
            Self::Histogram(h) => {
                let total: f64 = h.iter().map(|(_, w)| w).sum();
                let mut r = rng.random::<f64>() * total;
                for &(len, w) in h {
                    if r < w {
                        return len;
                    }
                    r -= w;
                }
                h.iter().rev().find(|(_, w)| *w > 0.0).map_or(1, |(l, _)| *l)
            }
        }
    }

    /// The largest length this distribution can give (normal: mean + 6 std).
    pub fn max(&self) -> usize {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { max, .. } => *max,
            Self::Normal { mean, std } => (mean + 6.0 * std).ceil() as usize,
            Self::Histogram(h) => h.iter().map(|(l, _)| *l).max().unwrap_or(1),
        }
    }
}

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// All at t = 0.
    Offline,
    /// Gaps ~ Gamma(shape = burstiness, scale = 1 / (rate * burstiness)); burstiness 1 is a Poisson process.
    Gamma { rate: f64, burstiness: f64 },
}

impl Arrivals {
    /// vLLM's `--request-rate` (inf: offline) and `--burstiness`.
    pub fn from_rate(rate: f64, burstiness: f64) -> Result<Self, String> {
        if rate.is_infinite() && rate > 0.0 {
            return Ok(Self::Offline);
        }
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("request rate must be > 0 (or inf), got {rate}"));
        }
        if !(burstiness.is_finite() && burstiness > 0.0) {
            return Err(format!("burstiness must be > 0, got {burstiness}"));
        }
        // Gaps of mean 1 / rate: a rate so high that they underflow (or their scale does) has no arrivals to draw.
        Gamma::new(burstiness, 1.0 / (rate * burstiness)).map_err(|e| {
            format!(
                "request rate {rate} with burstiness {burstiness} gives gaps too small to draw ({e}); use --rate inf for \
                 all requests at once"
            )
        })?;
        Ok(Self::Gamma { rate, burstiness })
    }

    /// Arrival times of `n` requests, from 0.
    pub fn times(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        match *self {
            Self::Offline => vec![0.0; n],
            Self::Gamma { rate, burstiness } => {
                let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness)).expect("validated");
                let mut t = 0.0;
                (0..n)
                    .map(|i| {
                        if i > 0 {
                            t += gamma.sample(rng);
                        }
                        t
                    })
                    .collect()
            }
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub num_requests: usize,
    pub input_len: LengthDist,
    pub output_len: LengthDist,
    pub arrivals: Arrivals,
    /// Requests are dealt round-robin to this many groups, each with its own shared prefix (0: no sharing).
    pub prefix_groups: usize,
    /// Tokens of each group's shared prefix (a prompt shorter than this is all prefix).
    pub prefix_len: usize,
    /// Token ids are drawn from `first_token..vocab_size` (keep BOS/EOS and other specials below `first_token`).
    pub vocab_size: usize,
    pub first_token: u32,
    pub seed: u64,
}

impl SyntheticSpec {
    /// The harness's default mix (as `nano-vllm bench` without workload options): prompts of 16 to 96 tokens (at
    /// most `max_prompt`) in 4 groups sharing a 32-token prefix, 8 to 32 output tokens, all at t = 0, seed 0.
    pub fn default_mix(num_requests: usize, vocab_size: usize, max_prompt: usize) -> Self {
        Self {
            num_requests,
            input_len: LengthDist::Uniform { min: 16, max: 96.min(max_prompt) },
            output_len: LengthDist::Uniform { min: 8, max: 32 },
            arrivals: Arrivals::Offline,
            prefix_groups: 4,
            prefix_len: 32,
            vocab_size,
            first_token: 2,
            seed: 0,
        }
    }
}

/// Generates the workload; the same spec gives the same requests.
pub fn generate(spec: &SyntheticSpec) -> Result<Workload, String> {
    if spec.num_requests == 0 {
        return Err("the workload needs at least one request".into());
    }
    if spec.first_token as usize >= spec.vocab_size {
        return Err(format!(
            "no token ids to draw from: first token {} >= vocabulary {}",
            spec.first_token, spec.vocab_size
        ));
    }
    // Token ids are 32-bit: a larger vocabulary (a corrupt config) has ids no request can carry.
    let end = u32::try_from(spec.vocab_size)
        .map_err(|_| format!("a vocabulary of {} tokens is beyond 32-bit token ids", spec.vocab_size))?;
    spec.input_len.validate()?;
    spec.output_len.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let token = |rng: &mut ChaCha8Rng| rng.random_range(spec.first_token..end);
    // Only what prompts use: a prefix is cut to each prompt's length, and there are no more groups than requests (so
    // `--prefix-len 10^12` allocates nothing absurd).
    let (groups, prefix_len) = (spec.prefix_groups.min(spec.num_requests), spec.prefix_len.min(spec.input_len.max()));
    let prefixes: Vec<Vec<u32>> = (0..groups).map(|_| (0..prefix_len).map(|_| token(&mut rng)).collect()).collect();
    let times = spec.arrivals.times(spec.num_requests, &mut rng);
    let requests = times
        .into_iter()
        .enumerate()
        .map(|(i, arrival_s)| {
            let input = spec.input_len.sample(&mut rng);
            let output = spec.output_len.sample(&mut rng);
            let mut prompt: Vec<u32> = match prefixes.get(i % groups.max(1)) {
                Some(p) if !prefixes.is_empty() => p[..input.min(p.len())].to_vec(),
                _ => Vec::new(),
            };
            while prompt.len() < input {
                prompt.push(token(&mut rng));
            }
            TraceRequest { id: Some(format!("r{i}")), ..TraceRequest::ids(arrival_s, prompt, output) }
        })
        .collect();
    Ok(Workload::new(requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SyntheticSpec {
        SyntheticSpec {
            num_requests: 2000,
            input_len: "uniform:10:50".parse().unwrap(),
            output_len: "16".parse().unwrap(),
            arrivals: Arrivals::from_rate(4.0, 1.0).unwrap(),
            prefix_groups: 3,
            prefix_len: 8,
            vocab_size: 100,
            first_token: 2,
            seed: 7,
        }
    }

    #[test]
    fn parses_length_distributions_and_rejects_bad_ones() {
        assert_eq!("128".parse::<LengthDist>(), Ok(LengthDist::Fixed(128)));
        assert_eq!("uniform:4:8".parse::<LengthDist>(), Ok(LengthDist::Uniform { min: 4, max: 8 }));
        assert_eq!("hist:64=1,128=3".parse::<LengthDist>(), Ok(LengthDist::Histogram(vec![(64, 1.0), (128, 3.0)])));
        for bad in ["0", "uniform:8:4", "normal:0:1", "hist:", "hist:5=-1", "poisson:3", "x"] {
            assert!(bad.parse::<LengthDist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn same_seed_same_trace_and_lengths_and_prefixes_hold() {
        let a = generate(&spec()).unwrap();
        assert_eq!(a, generate(&spec()).unwrap());
        assert_ne!(a, generate(&SyntheticSpec { seed: 8, ..spec() }).unwrap());
        for (i, r) in a.requests.iter().enumerate() {
            let ids = r.prompt_ids.as_ref().unwrap();
            assert!((10..=50).contains(&ids.len()) && r.max_tokens == 16);
            assert!(ids.iter().all(|&t| (2..100).contains(&t)));
            let _ = i;
        }
        // Requests r0, r3, r6, ... share group 0's prefix.
        let by_id =
            |id: &str| a.requests.iter().find(|r| r.id.as_deref() == Some(id)).unwrap().prompt_ids.clone().unwrap();
        assert_eq!(by_id("r0")[..8], by_id("r3")[..8]);
        assert_ne!(by_id("r0")[..8], by_id("r1")[..8]);
    }

    #[test]
    fn gamma_arrivals_have_the_requested_rate_and_burstiness() {
        // Mean gap 1/rate; coefficient of variation 1/sqrt(burstiness).
        for burstiness in [1.0, 4.0, 0.25] {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let t = Arrivals::from_rate(10.0, burstiness).unwrap().times(20_000, &mut rng);
            let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            assert!((mean - 0.1).abs() < 0.005, "mean gap {mean}");
            let cv = var.sqrt() / mean;
            assert!((cv - 1.0 / burstiness.sqrt()).abs() < 0.05, "burstiness {burstiness}: cv {cv}");
        }
        assert_eq!(Arrivals::from_rate(f64::INFINITY, 1.0), Ok(Arrivals::Offline));
        assert!(Arrivals::from_rate(0.0, 1.0).is_err() && Arrivals::from_rate(1.0, 0.0).is_err());
    }
}
