//! What can be wrong with a GGUF file; every variant names the file (and the key, tensor or offset).

use std::path::PathBuf;

use super::ggml_type::GgmlType;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a GGUF file (it starts with {found:02x?} instead of the magic \"GGUF\")", path.display())]
    NotGguf { path: PathBuf, found: Vec<u8> },
    #[error("{}: GGUF version {version} is not supported (versions 2 and 3 are)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{}: truncated: {what} needs {needed} bytes at offset {offset}, but the file has {file_len}", path.display())]
    Truncated { path: PathBuf, offset: usize, what: String, needed: usize, file_len: usize },
    #[error("{}: corrupt at offset {offset}: {what}", path.display())]
    Corrupt { path: PathBuf, offset: usize, what: String },
    #[error(
        "{}: tensor `{name}` ({len} bytes at data offset {offset}) lies outside the file of {file_len} bytes (truncated?)",
        path.display()
    )]
    TensorOutOfBounds { path: PathBuf, name: String, offset: u64, len: u64, file_len: usize },
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    Metadata { path: PathBuf, key: String, reason: String },
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    Shape { path: PathBuf, name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("{}: tensor `{name}` is {ggml_type}, which this reader does not dequantize", path.display())]
    UnsupportedType { path: PathBuf, name: String, ggml_type: GgmlType },
    #[error(
        "{}: architecture '{architecture}' is not supported (supported: llama, qwen2, qwen3, gemma3, gpt2); it needs a runtime that \
         implements it, such as llama-cpp",
        path.display()
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{}: {what} is not supported", path.display())]
    Unsupported { path: PathBuf, what: String },
}
