//! Helpers: copy a committed bundle to a temp dir and damage it in controlled ways.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

/// A copy of committed bundle `name` in a fresh temp dir (removed on drop).
pub struct Copy {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

pub fn copy_bundle(name: &str) -> Copy {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(nano_vllm_bundle::fixtures_dir().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    Copy { _tmp: tmp, dir }
}

pub fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

pub fn write_manifest(dir: &Path, value: &serde_json::Value) {
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// Update the manifest's size and sha256 of `file` to its current contents, so that only the damage under test
/// (not a checksum mismatch) is what the reader meets.
pub fn reseal(dir: &Path, file: &str) {
    let bytes = std::fs::read(dir.join(file)).unwrap();
    let mut manifest = read_manifest(dir);
    let entry = manifest["files"].as_array_mut().unwrap().iter_mut().find(|f| f["path"] == file).unwrap();
    entry["size"] = bytes.len().into();
    entry["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
    write_manifest(dir, &manifest);
}

/// An owned tensor for rewriting a safetensors file.
pub struct Owned {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Rewrite `dir/file` (safetensors) after `edit` changed its tensors; then reseal it.
pub fn rewrite_safetensors(dir: &Path, file: &str, edit: impl FnOnce(&mut Vec<(String, Owned)>)) {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Owned)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, Owned { dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() }))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    reseal(dir, file);
}

pub fn tensor<'a>(tensors: &'a mut [(String, Owned)], name: &str) -> &'a mut Owned {
    &mut tensors.iter_mut().find(|(n, _)| n == name).unwrap().1
}
