//! Where a run's figures came from, recorded in `results.json` so that a reader can trust (or distrust) a comparison
//! months later: which source (git commit, and whether the tree had uncommitted changes), which build (compiler,
//! profile, RUSTFLAGS and the CPU features the compiler was allowed, cargo features, library versions), which machine
//! (OS, kernel; the CPU itself is [`crate::machine::CpuIdentity`]) and which thread settings.
//!
//! Build facts come from `build.rs`; the rest is read when the run starts. A field that cannot be read is empty,
//! never a guess.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Environment variables that change what a runtime does or how fast (thread pools, library paths, this
/// harness's own switches). Recorded when set; secrets (`NANO_VLLM_API_KEY`) never.
const RELEVANT_ENV: [&str; 9] = [
    "OMP_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ORT_DYLIB_PATH",
    "GGML_NUM_THREADS",
    "NANO_VLLM_CACHE",
    "NANO_VLLM_SKIP_ONNX",
    "NANO_VLLM_BENCH_RUNTIMES",
];

/// How, where and from what a run was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// This harness's version (`nano-vllm --version`).
    pub nano_vllm_version: String,
    /// The checkout's commit (as `RunMetadata::git_commit`), and whether tracked files differed from it.
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// `rustc --version` of the build.
    pub rustc: String,
    /// Cargo profile (`release`, `debug`) and opt-level.
    pub profile: String,
    pub opt_level: String,
    /// Target triple.
    pub target: String,
    /// RUSTFLAGS the build used (e.g. `-C target-cpu=native`), empty when none.
    pub rustflags: String,
    /// CPU features the compiler could assume (`avx2`, `fma`, ... when `target-cpu` allows them); runtime-dispatched
    /// kernels may use more, per the CPU.
    pub target_features: Vec<String>,
    /// Cargo features of the harness: the runtimes compiled in.
    pub cargo_features: Vec<String>,
    /// Runtime and support library versions from `Cargo.lock` (`ort`, `candle-core`, `llama-cpp-2`, ...). Each row's
    /// `version` says what that runtime loaded (e.g. the ONNX Runtime library's own version).
    pub libraries: BTreeMap<String, String>,
    /// `PRETTY_NAME` of `/etc/os-release`, and the kernel release.
    pub os: String,
    pub kernel: String,
    /// Threads asked for (`--threads`; 0: one per core) and logical cores available to the process.
    pub threads_requested: usize,
    pub cores_available: usize,
    /// [`RELEVANT_ENV`] variables that were set.
    pub env: BTreeMap<String, String>,
}

impl Provenance {
    /// This process's provenance, for a run that asked for `threads` runtime threads.
    pub fn current(threads: usize) -> Self {
        let git = GitState::read();
        Self {
            nano_vllm_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: git.commit,
            git_dirty: git.dirty,
            rustc: env!("NANO_VLLM_RUSTC_VERSION").to_owned(),
            profile: env!("NANO_VLLM_PROFILE").to_owned(),
            opt_level: env!("NANO_VLLM_OPT_LEVEL").to_owned(),
            target: env!("NANO_VLLM_TARGET").to_owned(),
            rustflags: env!("NANO_VLLM_RUSTFLAGS").to_owned(),
            target_features: split_list(env!("NANO_VLLM_TARGET_FEATURES"), ','),
            cargo_features: nano_vllm_models::registry::available()
                .into_iter()
                .filter(|r| *r != "mock")
                .map(str::to_owned)
                .collect(),
            libraries: split_list(env!("NANO_VLLM_LIBRARIES"), ';')
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect(),
            os: os_release(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            threads_requested: threads,
            cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
            env: RELEVANT_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect(),
        }
    }

    /// The fields in which `other` differs from this one, as `field: this -> other` lines (empty: the same build
    /// on the same kind of system).
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {a} -> {b}"));
            }
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        cmp("git commit", opt(&self.git_commit), opt(&other.git_commit));
        cmp("git dirty", format!("{:?}", self.git_dirty), format!("{:?}", other.git_dirty));
        cmp("rustc", self.rustc.clone(), other.rustc.clone());
        cmp(
            "profile",
            format!("{} {}", self.profile, self.opt_level),
            format!("{} {}", other.profile, other.opt_level),
        );
        cmp("RUSTFLAGS", self.rustflags.clone(), other.rustflags.clone());
        cmp("target features", self.target_features.join(","), other.target_features.join(","));
        cmp("cargo features", self.cargo_features.join(","), other.cargo_features.join(","));
        cmp("libraries", format!("{:?}", self.libraries), format!("{:?}", other.libraries));
        cmp("OS", self.os.clone(), other.os.clone());
        cmp("kernel", self.kernel.clone(), other.kernel.clone());
        cmp("threads", self.threads_requested.to_string(), other.threads_requested.to_string());
        cmp("cores", self.cores_available.to_string(), other.cores_available.to_string());
        cmp("environment", format!("{:?}", self.env), format!("{:?}", other.env));
        out
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        let commit = match (&self.git_commit, self.git_dirty) {
            (Some(c), Some(true)) => format!("{} (uncommitted changes)", short(c)),
            (Some(c), _) => short(c),
            (None, _) => "no git commit".into(),
        };
        format!(
            "nano-vllm {} at {commit}; {} {} (opt-level {}){}; {}; kernel {}; {} threads asked (0: one per core) of {} cores",
            self.nano_vllm_version,
            self.rustc,
            self.profile,
            self.opt_level,
            if self.rustflags.is_empty() { String::new() } else { format!(", RUSTFLAGS `{}`", self.rustflags) },
            if self.os.is_empty() { "OS unknown" } else { &self.os },
            if self.kernel.is_empty() { "unknown" } else { &self.kernel },
            self.threads_requested,
            self.cores_available
        )
    }
}

