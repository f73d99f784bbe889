//! `nano-vllm generate`: prompts in, text out, through the engine with any compiled-in runtime, tokenized with the
//! bundle's `tokenizer.json`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use nano_vllm_bundle::{Bundle, HfConfig};
use nano_vllm_engine::{Config, LlmEngine, SamplingParams, SeqId};
use tokenizers::Tokenizer;

use nano_vllm_harness::registry::{self, RuntimeSettings};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A model bundle directory (see fixtures/README.md).
    #[arg(long, default_value = "fixtures/tiny-llama")]
    bundle: PathBuf,
    /// Runtime to generate with (`nano-vllm --version` lists those compiled in).
    #[arg(long, default_value = "native")]
    runtime: String,
    /// A prompt; repeat for several, generated together in one batch.
    #[arg(long = "prompt", default_values_t = [String::from("The engine schedules requests"), String::from("Once upon a time")])]
    prompts: Vec<String>,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating after EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: &GenerateArgs) -> anyhow::Result<()> {
    let bundle = Bundle::open(&a.bundle).with_context(|| format!("opening bundle {}", a.bundle.display()))?;
    let hf = HfConfig::from_dir(bundle.hf_dir())?;
    let tokenizer = Tokenizer::from_file(bundle.tokenizer_json())
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.tokenizer_json().display()))?;
    let runtime = registry::build(&a.runtime, &bundle, &RuntimeSettings { threads: a.threads })?;
    let context = bundle.config().context_length;
    let config = Config::builder()
        .max_model_len(context)
        .max_num_batched_tokens(context.max(512))
        .num_kv_blocks(a.prompts.len().max(1) * context.div_ceil(16) + 1)
        .eos_token_ids(hf.eos_token_ids.clone())
        .build()?;
    let mut engine = LlmEngine::new(config, runtime)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        ignore_eos: a.ignore_eos,
        ..SamplingParams::greedy(a.max_tokens)
    };
    let mut ids: Vec<SeqId> = Vec::new();
    let mut prompt_tokens = 0;
    for (i, text) in a.prompts.iter().enumerate() {
        let encoding = tokenizer.encode(text.as_str(), false).map_err(|e| anyhow::anyhow!("prompt {}: {e}", i + 1))?;
        let tokens = encoding.get_ids().to_vec();
        if tokens.is_empty() {
            bail!("prompt {} encodes to no tokens", i + 1);
        }
        prompt_tokens += tokens.len();
        ids.push(engine.add_request(tokens, params.clone()).with_context(|| format!("prompt {}", i + 1))?);
    }

    let info = engine.runtime_info().clone();
    eprintln!("{} on {} ({}, {}), {} prompt(s)", bundle.name(), info.name, info.device, info.dtype, ids.len());
    let start = Instant::now();
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); ids.len()];
    let mut finished = Vec::new();
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    write!(out, "[1] {}", a.prompts[0])?;
    while engine.has_unfinished() {
        let step = engine.step()?;
        for (id, token) in step.new_tokens {
            let k = ids.iter().position(|&x| x == id).expect("one of ours");
            outputs[k].push(token);
        }
        // Stream the first prompt: decode its whole output and print what is new (multi-byte pieces arrive whole).
        let text = tokenizer.decode(&outputs[0], true).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        if text.len() > printed && text.is_char_boundary(printed) {
            write!(out, "{}", &text[printed..])?;
            out.flush()?;
            printed = text.len();
        }
        finished.extend(step.finished);
    }
    writeln!(out)?;
    let elapsed = start.elapsed();
    finished.sort_by_key(|s| s.id());
    for (k, seq) in finished.iter().enumerate().skip(1) {
        let text = tokenizer.decode(seq.output_token_ids(), true).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        writeln!(out, "[{}] {}{}", k + 1, a.prompts[k], text)?;
    }
    let output_tokens: usize = finished.iter().map(|s| s.num_output_tokens()).sum();
    let reasons: Vec<&str> = finished.iter().map(|s| s.finish_reason().map_or("?", |r| r.as_str())).collect();
    eprintln!(
        "{prompt_tokens} prompt + {output_tokens} output tokens in {:.1} ms ({:.0} output tok/s); finish: {}",
        elapsed.as_secs_f64() * 1e3,
        output_tokens as f64 / elapsed.as_secs_f64(),
        reasons.join(", ")
    );
    Ok(())
}
