//! nano-vllm-harness: the benchmarking and conformance harness. Workloads (JSONL traces and seeded synthetic
//! generators), replay through the shared engine, HTTP targets (OpenAI-compatible servers and fleets), metrics defined
//! as vLLM's serving benchmark defines them, parity against reference logits, quality (perplexity and KL divergence on a corpus), reports and the regression
//! gates.
//! Models and runtimes come from `nano-vllm-models`; the server is `nano-vllm-serve`; the `nano-vllm` binary
//! (`nano-vllm-cli`) is the command line over all three.

pub mod bench;
pub mod gate;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod parity;
pub mod provenance;
pub mod quality;
pub mod replay;
pub mod report;
pub mod workload;
