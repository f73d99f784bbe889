//! Damaged copies of a committed bundle give an error that names the file (and tensor or field) involved.

use nano_vllm_bundle::{Bundle, BundleError};
use safetensors::Dtype;

use crate::util::{copy_bundle, read_manifest, reseal, rewrite_safetensors, tensor, write_manifest};

fn assert_names(err: &BundleError, file: &str) {
    assert!(err.path().ends_with(file), "error is about {} not {file}: {err}", err.path().display());
    assert!(err.to_string().contains(file), "message names {file}: {err}");
}

#[test]
fn missing_file_fails_verify() {
    let copy = copy_bundle("tiny-llama");
    std::fs::remove_file(copy.dir.join("model.onnx")).unwrap();
    let bundle = Bundle::open(&copy.dir).unwrap();
    let err = bundle.verify().unwrap_err();
    assert!(matches!(err, BundleError::MissingFile { .. }), "{err:?}");
    assert_names(&err, "model.onnx");
}

#[test]
fn missing_manifest_fails_open() {
    let copy = copy_bundle("tiny-qwen2");
    std::fs::remove_file(copy.dir.join("manifest.json")).unwrap();
    let err = Bundle::open(&copy.dir).unwrap_err();
    assert!(matches!(err, BundleError::MissingFile { .. }), "{err:?}");
    assert_names(&err, "manifest.json");
}

#[test]
fn flipped_byte_fails_checksum() {
    let copy = copy_bundle("tiny-gpt2");
    let path = copy.dir.join("model.f32.gguf");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Bundle::open(&copy.dir).unwrap().verify().unwrap_err();
    match &err {
        BundleError::ChecksumMismatch { expected, actual, .. } => assert_ne!(expected, actual),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_names(&err, "model.f32.gguf");
}

#[test]
fn truncated_file_fails_verify_and_load() {
    let copy = copy_bundle("tiny-llama");
    let path = copy.dir.join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let bundle = Bundle::open(&copy.dir).unwrap();
    let err = bundle.verify().unwrap_err();
    match &err {
        BundleError::SizeMismatch { expected, actual, .. } => assert_eq!(*actual * 2, *expected - (*expected % 2)),
        other => panic!("expected a size mismatch, got {other:?}"),
    }
    assert_names(&err, "reference.safetensors");
    let err = bundle.reference().unwrap_err();
    assert!(matches!(err, BundleError::Safetensors { .. }), "{err:?}");
    assert_names(&err, "reference.safetensors");
}

#[test]
fn truncated_reference_never_panics() {
    let copy = copy_bundle("tiny-qwen2");
    let path = copy.dir.join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let bundle = Bundle::open(&copy.dir).unwrap();
    for cut in [0, 1, 7, 8, 9, 100, 1000, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = bundle.reference().unwrap_err();
        assert_names(&err, "reference.safetensors");
    }
}

#[test]
fn malformed_manifest_fails_open() {
    let copy = copy_bundle("tiny-llama");
    let path = copy.dir.join("manifest.json");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 1, 20, bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = Bundle::open(&copy.dir).unwrap_err();
        assert_names(&err, "manifest.json");
    }
    std::fs::write(&path, b"{ not json").unwrap();
    let err = Bundle::open(&copy.dir).unwrap_err();
    assert!(matches!(err, BundleError::Json { .. }), "{err:?}");
    assert_names(&err, "manifest.json");
}

