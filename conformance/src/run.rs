//! Running a bundle's reference prompts through the engine in each situation a serving engine creates.

use nano_vllm_bundle::{PromptKind, Reference, ReferencePrompt};
use nano_vllm_engine::{Config, EngineError, LlmEngine, LogitsCapture, Runtime, SamplingParams, SeqId, Sequence};

/// The engine situations parity is checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Situation {
    /// Each prompt alone in the engine, one after another; no prefix caching.
    Alone,
    /// All prompts at once with a small step budget: prefill chunks of long prompts share steps with other
    /// sequences' decode tokens.
    Batched,
    /// Prefix caching on: the first shared-prefix prompt runs, and once its prompt is computed the others of its
    /// group join and are served their shared prefix from the cache.
    PrefixCached,
    /// All prompts at once in a KV cache that holds one sequence at its longest: sequences are preempted and
    /// recomputed (given two prompts or more).
    Preempted,
}

impl Situation {
    pub const ALL: [Situation; 4] = [Self::Alone, Self::Batched, Self::PrefixCached, Self::Preempted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::Batched => "batched",
            Self::PrefixCached => "prefix_cached",
            Self::Preempted => "preempted",
        }
    }
}

/// What one reference prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRun {
    pub name: String,
    pub prompt_len: usize,
    /// Positions whose logits were computed (prefix-cached positions are absent), increasing.
    pub positions: Vec<u32>,
    /// One row of `vocab` logits per position.
    pub logits: Vec<f32>,
    /// Positions computed again after a preemption (each also in `positions`, with its first row there), and their
    /// rows: compared with the reference like the first ones.
    pub recomputed_positions: Vec<u32>,
    pub recomputed_logits: Vec<f32>,
    pub vocab: usize,
    /// The greedy continuation the engine sampled from these logits.
    pub output_tokens: Vec<u32>,
    /// Prompt tokens served by the prefix cache at the last admission.
    pub cached_tokens: usize,
    pub preemptions: u32,
}

impl PromptRun {
    /// What a finished sequence of the prompt `name` produced.
    pub fn from_sequence(name: &str, seq: &Sequence) -> Self {
        let captured = seq.logits().cloned().unwrap_or_default();
        Self {
            name: name.to_owned(),
            prompt_len: seq.num_prompt_tokens(),
            positions: captured.positions,
            logits: captured.values,
            recomputed_positions: captured.recomputed_positions,
            recomputed_logits: captured.recomputed_values,
            vocab: captured.vocab_size,
            output_tokens: seq.output_token_ids().to_vec(),
            cached_tokens: seq.num_cached_tokens(),
            preemptions: seq.num_preemptions(),
        }
    }
}

/// Every prompt's run, with what the engine did.
#[derive(Debug, Clone, PartialEq)]
pub struct SituationRun {
    pub situation: Situation,
    pub prompts: Vec<PromptRun>,
    pub prefix_hit_tokens: usize,
    pub preemptions: usize,
    pub steps: usize,
    /// Most sequences in one step.
    pub max_batch: usize,
}

/// The engine's block size in every situation.
pub(crate) const BLOCK_SIZE: usize = 16;

fn config(max_model_len: usize, situation: Situation, reference: &Reference) -> Result<Config, EngineError> {
    let longest = reference.prompts.iter().map(|p| p.prompt_ids.len() + p.greedy_tokens.len()).max().unwrap_or(1);
    let max_model_len = max_model_len.max(longest);
    let blocks_one = max_model_len.div_ceil(BLOCK_SIZE);
    let all: usize =
        reference.prompts.iter().map(|p| (p.prompt_ids.len() + p.greedy_tokens.len()).div_ceil(BLOCK_SIZE)).sum();
    let builder = Config::builder()
        .block_size(BLOCK_SIZE)
        .max_model_len(max_model_len)
        .max_num_seqs(16)
        .eos_token_ids(Vec::new())
        .enable_chunked_prefill(true);
    let builder = match situation {
        Situation::Alone => {
            builder.enable_prefix_caching(false).num_kv_blocks(blocks_one).max_num_batched_tokens(max_model_len)
        }
        Situation::Batched => {
            builder.enable_prefix_caching(false).num_kv_blocks(all.max(blocks_one)).max_num_batched_tokens(48)
        }
        Situation::PrefixCached => {
            builder.enable_prefix_caching(true).num_kv_blocks(all.max(blocks_one)).max_num_batched_tokens(max_model_len)
        }
        // A cache that holds one sequence at its longest and no more: the engine's context is cut to that sequence
        // (the engine needs the cache to hold one full context), so that a model with a long context and short
        // reference prompts (the bench preset: 1024 and 23 tokens) still preempts.
        Situation::Preempted => builder
            .max_model_len(longest)
            .enable_prefix_caching(false)
            .num_kv_blocks(longest.div_ceil(BLOCK_SIZE))
            .max_num_batched_tokens(longest),
    };
    Ok(builder.build()?)
}

