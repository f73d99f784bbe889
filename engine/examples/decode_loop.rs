//! Steps 256 decoding sequences on a runtime that does nothing, for profiling the engine's own per-step cost
//! (`perf record cargo run --release --example decode_loop`).

use std::time::Instant;

use nano_vllm_engine::{
    Capabilities, Config, KvCacheKind, LlmEngine, PrefixReuse, Runtime, RuntimeError, RuntimeInfo, SamplingParams,
    StepBatch, StepOutput,
};

#[derive(Debug)]
struct Null;

impl Runtime for Null {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo { name: "null".into(), ..RuntimeInfo::default() }
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::EnginePaged,
            prefix_reuse: PrefixReuse::SharedBlocks,
            ..Default::default()
        }
    }
    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(StepOutput { vocab_size: 1, logits: vec![0.0; batch.num_logit_rows()] })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, steps) = (256usize, 2000usize);
    let config = Config::builder()
        .max_num_seqs(n)
        .max_num_batched_tokens(8192)
        .max_model_len(2100)
        .num_kv_blocks(n * 2100 / 16 + n)
        .build()?;
    let mut engine = LlmEngine::new(config, Box::new(Null))?;
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(steps + 10) };
    for i in 0..n as u32 {
        engine.add_request((0..32).map(|t| t * 7 + i).collect(), params.clone())?;
    }
    engine.step()?;
    let t = Instant::now();
    for _ in 0..steps {
        engine.step()?;
    }
    let dt = t.elapsed();
    println!(
        "{:.1} M decode tokens/s scheduled ({n} seqs, contexts 32..{})",
        (n * steps) as f64 / dt.as_secs_f64() / 1e6,
        32 + steps
    );
    Ok(())
}
