//! `nano-vllm workload`: writes a JSONL trace, synthetic or imported from ShareGPT.

use std::path::PathBuf;

use anyhow::Context;
use nano_vllm_harness::workload::sharegpt::{self, ShareGptLimits};
use nano_vllm_harness::workload::synthetic::{self, Arrivals, LengthDist, SyntheticSpec};
use nano_vllm_harness::workload::{Workload, write_trace};

/// How to make a workload (shared by `workload` and `bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadSpecArgs {
    /// Number of requests.
    #[arg(long, default_value_t = 32, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    pub requests: usize,
    /// Prompt lengths: N, uniform:MIN:MAX, normal:MEAN:STD or hist:LEN=W,...
    #[arg(long, default_value = "uniform:16:96")]
    pub input_len: LengthDist,
    /// Output lengths (max_tokens), same forms.
    #[arg(long, default_value = "uniform:8:32")]
    pub output_len: LengthDist,
    /// Requests per second (inf: all at t=0).
    #[arg(long, default_value_t = f64::INFINITY, allow_hyphen_values = true)]
    pub rate: f64,
    /// Gamma shape of the gaps (1: Poisson; <1 burstier, >1 more regular), as vLLM's --burstiness.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub burstiness: f64,
    /// Groups of requests sharing a prefix (0: none).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub prefix_groups: usize,
    /// Tokens of each group's shared prefix.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true)]
    pub prefix_len: usize,
    /// Import prompts from a local ShareGPT JSON file instead (first human turn; reply length as max_tokens).
    #[arg(long)]
    pub sharegpt: Option<PathBuf>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
}

impl WorkloadSpecArgs {
    /// Generates the workload for a model of `vocab_size` tokens (`first_token`.. are drawn) and `max_model_len`;
    /// `count_tokens` tokenizes ShareGPT text.
    pub fn build(
        &self,
        rate: f64,
        vocab_size: usize,
        max_model_len: usize,
        count_tokens: impl Fn(&str) -> Result<usize, String>,
    ) -> anyhow::Result<Workload> {
        let arrivals = Arrivals::from_rate(rate, self.burstiness).map_err(anyhow::Error::msg)?;
        if let Some(path) = &self.sharegpt {
            let limits =
                ShareGptLimits { max_prompt_tokens: max_model_len, max_output_tokens: max_model_len, max_model_len };
            return Ok(sharegpt::import(path, self.requests, limits, arrivals, self.seed, count_tokens)?);
        }
        let spec = SyntheticSpec {
            num_requests: self.requests,
            input_len: self.input_len.clone(),
            output_len: self.output_len.clone(),
            arrivals,
            prefix_groups: self.prefix_groups,
            prefix_len: self.prefix_len,
            vocab_size,
            // Keep the ids below 2 (BOS/EOS of the fixtures) out of synthetic prompts.
            first_token: 2.min(vocab_size.saturating_sub(1) as u32),
            seed: self.seed,
        };
        let longest = spec.input_len.max().saturating_add(spec.output_len.max());
        anyhow::ensure!(
            longest <= max_model_len,
            "prompt ({}) + output ({}) lengths can reach {longest} tokens, beyond the model's context ({max_model_len})",
            spec.input_len.max(),
            spec.output_len.max()
        );
        synthetic::generate(&spec).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Where to write the trace (JSONL).
    #[arg(long)]
    out: PathBuf,
    /// A bundle, for its vocabulary, context and tokenizer.
    #[arg(long, default_value = "fixtures/tiny-llama")]
    bundle: PathBuf,
    #[command(flatten)]
    spec: WorkloadSpecArgs,
}

pub fn run(a: &WorkloadArgs) -> anyhow::Result<()> {
    let bundle = nano_vllm_bundle::Bundle::open(&a.bundle)?;
    let tokenizer = tokenizers::Tokenizer::from_file(bundle.tokenizer_json())
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.tokenizer_json().display()))?;
    let count = |t: &str| tokenizer.encode(t, false).map(|e| e.len()).map_err(|e| e.to_string());
    let c = bundle.config();
    let workload = a.spec.build(a.spec.rate, c.vocab_size, c.context_length, count)?;
    write_trace(&a.out, &workload).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote {} requests to {}", workload.requests.len(), a.out.display());
    Ok(())
}
