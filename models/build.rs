//! The llama-cpp-sys-2 version of `Cargo.lock` (the crate that vendors llama.cpp), for the cache key of the files
//! llama.cpp quantizes (`quantized.rs`): another llama.cpp may quantize differently.

fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = text
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"llama-cpp-sys-2\""))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NANO_VLLM_LLAMA_CPP_SYS_VERSION={version}");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed=build.rs");
}
