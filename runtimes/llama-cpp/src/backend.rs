//! llama.cpp's backend, initialised once per process.
//!
//! `LlamaBackend::init()` may succeed only once per process (a second call is an error), and tests run as threads of
//! one process, so the backend lives in a [`OnceLock`] and every runtime borrows it. It is never freed: llama.cpp
//! keeps global state for the process's lifetime anyway. Initialising also installs [`crate::log`]'s capture.
//!
//! llama.cpp is built for the x86 extensions that `.cargo/config.toml` turns on (`GGML_AVX2=ON`, ...): on a CPU
//! without one of them its first kernel would kill the process with SIGILL. So before anything of llama.cpp runs,
//! the CPU is checked for every extension the build enabled, and a missing one is this runtime's error, naming it;
//! the process and the other runtimes go on.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

use crate::error::LoadError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process's llama.cpp backend, initialised on first use.
pub fn backend() -> Result<&'static LlamaBackend, LoadError> {
    BACKEND
        .get_or_init(|| {
            let missing = missing_cpu_features();
            if !missing.is_empty() {
                return Err(format!(
                    "this build of llama.cpp uses {} (GGML_* in .cargo/config.toml), which this CPU lacks: it would \
                     stop the process with an illegal instruction",
                    missing.join(", ")
                ));
            }
            let backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            crate::log::install();
            Ok(backend)
        })
        .as_ref()
        .map_err(|reason| LoadError::Backend(reason.clone()))
}

/// The x86 extensions this build of llama.cpp was compiled for (the `GGML_*` variables cargo passed its build, read
/// here at compile time) that this CPU does not have.
pub fn missing_cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let enabled = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("on"));
        let wanted = [
            ("sse4.2", enabled(option_env!("GGML_SSE42")), std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", enabled(option_env!("GGML_AVX")), std::arch::is_x86_feature_detected!("avx")),
            ("avx2", enabled(option_env!("GGML_AVX2")), std::arch::is_x86_feature_detected!("avx2")),
            ("fma", enabled(option_env!("GGML_FMA")), std::arch::is_x86_feature_detected!("fma")),
            ("f16c", enabled(option_env!("GGML_F16C")), std::arch::is_x86_feature_detected!("f16c")),
            ("bmi2", enabled(option_env!("GGML_BMI2")), std::arch::is_x86_feature_detected!("bmi2")),
        ];
        wanted.into_iter().filter(|&(_, on, has)| on && !has).map(|(name, _, _)| name).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialises_once_and_is_shared_by_every_caller() {
        let threads: Vec<_> =
            (0..4).map(|_| std::thread::spawn(|| backend().map(|b| b as *const LlamaBackend as usize))).collect();
        let addresses: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert!(addresses.windows(2).all(|w| w[0] == w[1]), "{addresses:?}");
        // llama-cpp-2 itself refuses a second initialisation in this process.
        assert!(LlamaBackend::init().is_err());
    }

    /// The build's extensions are known here (`.cargo/config.toml` passes them to this crate too), and this project's
    /// machines have them all: nothing is missing, so the backend started above.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_build_s_cpu_extensions_are_read_and_this_cpu_has_them() {
        assert_eq!(option_env!("GGML_AVX2"), Some("ON"), "GGML_AVX2 reaches this crate from .cargo/config.toml");
        assert_eq!(missing_cpu_features(), Vec::<&str>::new());
    }
}
