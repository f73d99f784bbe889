//! Records how this binary was built, for reports (`results.json`'s provenance): the compiler (`rustc --version`:
//! instruction counts and timings compare only between builds of the same compiler), the profile and opt-level, the
//! target and its enabled CPU features (what `-C target-cpu` chose), RUSTFLAGS, and the versions of the runtime
//! libraries in `Cargo.lock`.

/// Crates whose versions decide what a runtime computes and how fast.
const LIBRARIES: [&str; 8] =
    ["ort", "candle-core", "llama-cpp-2", "llama-cpp-sys-2", "gemm", "tokenizers", "safetensors", "half"];

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NANO_VLLM_RUSTC_VERSION={version}");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    // RUSTFLAGS as cargo passed them (flags separated by 0x1f).
    let rustflags = env("CARGO_ENCODED_RUSTFLAGS").replace('\x1f', " ");
    println!("cargo:rustc-env=NANO_VLLM_RUSTFLAGS={rustflags}");
    println!("cargo:rustc-env=NANO_VLLM_PROFILE={}", env("PROFILE"));
    println!("cargo:rustc-env=NANO_VLLM_OPT_LEVEL={}", env("OPT_LEVEL"));
    println!("cargo:rustc-env=NANO_VLLM_TARGET={}", env("TARGET"));
    println!("cargo:rustc-env=NANO_VLLM_TARGET_FEATURES={}", env("CARGO_CFG_TARGET_FEATURE"));
    let lock = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    println!("cargo:rustc-env=NANO_VLLM_LIBRARIES={}", library_versions(&text));
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed=build.rs");
    // CARGO_ENCODED_RUSTFLAGS is cargo's own; the variables users set are watched too.
    for var in ["RUSTC", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}

/// `name=version` for each of [`LIBRARIES`] in the lock file, separated by `;`.
fn library_versions(lock: &str) -> String {
    let mut found = Vec::new();
    for package in lock.split("[[package]]") {
        let field = |key: &str| {
            package.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version)) = (field("name"), field("version"))
            && LIBRARIES.contains(&name.as_str())
        {
            found.push(format!("{name}={version}"));
        }
    }
    found.sort();
    found.join(";")
}