fn params(p: &ReferencePrompt) -> SamplingParams {
    SamplingParams { ignore_eos: true, logits: LogitsCapture::All, ..SamplingParams::greedy(p.greedy_tokens.len()) }
}

/// Runs every reference prompt through an engine on `runtime` in `situation`, greedy, keeping all logits.
/// `max_model_len` is the model's context (raised to the longest prompt + continuation if smaller).
pub fn run_reference(
    runtime: Box<dyn Runtime>,
    reference: &Reference,
    max_model_len: usize,
    situation: Situation,
) -> Result<SituationRun, EngineError> {
    let mut engine = LlmEngine::new(config(max_model_len, situation, reference)?, runtime)?;
    let mut out =
        SituationRun { situation, prompts: Vec::new(), prefix_hit_tokens: 0, preemptions: 0, steps: 0, max_batch: 0 };
    let mut ids: Vec<(SeqId, usize)> = Vec::new();
    let mut results: Vec<Option<PromptRun>> = vec![None; reference.prompts.len()];

    let step = |engine: &mut LlmEngine,
                out: &mut SituationRun,
                results: &mut Vec<Option<PromptRun>>,
                ids: &[(SeqId, usize)]| {
        let r = engine.step()?;
        if let Some(s) = r.stats {
            out.steps += 1;
            out.prefix_hit_tokens += s.prefix_hit_tokens;
            out.preemptions += s.num_preemptions;
            out.max_batch = out.max_batch.max(s.num_seqs);
        }
        for seq in r.finished {
            let index = ids.iter().find(|(id, _)| *id == seq.id()).map(|(_, i)| *i).expect("a prompt of ours");
            results[index] = Some(PromptRun::from_sequence(&reference.prompts[index].name, &seq));
        }
        Ok::<_, EngineError>(r.new_tokens)
    };

    match situation {
        Situation::Alone => {
            for (i, p) in reference.prompts.iter().enumerate() {
                ids.push((engine.add_request(p.prompt_ids.clone(), params(p))?, i));
                while engine.has_unfinished() {
                    step(&mut engine, &mut out, &mut results, &ids)?;
                }
            }
        }
        Situation::Batched | Situation::Preempted => {
            for (i, p) in reference.prompts.iter().enumerate() {
                ids.push((engine.add_request(p.prompt_ids.clone(), params(p))?, i));
            }
        }
        Situation::PrefixCached => {
            // Everything but the shared-prefix group first, then the group's first prompt; its followers join once
            // its prompt is computed, while it still runs (so runtimes that copy from a live holder can too).
            let (group, rest): (Vec<usize>, Vec<usize>) =
                (0..reference.prompts.len()).partition(|&i| reference.prompts[i].kind == PromptKind::SharedPrefix);
            for i in rest {
                ids.push((
                    engine.add_request(reference.prompts[i].prompt_ids.clone(), params(&reference.prompts[i]))?,
                    i,
                ));
            }
            if let Some((&leader, followers)) = group.split_first() {
                let leader_id = engine
                    .add_request(reference.prompts[leader].prompt_ids.clone(), params(&reference.prompts[leader]))?;
                ids.push((leader_id, leader));
                loop {
                    let new_tokens = step(&mut engine, &mut out, &mut results, &ids)?;
                    if new_tokens.iter().any(|(id, _)| *id == leader_id) || !engine.has_unfinished() {
                        break;
                    }
                }
                for &i in followers {
                    ids.push((
                        engine.add_request(reference.prompts[i].prompt_ids.clone(), params(&reference.prompts[i]))?,
                        i,
                    ));
                }
            }
        }
    }
    while engine.has_unfinished() {
        step(&mut engine, &mut out, &mut results, &ids)?;
    }
    out.prompts = results.into_iter().map(|r| r.expect("every prompt finished")).collect();
    Ok(out)
}
