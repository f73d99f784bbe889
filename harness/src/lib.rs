//! nano-vllm-harness: what users run. The runtime registry, workloads (JSONL traces and seeded synthetic
//! generators), HTTP targets (OpenAI-compatible servers and fleets), metrics defined as vLLM's serving benchmark
//! defines them, and `serve`: the engine behind an OpenAI-compatible API. The `nano-vllm` binary builds on it.

pub mod bench;
pub mod gate;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod model;
pub mod parity;
pub mod provenance;
pub mod quantized;
pub mod registry;
pub mod replay;
pub mod report;
pub mod serve;
pub mod workload;
