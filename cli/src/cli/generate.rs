//! `nano-vllm generate`: prompts in, text out, through the engine with any compiled-in runtime, tokenized with the
//! model's tokenizer; with `--chat`, each prompt is a user turn rendered with the model's chat template and
//! generation stops at its end-of-turn token.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use nano_vllm_engine::{Config, LlmEngine, LogitsCapture, SamplingParams, SeqId};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::model::chat::Message;
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The model: a GGUF file, a Hugging Face directory or a bundle directory (see `nano-vllm bench --help`).
    #[arg(long, alias = "bundle", default_value = "fixtures/tiny-llama")]
    model: PathBuf,
    /// Runtime to generate with (`nano-vllm --version` lists those compiled in).
    #[arg(long, default_value = "native", value_parser = RuntimeSpec::parse)]
    runtime: RuntimeSpec,
    /// A prompt; repeat for several, generated together in one batch.
    #[arg(long = "prompt", default_values_t = [String::from("The engine schedules requests"), String::from("Once upon a time")])]
    prompts: Vec<String>,
    /// Each prompt is a user message, rendered with the model's chat template; stops at the end of the turn.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 32, allow_negative_numbers = true)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Keep generating after EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::thread_count, allow_negative_numbers = true)]
    threads: usize,
    /// After the text, each prompt's first output token beside its runner-up: their probabilities and the gap
    /// between their logits (a near tie is where a quantized model's answer can part from the float32 model's).
    #[arg(long)]
    first_token_margin: bool,
}

pub fn run(a: &GenerateArgs) -> anyhow::Result<()> {
    let model = ModelSource::open(&a.model)?;
    let tokenizer = model.tokenizer()?;
    let info = model.info().clone();
    let mut stop_ids = info.eos_token_ids.clone();
    let texts: Vec<String> = if a.chat {
        let template = model
            .chat_template()?
            .with_context(|| format!("{} has no chat template; drop --chat", a.model.display()))?;
        stop_ids.extend(tokenizer.token_to_id(&template.eos_token));
        a.prompts
            .iter()
            .map(|p| template.render(&[Message::user(p.as_str())], true).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    } else {
        a.prompts.clone()
    };
    let mut prompts = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        // Chat text carries its special tokens as text (matched as special tokens); a plain prompt gets the
        // model's (e.g. BOS), as a server's completion endpoint adds them.
        let encoding =
            tokenizer.encode(text.as_str(), !a.chat).map_err(|e| anyhow::anyhow!("prompt {}: {e}", i + 1))?;
        if encoding.get_ids().is_empty() {
            bail!("prompt {} encodes to no tokens", i + 1);
        }
        prompts.push(encoding.get_ids().to_vec());
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(1).saturating_add(a.max_tokens);
    if longest > info.context_length {
        bail!("prompt + --max-tokens ({longest} tokens) exceeds the model's context ({})", info.context_length);
    }
    let max_model_len = longest.next_multiple_of(16).min(info.context_length);
    let settings = RuntimeSettings { threads: a.threads, max_model_len: Some(max_model_len), ..Default::default() };
    let runtime = registry::build(&a.runtime, &model, &settings)?;
    stop_ids.sort_unstable();
    stop_ids.dedup();
    let config = Config::builder()
        .max_model_len(max_model_len)
        .max_num_batched_tokens(max_model_len.max(512))
        .num_kv_blocks(prompts.len().max(1) * max_model_len.div_ceil(16) + 1)
        .eos_token_ids(stop_ids)
        .build()?;
    let mut engine = LlmEngine::new(config, runtime)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        ignore_eos: a.ignore_eos,
        logits: if a.first_token_margin { LogitsCapture::Sampled } else { LogitsCapture::None },
        ..SamplingParams::greedy(a.max_tokens)
    };
    let mut ids: Vec<SeqId> = Vec::new();
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    for (i, tokens) in prompts.into_iter().enumerate() {
        ids.push(engine.add_request(tokens, params.clone()).with_context(|| format!("prompt {}", i + 1))?);
    }

    let rt = engine.runtime_info().clone();
    eprintln!("{} on {} ({}, {}), {} prompt(s)", model.name(), rt.name, rt.device, rt.dtype, ids.len());
    let start = Instant::now();
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); ids.len()];
    let mut finished = Vec::new();
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    write!(out, "[1] {}{}", a.prompts[0], if a.chat { "\n" } else { "" })?;
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
        let sep = if a.chat { "\n" } else { "" };
        writeln!(out, "[{}] {}{sep}{}", k + 1, a.prompts[k], text)?;
    }
    if a.first_token_margin {
        for (k, seq) in finished.iter().enumerate() {
            let Some(row) = seq.logits().filter(|l| !l.positions.is_empty()).map(|l| l.row(0)) else { continue };
            writeln!(out, "[{}] first token: {}", k + 1, first_token_margin(row, &tokenizer))?;
        }
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

/// The two most likely tokens of a row of logits, their probabilities and the gap between their logits.
fn first_token_margin(row: &[f32], tokenizer: &tokenizers::Tokenizer) -> String {
    if row.len() < 2 {
        return format!("a vocabulary of {} token(s) has no runner-up", row.len());
    }
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.select_nth_unstable_by(1.min(row.len().saturating_sub(1)), |&a, &b| row[b].total_cmp(&row[a]));
    let (first, second) = if row[order[0]] >= row[order[1]] { (order[0], order[1]) } else { (order[1], order[0]) };
    let max = row[first] as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let p = |i: usize| (row[i] as f64 - max).exp() / z;
    let text = |i: usize| format!("{:?}", tokenizer.decode(&[i as u32], false).unwrap_or_else(|_| format!("#{i}")));
    format!(
        "{} (p {:.3}), runner-up {} (p {:.3}): logit gap {:.3}",
        text(first),
        p(first),
        text(second),
        p(second),
        row[first] - row[second]
    )
}
