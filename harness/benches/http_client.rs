//! The HTTP client's own cost: a workload sent open loop to a stub OpenAI server that answers at once
//! (tests/support/openai_stub.rs, in this process), so everything measured is the client (and the stub's trivial
//! work). Elements are streamed tokens (one per chunk); criterion's throughput is the chunk rate the client
//! sustains on this machine, and the figures printed at the end are the floors it adds to a server's TTFT and ITL.
//!
//! `cargo bench -p nano-vllm-harness --bench http_client -- --warm-up-time 1 --measurement-time 5`

#[path = "../tests/support/openai_stub.rs"]
mod stub;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use nano_vllm_engine::SamplingParams;
use nano_vllm_harness::http::{self, Endpoint, LoadOptions, PromptFormat, Server, Target};
use nano_vllm_harness::metrics::{ServingMetrics, Slo};
use nano_vllm_harness::replay::{Mode, ResolvedRequest};

const REQUESTS: usize = 256;
const CHUNKS: usize = 16;

fn main() {
    let stub = stub::start();
    let target = Target::single(Server::parse(&stub.target(), "ok").unwrap());
    let tokenizer =
        tokenizers::Tokenizer::from_file(nano_vllm_bundle::fixtures_dir().join("tiny-llama/tokenizer.json")).unwrap();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| ResolvedRequest {
            id: None,
            arrival_s: 0.0,
            prompt: vec![(i % 50) as u32 + 20; 32],
            params: SamplingParams { ignore_eos: true, ..SamplingParams::greedy(CHUNKS) },
        })
        .map(|r| http::prepare(&r, Endpoint::Completions, PromptFormat::Text, &tokenizer, true).unwrap())
        .collect();
    let options = LoadOptions {
        endpoint: Endpoint::Completions,
        mode: Mode::Offline,
        warmup: 0,
        max_concurrency: None,
        request_timeout: Duration::from_secs(60),
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
    };
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("http_client");
    group.throughput(Throughput::Elements((REQUESTS * CHUNKS) as u64));
    group.sample_size(10);
    let mut last = None;
    group.bench_function(format!("instant_server/{REQUESTS}x{CHUNKS}"), |b| {
        b.iter(|| {
            let r = http::load::run(&target, &requests, &tokenizer, &options).unwrap();
            assert_eq!(r.failures.len(), 0);
            last = Some(r);
        })
    });
    group.finish();
    c.final_summary();
    if let Some(r) = last {
        let m = ServingMetrics::compute(&r.records, &[50.0, 99.0], &Slo::default());
        println!(
            "client against an instant server ({REQUESTS} requests at once, {CHUNKS} chunks each): {:.0} requests/s, \
             {:.0} chunks/s; TTFT median {:.2} ms p99 {:.2} ms (all sent at t=0, so this is queueing in the client \
             and stub); ITL median {:.3} ms p99 {:.3} ms",
            m.request_throughput,
            m.output_throughput,
            m.ttft_ms.median,
            m.ttft_ms.percentiles["99"],
            m.itl_ms.median,
            m.itl_ms.percentiles["99"],
        );
    }
}
