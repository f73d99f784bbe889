//! Helpers of the integration tests: copies of a bundle's HF files to damage, safetensors rewriting, and a direct
//! one-sequence prefill through the runtime (no engine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use nano_vllm_bundle::open_fixture;
use nano_vllm_candle::{CandleOptions, CandleRuntime};
use nano_vllm_engine::{KvCacheSpec, Runtime, SeqBatchEntry, StepBatch};

/// A temp dir holding a copy of `bundle`'s `config.json` and `model.safetensors`.
pub fn hf_copy(bundle: &str) -> (tempfile::TempDir, PathBuf) {
    let src = open_fixture(bundle).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(src.hf_dir().join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

pub fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

pub fn write_tensors(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// Rewrites `dir/model.safetensors` through `edit`.
pub fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    write_tensors(&tensors, &path);
}

/// Rewrites `dir/config.json` through `edit`.
pub fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

pub fn load(dir: &Path) -> CandleRuntime {
    CandleRuntime::load(dir, &CandleOptions::default()).unwrap()
}

pub fn load_err(dir: &Path) -> String {
    CandleRuntime::load(dir, &CandleOptions::default()).unwrap_err().to_string()
}

/// Logits at every position of `tokens`, prefilled as one sequence in one step: `[tokens.len() * vocab]`.
pub fn prefill(rt: &mut CandleRuntime, tokens: &[u32]) -> Vec<f32> {
    let (n, bs) = (tokens.len(), 16);
    let blocks = n.div_ceil(bs);
    rt.prepare(&KvCacheSpec { num_blocks: blocks, block_size: bs }).unwrap();
    let batch = StepBatch {
        block_size: bs,
        seqs: vec![SeqBatchEntry {
            seq_id: 0,
            query_start: 0,
            query_len: n,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            block_table_start: 0,
            block_table_len: blocks,
            logits_start: 0,
            num_logits: n,
            samples: true,
            is_prefill: true,
        }],
        token_ids: tokens.to_vec(),
        positions: (0..n as u32).collect(),
        slot_mapping: (0..n as u32).collect(),
        block_tables: (0..blocks as u32).collect(),
        logits_indices: (0..n as u32).collect(),
    };
    rt.step(&batch).unwrap().logits
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
