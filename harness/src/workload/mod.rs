//! Workloads: the requests of a run and when they arrive.
//!
//! A trace is JSONL, one request a line ([`TraceRequest`]); [`synthetic`] generates traces from length and arrival
//! distributions, seeded; [`sharegpt`] imports a local ShareGPT-format file.

pub mod sharegpt;
pub mod synthetic;
mod trace;

pub use trace::{Prompt, TraceError, TraceRequest, Workload, read_trace, write_trace};