#[test]
fn manifest_without_a_required_field_names_it() {
    let copy = copy_bundle("tiny-llama");
    let mut manifest = read_manifest(&copy.dir);
    manifest.as_object_mut().unwrap().remove("tolerances");
    write_manifest(&copy.dir, &manifest);
    let err = Bundle::open(&copy.dir).unwrap_err();
    assert!(matches!(err, BundleError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("tolerances"), "{err}");
}

#[test]
fn newer_format_version_is_refused() {
    let copy = copy_bundle("tiny-llama");
    let mut manifest = read_manifest(&copy.dir);
    manifest["format_version"] = 2.into();
    manifest.as_object_mut().unwrap().remove("files"); // a version error, not a field error
    write_manifest(&copy.dir, &manifest);
    let err = Bundle::open(&copy.dir).unwrap_err();
    assert!(matches!(err, BundleError::UnsupportedFormatVersion { found: 2, supported: 1, .. }), "{err:?}");
    assert_names(&err, "manifest.json");
}

#[test]
fn manifest_path_outside_the_bundle_is_refused() {
    let copy = copy_bundle("tiny-gpt2");
    let mut manifest = read_manifest(&copy.dir);
    manifest["files"][0]["path"] = "../escape.json".into();
    write_manifest(&copy.dir, &manifest);
    let err = Bundle::open(&copy.dir).unwrap_err();
    match &err {
        BundleError::InvalidField { field, .. } => assert_eq!(field, "files[0].path"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn format_pointing_at_an_unlisted_file_is_refused() {
    let copy = copy_bundle("tiny-gpt2");
    let mut manifest = read_manifest(&copy.dir);
    manifest["formats"]["onnx"] = "other.onnx".into();
    write_manifest(&copy.dir, &manifest);
    let err = Bundle::open(&copy.dir).unwrap_err();
    assert!(err.to_string().contains("formats.onnx") && err.to_string().contains("other.onnx"), "{err}");
}

#[test]
fn reference_tensor_of_the_wrong_shape_is_named() {
    let copy = copy_bundle("tiny-llama");
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        let t = tensor(tensors, "short.prompt_logits");
        t.shape = vec![7, 511];
        t.data.truncate(7 * 511 * 4);
    });
    let bundle = Bundle::open(&copy.dir).unwrap();
    bundle.verify().unwrap();
    let err = bundle.reference().unwrap_err();
    match &err {
        BundleError::TensorShape { tensor, expected, actual, .. } => {
            assert_eq!(tensor, "short.prompt_logits");
            assert_eq!(expected, "[7, 512]");
            assert_eq!(actual, &[7, 511]);
        }
        other => panic!("{other:?}"),
    }
    assert_names(&err, "reference.safetensors");
    assert!(err.to_string().contains("short.prompt_logits"), "{err}");
}

#[test]
fn reference_tensor_of_the_wrong_dtype_is_named() {
    let copy = copy_bundle("tiny-qwen2");
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        tensor(tensors, "long.prompt_ids").dtype = Dtype::F32
    });
    let err = Bundle::open(&copy.dir).unwrap().reference().unwrap_err();
    match &err {
        BundleError::TensorDtype { tensor, actual, .. } => {
            assert_eq!((tensor.as_str(), actual.as_str()), ("long.prompt_ids", "F32"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn i64_prompt_ids_are_accepted() {
    let copy = copy_bundle("tiny-gpt2");
    let original = Bundle::open(&copy.dir).unwrap().reference().unwrap();
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        let t = tensor(tensors, "short.prompt_ids");
        t.dtype = Dtype::I64;
        t.data = t
            .data
            .chunks_exact(4)
            .flat_map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
            .collect();
    });
    let reread = Bundle::open(&copy.dir).unwrap().reference().unwrap();
    assert_eq!(reread, original);
}

#[test]
fn missing_reference_tensor_is_named() {
    let copy = copy_bundle("tiny-gpt2");
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        tensors.retain(|(n, _)| n != "prefix_b.greedy_tokens")
    });
    let err = Bundle::open(&copy.dir).unwrap().reference().unwrap_err();
    match &err {
        BundleError::MissingTensor { tensor, .. } => assert_eq!(tensor, "prefix_b.greedy_tokens"),
        other => panic!("{other:?}"),
    }
    assert_names(&err, "reference.safetensors");
}

#[test]
fn token_id_outside_the_vocabulary_is_refused() {
    let copy = copy_bundle("tiny-llama");
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        tensor(tensors, "single.greedy_tokens").data[..4].copy_from_slice(&9999i32.to_le_bytes());
    });
    let err = Bundle::open(&copy.dir).unwrap().reference().unwrap_err();
    match &err {
        BundleError::InvalidTensor { tensor, reason, .. } => {
            assert_eq!(tensor, "single.greedy_tokens");
            assert!(reason.contains("9999"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_shared_prefix_is_refused() {
    let copy = copy_bundle("tiny-qwen2");
    rewrite_safetensors(&copy.dir, "reference.safetensors", |tensors| {
        let ids = &mut tensor(tensors, "prefix_c.prompt_ids").data;
        let first = i32::from_le_bytes(ids[..4].try_into().unwrap());
        ids[..4].copy_from_slice(&(if first == 5 { 6i32 } else { 5 }).to_le_bytes());
    });
    let err = Bundle::open(&copy.dir).unwrap().reference().unwrap_err();
    assert!(matches!(&err, BundleError::InvalidTensor { tensor, .. } if tensor == "prefix_c.prompt_ids"), "{err:?}");
}

#[test]
fn malformed_tokenizer_reference_is_named() {
    let copy = copy_bundle("tiny-llama");
    let path = copy.dir.join("tokenizer_reference.json");
    let text = std::fs::read_to_string(&path).unwrap().replacen("\"ids\"", "\"idz\"", 1);
    std::fs::write(&path, text).unwrap();
    reseal(&copy.dir, "tokenizer_reference.json");
    let bundle = Bundle::open(&copy.dir).unwrap();
    bundle.verify().unwrap();
    let err = bundle.tokenizer_reference().unwrap_err();
    assert!(matches!(err, BundleError::Json { .. }), "{err:?}");
    assert_names(&err, "tokenizer_reference.json");
}