/// The git state of the checkout this binary was built from (or, when it was moved, of the working directory).
#[derive(Debug, Default)]
struct GitState {
    commit: Option<String>,
    dirty: Option<bool>,
}

impl GitState {
    fn read() -> Self {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = if source.join(".git").exists() { source } else { std::path::PathBuf::from(".") };
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git").arg("-C").arg(&dir).args(args).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]);
        let dirty = commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty());
        Self { commit, dirty }
    }
}

fn split_list(s: &str, sep: char) -> Vec<String> {
    s.split(sep).map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

/// `PRETTY_NAME` from an os-release file, unquoted.
fn os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_and_machine_are_recorded() {
        let p = Provenance::current(2);
        assert_eq!(p.nano_vllm_version, env!("CARGO_PKG_VERSION"));
        assert!(p.rustc.starts_with("rustc "), "{}", p.rustc);
        assert!(matches!(p.profile.as_str(), "release" | "debug"), "{}", p.profile);
        assert!(!p.target.is_empty() && !p.opt_level.is_empty());
        // The runtime libraries come from Cargo.lock.
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        for name in ["ort", "llama-cpp-2"] {
            let version = p.libraries.get(name).unwrap_or_else(|| panic!("{name}: {:?}", p.libraries));
            assert!(lock.contains(&format!("name = \"{name}\"\nversion = \"{version}\"")), "{name} {version}");
        }
        assert!(p.libraries.contains_key("candle-core") && p.libraries.contains_key("tokenizers"));
        #[cfg(target_arch = "x86_64")]
        assert!(p.target_features.iter().any(|f| f == "sse2"), "{:?}", p.target_features);
        #[cfg(target_os = "linux")]
        assert!(!p.kernel.is_empty() && !p.os.is_empty(), "{p:?}");
        assert_eq!(p.threads_requested, 2);
        assert!(p.cores_available >= 1);
        // Tests run in the checkout: a commit, and whether it is dirty.
        assert!(p.git_commit.as_ref().is_some_and(|c| c.len() == 40) && p.git_dirty.is_some(), "{p:?}");
        assert!(!p.env.contains_key("NANO_VLLM_API_KEY"));
        assert!(p.describe().contains(&p.rustc), "{}", p.describe());
    }

    #[test]
    fn differences_name_the_fields() {
        let a = Provenance { rustc: "rustc 1.90.0".into(), threads_requested: 2, ..Provenance::default() };
        assert!(a.differences(&a.clone()).is_empty());
        let b = Provenance {
            rustc: "rustc 1.91.0".into(),
            rustflags: "-C target-cpu=native".into(),
            git_dirty: Some(true),
            ..a.clone()
        };
        assert_eq!(
            a.differences(&b),
            [
                "git dirty: None -> Some(true)",
                "rustc: rustc 1.90.0 -> rustc 1.91.0",
                "RUSTFLAGS:  -> -C target-cpu=native"
            ]
        );
    }

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_release(text), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os_release(""), "");
    }
}
