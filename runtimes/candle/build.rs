//! Records the resolved candle-core version (from the workspace's Cargo.lock) for `RuntimeInfo::version`.

use std::path::{Path, PathBuf};

fn find_lock(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join("Cargo.lock")).find(|p| p.is_file())
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut version = String::from("0.11 (version not found in Cargo.lock)");
    if let Some(lock) = find_lock(&manifest_dir) {
        println!("cargo:rerun-if-changed={}", lock.display());
        if let Ok(text) = std::fs::read_to_string(&lock) {
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if line.trim() == "name = \"candle-core\"" {
                    if let Some(v) = lines.next().and_then(|l| l.trim().strip_prefix("version = \"")) {
                        version = v.trim_end_matches('"').to_string();
                    }
                    break;
                }
            }
        }
    }
    println!("cargo:rustc-env=NANO_VLLM_CANDLE_CORE_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
