//! llama.cpp's backend, initialised once per process.
//!
//! `LlamaBackend::init()` may succeed only once per process (a second call is an error), and tests run as threads of
//! one process, so the backend lives in a [`OnceLock`] and every runtime borrows it. It is never freed: llama.cpp
//! keeps global state for the process's lifetime anyway. Initialising also installs [`crate::log`]'s capture.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

use crate::error::LoadError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process's llama.cpp backend, initialised on first use.
pub fn backend() -> Result<&'static LlamaBackend, LoadError> {
    BACKEND
        .get_or_init(|| {
            let backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            crate::log::install();
            Ok(backend)
        })
        .as_ref()
        .map_err(|reason| LoadError::Backend(reason.clone()))
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
}
