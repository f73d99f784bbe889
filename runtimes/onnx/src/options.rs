//! Settings of an [`OnnxRuntime`](crate::OnnxRuntime).

use std::path::PathBuf;

use crate::plan::StepGrouping;

/// How to load and run a model. `OnnxOptions::default()` uses every core and finds the library itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Threads within an operator (ONNX Runtime's intra-op pool); 0 lets ONNX Runtime choose (one per physical
    /// core). Default: the available parallelism. Operators run one after another (inter-op threads 1).
    pub intra_threads: usize,
    /// The ONNX Runtime library file; `None` looks in `ORT_DYLIB_PATH`, then the project venv (see [`crate::library`]).
    pub library: Option<PathBuf>,
    /// How a step's sequences are grouped into runs (see [`crate::plan`]).
    pub grouping: StepGrouping,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            library: None,
            grouping: StepGrouping::Auto,
        }
    }
}
