//! Files quantized by llama.cpp's own quantizer from a bundle's `model.f32.gguf` (Q4_0 pure, Q4_K_M), kept in the
//! project's cache (`$NANO_VLLM_CACHE`, default `$XDG_CACHE_HOME/nano-vllm` or `~/.cache/nano-vllm`, as
//! `ci/setup.sh`) under `quantized/`, named by the bundle's manifest digest: made once, then reused. The native kernels
//! and llama.cpp both load the same file (`native:q4_k_m`, `llama-cpp:q4_k_m`, `llama-cpp:q4_0`).

use std::path::PathBuf;

use crate::model::ModelSource;

/// The cache directory of generated files.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("NANO_VLLM_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp/.cache"), |h| PathBuf::from(h).join(".cache"))
    });
    base.join("nano-vllm")
}

/// The bundle's f32 GGUF quantized to `target` by llama.cpp: the cached file, made if absent.
#[cfg(feature = "llama-cpp")]
pub fn llama_quantized(model: &ModelSource, target: nano_vllm_llama_cpp::Quantization) -> Result<PathBuf, String> {
    let bundle = model.bundle().ok_or_else(|| {
        format!(
            "{}: llama.cpp's {} is made from a bundle's model.f32.gguf (this model is not a bundle)",
            model.path().display(),
            target.as_str()
        )
    })?;
    let dir = cache_root().join("quantized");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let digest = &bundle.manifest_sha256()[..16.min(bundle.manifest_sha256().len())];
    let path = dir.join(format!("{}-{digest}.{}.gguf", bundle.name(), target.as_str()));
    if !path.is_file() {
        nano_vllm_llama_cpp::quantize(&bundle.gguf_f32(), &path, target, 0).map_err(|e| e.to_string())?;
    }
    Ok(path)
}
