//! The crate's one error type. Every variant names the file involved (and the field or tensor), so a damaged or
//! mismatched bundle is reported as "which file, what is wrong" and never as a panic.

use std::path::PathBuf;

/// What can go wrong when opening, verifying or reading a fixture bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file the bundle needs is not there (the manifest itself, or a file it lists).
    #[error("{}: file is missing", path.display())]
    MissingFile { path: PathBuf },

    /// A file exists but could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (manifest.json, tokenizer_reference.json) is malformed or lacks a required field.
    #[error("{}: malformed JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The file's `format_version` is not one this reader understands.
    #[error("{}: format_version {found} is not supported (this reader reads version {supported})", path.display())]
    UnsupportedFormatVersion { path: PathBuf, found: u64, supported: u32 },

    /// A field parsed but its value is inconsistent (e.g. a file listed twice, a path escaping the bundle).
    #[error("{}: field `{field}`: {reason}", path.display())]
    InvalidField { path: PathBuf, field: String, reason: String },

    /// A listed file's size differs from the manifest (e.g. a truncated file).
    #[error("{}: size is {actual} bytes but the manifest says {expected}", path.display())]
    SizeMismatch { path: PathBuf, expected: u64, actual: u64 },

    /// A listed file's sha256 differs from the manifest.
    #[error("{}: sha256 is {actual} but the manifest says {expected}", path.display())]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },

    /// reference.safetensors could not be parsed as safetensors.
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// A tensor the manifest implies is absent from reference.safetensors.
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// A reference tensor has an unexpected dtype.
    #[error("{}: tensor `{tensor}` has dtype {actual}, expected {expected}", path.display())]
    TensorDtype { path: PathBuf, tensor: String, expected: String, actual: String },

    /// A reference tensor has an unexpected shape.
    #[error("{}: tensor `{tensor}` has shape {actual:?}, expected {expected}", path.display())]
    TensorShape { path: PathBuf, tensor: String, expected: String, actual: Vec<usize> },

    /// A reference tensor has the right shape but invalid contents (e.g. a token id outside the vocabulary).
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    InvalidTensor { path: PathBuf, tensor: String, reason: String },
}

impl BundleError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::MissingFile { path }
            | Self::Io { path, .. }
            | Self::Json { path, .. }
            | Self::UnsupportedFormatVersion { path, .. }
            | Self::InvalidField { path, .. }
            | Self::SizeMismatch { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::Safetensors { path, .. }
            | Self::MissingTensor { path, .. }
            | Self::TensorDtype { path, .. }
            | Self::TensorShape { path, .. }
            | Self::InvalidTensor { path, .. } => path,
        }
    }

    /// An I/O error on `path`, with "not found" reported as [`BundleError::MissingFile`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::MissingFile { path }
        } else {
            Self::Io { path, source }
        }
    }

    pub(crate) fn field(path: impl Into<PathBuf>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField { path: path.into(), field: field.into(), reason: reason.into() }
    }
}

/// Read a whole file, mapping errors to [`BundleError`].
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|e| BundleError::io(path, e))
}
