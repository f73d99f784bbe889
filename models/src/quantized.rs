//! Files quantized by llama.cpp's own quantizer from a bundle's `model.f32.gguf` (Q4_0 pure, Q4_K_M), kept in the
//! project's cache (`$NANO_VLLM_CACHE`, default `$XDG_CACHE_HOME/nano-vllm` or `~/.cache/nano-vllm`, as
//! `ci/setup.sh`) under `quantized/`, named by the bundle's manifest digest and the llama.cpp that made it (its build
//! number and the llama-cpp-sys-2 crate: another llama.cpp may quantize differently): made once, then reused. Each
//! file (renamed into place by `nano_vllm_llama_cpp::quantize`) gets its sha256 beside it, checked at every use, so a
//! partial or altered file is made anew rather than measured. The native kernels and llama.cpp
//! both load the same file (`native:q4_k_m`, `llama-cpp:q4_k_m`, `llama-cpp:q4_0`).

use std::path::PathBuf;

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

/// The bundle's f32 GGUF quantized to `target` by llama.cpp: the cached file, made if absent or if it no longer
/// matches the sha256 recorded when it was made.
#[cfg(feature = "llama-cpp")]
pub fn llama_quantized(
    model: &crate::model::ModelSource,
    target: nano_vllm_llama_cpp::Quantization,
) -> Result<PathBuf, String> {
    let bundle = model.bundle().ok_or_else(|| {
        format!(
            "{}: llama.cpp's {} is made from a bundle's model.f32.gguf (this model is not a bundle)",
            model.path().display(),
            target.as_str()
        )
    })?;
    quantized_in(&cache_root().join("quantized"), bundle, target)
}

/// As [`llama_quantized`], with the cache in `dir`.
#[cfg(feature = "llama-cpp")]
fn quantized_in(
    dir: &std::path::Path,
    bundle: &nano_vllm_bundle::Bundle,
    target: nano_vllm_llama_cpp::Quantization,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let digest = &bundle.manifest_sha256()[..16.min(bundle.manifest_sha256().len())];
    let name = format!("{}-{digest}-{}.{}.gguf", bundle.name(), llama_cpp_key(), target.as_str());
    let path = dir.join(&name);
    let sum_path = dir.join(format!("{name}.sha256"));
    if path.is_file() && std::fs::read_to_string(&sum_path).is_ok_and(|want| sha256_file(&path).ok() == Some(want)) {
        return Ok(path);
    }
    // `quantize` writes beside `path` and renames into place; the sum goes last, so a file without its sum (a run
    // killed between the two) is made again.
    nano_vllm_llama_cpp::quantize(&bundle.gguf_f32(), &path, target, 0).map_err(|e| e.to_string())?;
    let sum = sha256_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let sum_tmp = dir.join(format!(".{name}.sha256.{}", std::process::id()));
    std::fs::write(&sum_tmp, sum)
        .and_then(|()| std::fs::rename(&sum_tmp, &sum_path))
        .map_err(|e| format!("cannot store {} in the cache: {e}", sum_path.display()))?;
    Ok(path)
}

/// What names the llama.cpp that quantizes: its build (`llama_version`) and the crate that vendors it, as a file name
/// part (letters, digits, dots and dashes only).
#[cfg(feature = "llama-cpp")]
fn llama_cpp_key() -> String {
    let sys = env!("NANO_VLLM_LLAMA_CPP_SYS_VERSION");
    let key = format!("llama{}-sys{sys}", nano_vllm_llama_cpp::llama_cpp_version());
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// The sha256 of a file, in hex.
#[cfg_attr(not(feature = "llama-cpp"), allow(dead_code))]
fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_as_sha256sum_hashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2's example.
        assert_eq!(sha256_file(&f).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[cfg(feature = "llama-cpp")]
    #[test]
    fn the_cache_key_names_llama_cpp_and_is_a_plain_file_name() {
        let key = llama_cpp_key();
        assert!(key.starts_with("llama") && key.contains("-sys0.1."), "{key}");
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'), "{key}");
    }

    #[cfg(feature = "llama-cpp")]
    #[test]
    fn a_cached_file_that_no_longer_matches_its_sum_is_made_anew() {
        use nano_vllm_llama_cpp::Quantization;
        let cache = tempfile::tempdir().unwrap();
        let bundle = nano_vllm_bundle::Bundle::open(nano_vllm_bundle::fixtures_dir().join("tiny-llama")).unwrap();
        let path = quantized_in(cache.path(), &bundle, Quantization::Q4_0Pure).unwrap();
        let made = std::fs::read(&path).unwrap();
        let sum = std::fs::read_to_string(format!("{}.sha256", path.display())).unwrap();
        assert_eq!(sum, sha256_file(&path).unwrap());
        // Only the file and its sum: no temporary left behind.
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
        // Cut short (a copy interrupted, a disk full): the next use makes it again, the same bytes.
        std::fs::write(&path, &made[..made.len() / 2]).unwrap();
        assert_eq!(quantized_in(cache.path(), &bundle, Quantization::Q4_0Pure).unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), made);
    }
}
