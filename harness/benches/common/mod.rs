//! Shared by the wall-clock benchmarks.

use std::path::{Path, PathBuf};

use nano_vllm_models::model::ModelSource;

/// The model of `NANO_VLLM_BENCH_MODEL` (or `NANO_VLLM_BENCH_BUNDLE`): any model `nano-vllm bench --model` takes,
/// default `fixtures/tiny-llama`. cargo runs benches in the package directory, so a relative path is taken from the
/// workspace root.
pub fn bench_model() -> ModelSource {
    let dir = std::env::var_os("NANO_VLLM_BENCH_MODEL")
        .or_else(|| std::env::var_os("NANO_VLLM_BENCH_BUNDLE"))
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p) } else { p })
        .unwrap_or_else(|| nano_vllm_bundle::fixtures_dir().join("tiny-llama"));
    ModelSource::open(&dir).unwrap_or_else(|e| panic!("NANO_VLLM_BENCH_MODEL={}: {e}", dir.display()))
}
