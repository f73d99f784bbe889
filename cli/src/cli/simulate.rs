//! `nano-vllm simulate`: the engine on the model-free mock runtime, for scheduling studies without a model.

use std::time::{Duration, Instant};

use anyhow::Context;
use nano_vllm_engine::{Config, LlmEngine, MockRuntime, SamplingParams, StepStats};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Number of requests, all arriving at t=0.
    #[arg(long, default_value_t = 200, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    requests: usize,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 64, value_parser = |s: &str| super::bounded(s, 1, 1 << 20), allow_negative_numbers = true)]
    prompt_len: usize,
    /// Tokens generated per request (EOS ignored).
    #[arg(long, default_value_t = 32, value_parser = |s: &str| super::bounded(s, 1, 1 << 20), allow_negative_numbers = true)]
    max_tokens: usize,
    /// Requests share a prefix of this many tokens (0: none).
    #[arg(long, default_value_t = 32, value_parser = |s: &str| super::bounded(s, 0, 1 << 20), allow_negative_numbers = true)]
    shared_prefix: usize,
    /// KV blocks in the cache (small values force preemption).
    #[arg(long, default_value_t = 256, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    kv_blocks: usize,
    #[arg(long, default_value_t = 16, value_parser = |s: &str| super::bounded(s, 1, 1024), allow_negative_numbers = true)]
    block_size: usize,
    #[arg(long, default_value_t = 32, value_parser = |s: &str| super::bounded(s, 1, 1 << 16), allow_negative_numbers = true)]
    max_num_seqs: usize,
    #[arg(long, default_value_t = 512, value_parser = |s: &str| super::bounded(s, 1, 1 << 24), allow_negative_numbers = true)]
    max_num_batched_tokens: usize,
    /// Mock vocabulary size.
    #[arg(long, default_value_t = 512, value_parser = |s: &str| super::bounded(s, 1, 1 << 18), allow_negative_numbers = true)]
    vocab: usize,
}

pub fn run(a: &SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.shared_prefix <= a.prompt_len,
        "--shared-prefix ({}) exceeds --prompt-len ({})",
        a.shared_prefix,
        a.prompt_len
    );
    let config = Config::builder()
        .max_num_seqs(a.max_num_seqs)
        .max_num_batched_tokens(a.max_num_batched_tokens)
        .max_model_len(a.prompt_len + a.max_tokens)
        .block_size(a.block_size)
        .num_kv_blocks(a.kv_blocks)
        .build()
        .context("invalid engine configuration")?;
    let mut engine = LlmEngine::new(config, Box::new(MockRuntime::new(a.vocab)))?;
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(a.max_tokens) };
    let start = Instant::now();
    for i in 0..a.requests {
        let prompt =
            (0..a.prompt_len)
                .map(|p| {
                    if p < a.shared_prefix {
                        (p * 31 % a.vocab) as u32
                    } else {
                        ((p * 131 + i * 7919) % a.vocab) as u32
                    }
                })
                .collect();
        engine.add_request(prompt, params.clone())?;
    }
    let mut steps: Vec<StepStats> = Vec::new();
    let mut finished = Vec::new();
    while engine.has_unfinished() {
        let r = engine.step()?;
        steps.extend(r.stats);
        finished.extend(r.finished);
    }
    let wall = start.elapsed();
    let sum = |f: fn(&StepStats) -> usize| steps.iter().map(f).sum::<usize>();
    let time = |f: fn(&StepStats) -> Duration| steps.iter().map(f).sum::<Duration>();
    let out_tokens: usize = finished.iter().map(|s| s.num_output_tokens()).sum();
    let (hits, admitted) = (sum(|s| s.prefix_hit_tokens), sum(|s| s.admitted_prompt_tokens));
    println!(
        "engine on mock runtime: {} requests, {} steps, {:.1} ms",
        finished.len(),
        steps.len(),
        wall.as_secs_f64() * 1e3
    );
    println!(
        "  tokens processed     {} ({} prefill, {} decode)",
        sum(|s| s.num_tokens),
        sum(|s| s.num_prefill_tokens),
        sum(|s| s.num_decode_tokens)
    );
    println!("  output tokens        {out_tokens}");
    println!(
        "  prefix-cache hits    {hits} of {admitted} admitted prompt tokens ({:.1}%)",
        100.0 * hits as f64 / admitted.max(1) as f64
    );
    println!("  preemptions          {}", sum(|s| s.num_preemptions));
    println!(
        "  peak KV blocks       {} of {}",
        steps.iter().map(|s| s.kv_blocks_used).max().unwrap_or(0),
        engine.num_kv_blocks()
    );
    println!(
        "  peak batch           {} seqs, {} tokens",
        steps.iter().map(|s| s.num_seqs).max().unwrap_or(0),
        steps.iter().map(|s| s.num_tokens).max().unwrap_or(0)
    );
    println!(
        "  time in schedule     {:.2} ms, runtime {:.2} ms, postprocess {:.2} ms",
        time(|s| s.schedule_time).as_secs_f64() * 1e3,
        time(|s| s.runtime_time).as_secs_f64() * 1e3,
        time(|s| s.postprocess_time).as_secs_f64() * 1e3
    );
    Ok(())
}
