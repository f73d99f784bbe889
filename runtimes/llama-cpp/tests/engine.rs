//! The runtime under the real engine in a busy mix: shared prefixes with prefix caching, chunked prefill, a step
//! budget smaller than a prompt, and a KV cache small enough to preempt. Every request's greedy output and sampled
//! logits must equal its run alone.

use nano_vllm_bundle::open_fixture;
use nano_vllm_engine::{Config, LlmEngine, LogitsCapture, SamplingParams, Sequence};
use nano_vllm_llama_cpp::{LlamaCppOptions, LlamaCppRuntime};

fn engine(prefix_caching: bool, num_kv_blocks: usize, budget: usize) -> LlmEngine {
    let bundle = open_fixture("tiny-llama").unwrap();
    let runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions { n_seq_max: 8, ..LlamaCppOptions::parity() });
    let config = Config::builder()
        .block_size(16)
        .max_model_len(128)
        .max_num_seqs(8)
        .num_kv_blocks(num_kv_blocks)
        .max_num_batched_tokens(budget)
        .enable_chunked_prefill(true)
        .enable_prefix_caching(prefix_caching)
        .eos_token_ids(Vec::new())
        .build()
        .unwrap();
    LlmEngine::new(config, Box::new(runtime.unwrap())).unwrap()
}

#[test]
fn a_busy_mix_of_shared_prefixes_preemption_and_chunking_gives_every_request_its_alone_output() {
    let reference = open_fixture("tiny-llama").unwrap().reference().unwrap();
    let base = &reference.prompt("long").unwrap().prompt_ids;
    // 12 prompts: four groups sharing 16, 48 or 64 leading tokens, with different tails.
    let prompts: Vec<Vec<u32>> = (0..12)
        .map(|i| {
            let shared = [16, 48, 64, 64][i % 4];
            let mut p = base[..shared].to_vec();
            p.extend(base[100 + 7 * i..100 + 7 * i + 5 + i].iter().copied());
            p
        })
        .collect();
    let params = SamplingParams { ignore_eos: true, logits: LogitsCapture::Sampled, ..SamplingParams::greedy(12) };
    let alone: Vec<Sequence> =
        prompts.iter().map(|p| engine(false, 8, 128).generate(vec![p.clone()], &params).unwrap().remove(0)).collect();
    let mut busy = engine(true, 10, 40);
    let mut ids = Vec::new();
    for p in &prompts {
        ids.push(busy.add_request(p.clone(), params.clone()).unwrap());
    }
    let (mut done, mut hits, mut preemptions) = (Vec::new(), 0, 0);
    while busy.has_unfinished() {
        let r = busy.step().unwrap();
        if let Some(s) = r.stats {
            hits += s.prefix_hit_tokens;
            preemptions += s.num_preemptions;
        }
        done.extend(r.finished);
    }
    println!("busy mix: {hits} prefix-hit tokens, {preemptions} preemptions");
    assert!(hits >= 64 && preemptions > 0, "hits {hits}, preemptions {preemptions}");
    for (i, a) in alone.iter().enumerate() {
        let b = done.iter().find(|s| s.id() == ids[i]).unwrap();
        assert_eq!(b.output_token_ids(), a.output_token_ids(), "request {i}");
        let (la, lb) = (a.logits().unwrap(), b.logits().unwrap());
        let d = la.values.iter().zip(&lb.values).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "request {i}: max |diff| {d}");
    }
}
