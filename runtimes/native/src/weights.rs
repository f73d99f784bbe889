//! Reading weights from an HF model directory: `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`, memory-mapped. Tensors are returned as f32 (F16 and BF16 are widened), after a
//! shape check that names the tensor and file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::NativeError;

/// The safetensors files of one model.
#[derive(Debug)]
pub struct WeightFiles {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    index: HashMap<String, usize>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NativeError + '_ {
    move |source| NativeError::Io { path: path.to_path_buf(), source }
}

fn map(path: &Path) -> Result<Mmap, NativeError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and private to this process. Like every mmap reader (candle, safetensors), it
    // assumes nobody truncates the checkpoint while the model loads; the tensors are copied out before use.
    unsafe { Mmap::map(&file) }.map_err(io(path))
}

impl WeightFiles {
    pub fn open(dir: &Path) -> Result<Self, NativeError> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let bytes = std::fs::read(&index_path).map_err(io(&index_path))?;
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| NativeError::Index { path: index_path.clone(), reason: format!("malformed JSON: {e}") })?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| NativeError::Index {
                path: index_path.clone(),
                reason: "no `weight_map` object".into(),
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            files.sort();
            files.dedup();
            files
        } else {
            vec!["model.safetensors".to_owned()]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in names {
            if name.contains('/') || name.contains("..") {
                return Err(NativeError::Index {
                    path: index_path,
                    reason: format!("shard name `{name}` leaves the directory"),
                });
            }
            let path = dir.join(&name);
            let mmap = map(&path)?;
            let st =
                SafeTensors::deserialize(&mmap).map_err(
                    |source| match nano_vllm_bundle::safetensors_layout::diagnose(&mmap) {
                        Some(reason) => NativeError::Index {
                            path: path.clone(),
                            reason: format!("not a valid safetensors file: {reason}"),
                        },
                        None => NativeError::Safetensors { path: path.clone(), source },
                    },
                )?;
            for tensor in st.names() {
                index.insert(tensor.to_owned(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self { dir: dir.to_path_buf(), files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` as f32, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, NativeError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| NativeError::MissingTensor { dir: self.dir.clone(), name: name.to_owned() })?;
        let (path, mmap) = &self.files[i];
        let st =
            SafeTensors::deserialize(mmap).map_err(|source| NativeError::Safetensors { path: path.clone(), source })?;
        let view = st.tensor(name).map_err(|source| NativeError::Safetensors { path: path.clone(), source })?;
        if view.shape() != shape {
            return Err(NativeError::Shape {
                path: path.clone(),
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let words = |n: usize| data.chunks_exact(n);
        Ok(match view.dtype() {
            Dtype::F32 => words(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => words(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => words(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(NativeError::Dtype {
                    path: path.clone(),
                    name: name.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }
}
