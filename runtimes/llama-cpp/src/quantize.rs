//! llama.cpp's own quantizer (`llama_model_quantize`, what its `llama-quantize` tool runs), so that the native
//! kernels and llama.cpp can be compared on the same quantized file made by the reference implementation: Q4_0
//! ("pure": every matrix Q4_0, as `native:q4_0` quantizes at load) and Q4_K_M (llama.cpp's usual mix of Q4_K and Q6_K,
//! with its fallbacks for rows that are not whole 256-blocks).

use std::ffi::CString;
use std::path::Path;

use crate::error::LoadError;

/// A target of [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// Every matrix Q4_0 (`--pure`), token embeddings and output included.
    Q4_0Pure,
    /// llama.cpp's `Q4_K_M` mix.
    Q4KM,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q4_0Pure => "q4_0",
            Self::Q4KM => "q4_k_m",
        }
    }
}

/// Writes `output`, `input` (an F32/F16 GGUF) quantized by llama.cpp, on `threads` threads (0: every core). The file
/// is written next to `output` and renamed into place, so a reader never sees a partial file.
pub fn quantize(input: &Path, output: &Path, target: Quantization, threads: usize) -> Result<(), LoadError> {
    crate::backend::backend()?;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| LoadError::Options(format!("{} has a NUL byte", p.display())))
    };
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = output.with_extension(format!("partial-{}-{n}", std::process::id()));
    let (inp, out) = (cstr(input)?, cstr(&partial)?);
    // SAFETY: plain value initialisation of llama.cpp's parameter struct.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.nthread = threads as i32;
    match target {
        Quantization::Q4_0Pure => {
            params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0;
            params.pure_ = true;
        }
        Quantization::Q4KM => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_K_M,
    }
    crate::log::clear();
    // SAFETY: both paths are NUL-terminated C strings that outlive the call; `params` is a valid parameter struct
    // whose pointers (imatrix, overrides) are the defaults' nulls.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(LoadError::Model { path: input.to_path_buf(), llama_log: crate::log::take() });
    }
    std::fs::rename(&partial, output)
        .map_err(|e| LoadError::Unreadable { path: output.to_path_buf(), reason: format!("cannot write it: {e}") })
}
