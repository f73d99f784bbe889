//! A model directory's safetensors weights, memory-mapped: one `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists. Every read checks the tensor's presence, dtype and shape and names the file
//! in its error; f16, bf16 and f64 tensors are converted to f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;

use nano_vllm_bundle::HfConfig;
use nano_vllm_bundle::gguf::GgufModel;

use crate::error::CandleError;

pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// The memory-mapped weights of one model directory.
pub(crate) struct Weights {
    /// The file named in "missing tensor" errors: `model.safetensors`, or the shard index.
    origin: PathBuf,
    shards: Vec<(PathBuf, MmapedSafetensors)>,
    /// Tensor name -> shard; `None` for a single file (everything is in shard 0).
    routing: Option<HashMap<String, usize>>,
    /// A GGUF read as an HF checkpoint instead of safetensors (tensors dequantized to f32).
    gguf: Option<GgufModel>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shards: Vec<_> = self.shards.iter().map(|(p, _)| p).collect();
        f.debug_struct("Weights").field("origin", &self.origin).field("shards", &shards).finish()
    }
}

/// The innermost message of a candle error (candle wraps file errors with the path, which we name ourselves).
fn reason(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithPath { inner, .. } => reason(*inner),
        candle_core::Error::WithBacktrace { inner, .. } => reason(*inner),
        other => other.to_string(),
    }
}

fn map_file(path: &Path) -> Result<MmapedSafetensors, CandleError> {
    // Distinguish "cannot read" from "not a safetensors file".
    std::fs::metadata(path).map_err(|source| CandleError::Io { path: path.into(), source })?;
    // SAFETY: the file is mapped read-only; as with every memory map, it must not be truncated or rewritten by
    // another process while mapped. Tensors are copied out of the map when loaded.
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
        // Name the tensor whose offsets are wrong where the safetensors crate does not.
        let layout = std::fs::read(path).ok().and_then(|b| nano_vllm_bundle::safetensors_layout::diagnose(&b));
        CandleError::InvalidSafetensors { path: path.into(), reason: layout.unwrap_or_else(|| reason(e)) }
    })
}

impl Weights {
    /// Opens `dir/model.safetensors`, or the shards of `dir/model.safetensors.index.json`.
    pub(crate) fn open(dir: &Path) -> Result<Self, CandleError> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            let st = map_file(&single)?;
            return Ok(Self { origin: single.clone(), shards: vec![(single, st)], routing: None, gguf: None });
        }
        if !index.is_file() {
            return Err(CandleError::NoWeights { dir: dir.into() });
        }
        let bytes = std::fs::read(&index).map_err(|source| CandleError::Io { path: index.clone(), source })?;
        let bad = |reason: String| CandleError::InvalidIndex { path: index.clone(), reason };
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut shard_of_file: HashMap<String, usize> = HashMap::new();
        let mut shards = Vec::new();
        let mut routing = HashMap::with_capacity(map.len());
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("`weight_map.{name}` is not a file name")))?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(bad(format!("shard `{file}` is not a file name inside the model directory")));
            }
            let shard = match shard_of_file.get(file) {
                Some(&i) => i,
                None => {
                    let path = dir.join(file);
                    let st = map_file(&path)?;
                    shards.push((path, st));
                    shard_of_file.insert(file.to_string(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            routing.insert(name.clone(), shard);
        }
        Ok(Self { origin: index, shards, routing: Some(routing), gguf: None })
    }

    /// A GGUF file (Llama, Qwen2 or GPT-2) as an HF checkpoint; its config comes with it.
    pub(crate) fn open_gguf(path: &Path) -> Result<(Self, HfConfig), CandleError> {
        let model = GgufModel::open(path)?;
        let config = model.config.clone();
        Ok((Self { origin: path.into(), shards: Vec::new(), routing: None, gguf: Some(model) }, config))
    }

    /// Whether the weights hold `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        if let Some(model) = &self.gguf {
            return model.contains(name);
        }
        match &self.routing {
            Some(r) => r.contains_key(name),
            None => self.shards[0].1.get(name).is_ok(),
        }
    }

    /// Reads `name` as f32, checking that its shape is `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, CandleError> {
        if let Some(model) = &self.gguf {
            return Ok(Tensor::from_vec(model.tensor(name, shape)?, shape, &Device::Cpu)?);
        }
        let missing = |path: &Path| CandleError::MissingTensor { path: path.into(), name: name.into() };
        let shard = match &self.routing {
            Some(r) => *r.get(name).ok_or_else(|| missing(&self.origin))?,
            None => 0,
        };
        let (path, st) = &self.shards[shard];
        let view = st.get(name).map_err(|_| missing(path))?;
        match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {}
            other => {
                return Err(CandleError::WrongDtype {
                    path: path.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        }
        if view.shape() != shape {
            return Err(CandleError::WrongShape {
                path: path.clone(),
                name: name.into(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let t = view
            .load(&Device::Cpu)
            .map_err(|e| CandleError::InvalidSafetensors { path: path.clone(), reason: reason(e) })?;
        Ok(if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? })
    }
}
