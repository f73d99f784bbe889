//! llama.cpp's own quantizer (`llama_model_quantize`, what its `llama-quantize` tool runs), so that the native
//! kernels and llama.cpp can be compared on the same quantized file made by the reference implementation: Q4_0
//! ("pure": every matrix Q4_0, as `native:q4_0` quantizes at load), and the mixes the hubs publish, each with
//! llama.cpp's own choice of types per tensor and its fallbacks for rows that are not whole 256-blocks: Q2_K, Q3_K_M,
//! Q4_K_M, Q5_K_M, Q6_K, IQ4_NL and IQ4_XS (none needs an importance matrix); and the F16 and BF16 file types.

use std::ffi::CString;
use std::path::Path;

use crate::error::LoadError;

/// A target of [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// Every matrix Q4_0 (`--pure`), token embeddings and output included.
    Q4_0Pure,
    /// llama.cpp's `Q2_K` mix (Q2_K with Q3_K/Q4_K where it keeps more bits).
    Q2K,
    /// llama.cpp's `Q3_K_M` mix.
    Q3KM,
    /// llama.cpp's `Q4_K_M` mix (Q4_K and Q6_K).
    Q4KM,
    /// llama.cpp's `Q5_K_M` mix (Q5_K and Q6_K).
    Q5KM,
    /// llama.cpp's `Q6_K`.
    Q6K,
    /// llama.cpp's `IQ4_NL` (non-linear 4-bit blocks of 32).
    IQ4NL,
    /// llama.cpp's `IQ4_XS` (non-linear 4-bit super-blocks of 256).
    IQ4XS,
    /// llama.cpp's `F16` file type (`MOSTLY_F16`: every matrix f16, vectors f32).
    F16,
    /// llama.cpp's `BF16` file type (`MOSTLY_BF16`).
    BF16,
}

impl Quantization {
    /// The llama.cpp mixes and half-precision file types (every target but Q4_0 pure), by option name.
    pub const MIXES: [Self; 9] =
        [Self::Q2K, Self::Q3KM, Self::Q4KM, Self::Q5KM, Self::Q6K, Self::IQ4NL, Self::IQ4XS, Self::F16, Self::BF16];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q4_0Pure => "q4_0",
            Self::Q2K => "q2_k",
            Self::Q3KM => "q3_k_m",
            Self::Q4KM => "q4_k_m",
            Self::Q5KM => "q5_k_m",
            Self::Q6K => "q6_k",
            Self::IQ4NL => "iq4_nl",
            Self::IQ4XS => "iq4_xs",
            Self::F16 => "mostly_f16",
            Self::BF16 => "mostly_bf16",
        }
    }

    /// The mix named `name` (`q4_k_m`, ...), not Q4_0 pure.
    pub fn mix(name: &str) -> Option<Self> {
        Self::MIXES.into_iter().find(|q| q.as_str() == name)
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
        Quantization::Q2K => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q2_K,
        Quantization::Q3KM => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q3_K_M,
        Quantization::Q4KM => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        Quantization::Q5KM => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q5_K_M,
        Quantization::Q6K => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q6_K,
        Quantization::IQ4NL => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_IQ4_NL,
        Quantization::IQ4XS => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_IQ4_XS,
        Quantization::F16 => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16,
        Quantization::BF16 => params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_BF16,
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
