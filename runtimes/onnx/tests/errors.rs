//! Error quality: a missing or unusable library, a missing, truncated or non-ONNX model file, and a graph that is not
//! a causal LM with KV cache each give a typed error naming the path (and for the library, the fix).

mod common;

use std::path::{Path, PathBuf};

use nano_vllm_bundle::open_fixture;
use nano_vllm_onnx::{OnnxError, OnnxOptions, OnnxRuntime};

fn tiny_llama_onnx() -> PathBuf {
    open_fixture("tiny-llama").unwrap().onnx()
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[test]
fn a_missing_library_path_names_the_path_and_the_fix() {
    let missing = PathBuf::from("/nonexistent/onnxruntime/libonnxruntime.so.1.31.1");
    let options = OnnxOptions { library: Some(missing.clone()), ..common::options() };
    let err = OnnxRuntime::load(tiny_llama_onnx(), &options).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(&err, OnnxError::LibraryNotFound { path, .. } if *path == missing), "{err:?}");
    assert!(msg.contains("/nonexistent/onnxruntime/libonnxruntime.so.1.31.1"), "{msg}");
    assert!(msg.contains("bash ci/setup.sh") && msg.contains("ORT_DYLIB_PATH"), "{msg}");
}

#[test]
fn a_file_that_is_not_a_library_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let options = OnnxOptions { library: Some(fake.clone()), ..common::options() };
    let err = OnnxRuntime::load(tiny_llama_onnx(), &options).unwrap_err();
    eprintln!("{err}");
    // The first load in this process fails in dlopen; once the real library is loaded, another file is refused.
    assert!(
        matches!(&err, OnnxError::LibraryLoad { path, .. } | OnnxError::LibraryConflict { requested: path, .. } if *path == fake),
        "{err:?}"
    );
    assert!(err.to_string().contains(&fake.display().to_string()), "{err}");
}

#[test]
fn a_missing_model_file_is_named() {
    let err = OnnxRuntime::load("/nonexistent/model.onnx", &common::options()).unwrap_err();
    assert!(matches!(err, OnnxError::ModelNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ONNX model /nonexistent/model.onnx not found");
}

fn load_error(model: &Path) -> Option<OnnxError> {
    if !common::library_available("errors") {
        return None;
    }
    let err = OnnxRuntime::load(model, &common::options()).unwrap_err();
    eprintln!("{err}");
    Some(err)
}

#[test]
fn a_truncated_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("model.onnx");
    let bytes = std::fs::read(tiny_llama_onnx()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let Some(err) = load_error(&truncated) else { return };
    assert!(matches!(&err, OnnxError::ModelLoad { path, .. } if *path == truncated), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot load ONNX model {}: ", truncated.display())), "{err}");
}

#[test]
fn a_file_that_is_not_onnx_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("model.onnx");
    std::fs::write(&text, "this is not a protobuf, just text\n".repeat(10)).unwrap();
    let Some(err) = load_error(&text) else { return };
    assert!(matches!(&err, OnnxError::ModelLoad { path, .. } if *path == text), "{err:?}");
}

#[test]
fn a_graph_without_kv_cache_is_refused_clearly() {
    let path = data("no_kv_cache.onnx");
    let Some(err) = load_error(&path) else { return };
    assert!(matches!(&err, OnnxError::Graph { path: p, .. } if *p == path), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no_kv_cache.onnx") && msg.contains("exported without a KV cache"), "{msg}");
    assert!(msg.contains("its inputs are: input_ids, attention_mask, position_ids"), "{msg}");
}

#[test]
fn a_graph_lacking_position_ids_is_refused_clearly() {
    let path = data("no_position_ids.onnx");
    let Some(err) = load_error(&path) else { return };
    let msg = err.to_string();
    assert!(msg.contains("no_position_ids.onnx") && msg.contains("no input `position_ids`"), "{msg}");
    assert!(msg.contains("its inputs are: input_ids, attention_mask, past_key_values.0.key"), "{msg}");
}
