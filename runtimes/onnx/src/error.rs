//! The crate's one error type. Every variant names what it is about: the library path, the model file, the graph
//! input, the sequence.

use std::path::PathBuf;

use nano_vllm_engine::SeqId;

/// How to get the library, appended to every library error.
pub const LIBRARY_FIX: &str = "run `bash ci/setup.sh` (installs onnxruntime==1.31.1 into .venv), or set \
                               ORT_DYLIB_PATH to a libonnxruntime.so of ONNX Runtime 1.31 or newer";

/// What went wrong loading ONNX Runtime, a model, or running a step.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A library path was given (by `OnnxOptions::library` or `ORT_DYLIB_PATH`) and nothing is there.
    #[error("ONNX Runtime library not found at {path} (from {origin}); {LIBRARY_FIX}")]
    LibraryNotFound { path: PathBuf, origin: &'static str },
    /// No path was given and no project venv holds the library.
    #[error(
        "ONNX Runtime library not found: ORT_DYLIB_PATH is not set and no \
         .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* exists under {}; {LIBRARY_FIX}",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibraryNotInstalled { searched: Vec<PathBuf> },
    /// The file exists but is not a usable ONNX Runtime (not a shared library, wrong version, ...).
    #[error("cannot load ONNX Runtime from {path}: {reason}; {LIBRARY_FIX}")]
    LibraryLoad { path: PathBuf, reason: String },
    /// ONNX Runtime is loaded once per process; another file was asked for afterwards.
    #[error(
        "ONNX Runtime is already loaded in this process from {loaded}; cannot also load {requested} (one library per \
         process: use the same path everywhere)"
    )]
    LibraryConflict { loaded: PathBuf, requested: PathBuf },
    #[error("cannot create the ONNX Runtime environment (library {path}): {source}")]
    Environment {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error("ONNX model {path} not found")]
    ModelNotFound { path: PathBuf },
    /// ONNX Runtime refused the file: truncated, corrupt, not ONNX, unsupported opset.
    #[error("cannot load ONNX model {path}: {source}")]
    ModelLoad {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    /// The graph loaded but its inputs or outputs are not those of a causal LM with a KV cache.
    #[error("ONNX model {path}: {problem}")]
    Graph { path: PathBuf, problem: String },
    #[error("invalid options: {0}")]
    Options(String),
    /// The step batch does not fit this model (see `StepBatch::validate`).
    #[error("step batch: {0}")]
    Batch(#[from] nano_vllm_engine::BatchError),
    /// The engine's idea of a sequence's computed tokens differs from the keys and values the runtime holds.
    #[error(
        "sequence {seq_id}: the step says {expected} tokens are computed, but the runtime holds keys and values for {held}"
    )]
    KvMismatch { seq_id: SeqId, expected: usize, held: usize },
    /// A prefix-cache hit that no running sequence can serve.
    #[error(
        "sequence {seq_id}: {cached_tokens} prefix-cached tokens, but no sequence the runtime holds starts with the \
         same {blocks} blocks and has computed them"
    )]
    NoPrefixHolder { seq_id: SeqId, cached_tokens: usize, blocks: usize },
    #[error("ONNX Runtime run failed ({rows} sequences x {query} query tokens, past {past}): {source}")]
    Run {
        rows: usize,
        query: usize,
        past: usize,
        #[source]
        source: ort::Error,
    },
    /// An output's shape or type is not what the graph declared.
    #[error("ONNX output {name}: {problem}")]
    Output { name: String, problem: String },
}
