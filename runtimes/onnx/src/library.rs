//! Finding and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at build time, and the library is opened at run
//! time with `ort::init_from(path)`, which returns a typed error when the file is unusable (relying on
//! `ORT_DYLIB_PATH` alone would panic inside `ort`). Where it is looked for, first match wins:
//!
//! 1. an explicit path (`OnnxOptions::library`),
//! 2. `ORT_DYLIB_PATH`,
//! 3. the project venv that `bash ci/setup.sh` fills (`onnxruntime==1.31.1` from `ci/requirements-runtime.txt`):
//!    `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` under the workspace root (this crate's
//!    `CARGO_MANIFEST_DIR/../..` at compile time), then under the current directory and its ancestors, then under
//!    the executable's ancestors.
//!
//! A given path that does not exist is an error naming it; nothing is loaded in that case. ONNX Runtime allows one
//! library and one environment per process, so the first successful load is kept for the life of the process and
//! shared by every session; a later call that finds another file is an error naming both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::OnnxError;

/// Environment variable naming the library file (the same variable `ort` itself reads).
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Environment variable that lets tests skip (loudly) when the library is not installed. Only for local runs: CI
/// installs the library and never sets it.
pub const SKIP_ENV: &str = "NANO_VLLM_SKIP_ONNX";

/// The `ort` crate version this crate is built against (pinned in the workspace `Cargo.toml`).
pub const ORT_CRATE_VERSION: &str = "2.0.0-rc.15";

/// ONNX Runtime, loaded once per process.
#[derive(Debug)]
pub struct OrtLibrary {
    path: PathBuf,
    version: String,
    environment: Environment,
}

impl OrtLibrary {
    /// The file that was loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// ONNX Runtime's version, e.g. `1.31.1`.
    pub fn version(&self) -> &str {
        &self.version
    }
    pub(crate) fn environment(&self) -> &Environment {
        &self.environment
    }
}

static LOADED: OnceLock<OrtLibrary> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Finds the library (see the module docs) and loads it, or returns the one this process already loaded.
pub fn load(explicit: Option<&Path>) -> Result<&'static OrtLibrary, OnnxError> {
    let path = locate(explicit)?;
    let _guard = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(loaded) = LOADED.get() {
        return if same_file(&loaded.path, &path) {
            Ok(loaded)
        } else {
            Err(OnnxError::LibraryConflict { loaded: loaded.path.clone(), requested: path })
        };
    }
    let builder =
        ort::init_from(&path).map_err(|e| OnnxError::LibraryLoad { path: path.clone(), reason: e.to_string() })?;
    let environment = builder
        .with_name("nano-vllm")
        .with_telemetry(false)
        .build()
        .map_err(|source| OnnxError::Environment { path: path.clone(), source })?;
    let version = version_from_build_info(ort::info()).unwrap_or_else(|| version_from_file_name(&path));
    Ok(LOADED.get_or_init(|| OrtLibrary { path, version, environment }))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The library this process loaded, if any.
pub fn loaded() -> Option<&'static OrtLibrary> {
    LOADED.get()
}

/// Where the library is: an explicit path, else `ORT_DYLIB_PATH`, else a project venv (module docs). Loads nothing.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, OnnxError> {
    locate_in(explicit, std::env::var_os(DYLIB_ENV), &search_roots())
}

/// The library of the project venv alone (step 3 of the module docs), whatever `ORT_DYLIB_PATH` says. Loads nothing.
pub fn locate_venv() -> Result<PathBuf, OnnxError> {
    locate_in(None, None, &search_roots())
}

/// [`locate`] with its inputs given, for tests.
fn locate_in(explicit: Option<&Path>, env_value: Option<OsString>, roots: &[PathBuf]) -> Result<PathBuf, OnnxError> {
    let given = match (explicit, env_value) {
        (Some(path), _) => Some((path.to_path_buf(), "OnnxOptions::library")),
        (None, Some(value)) if !value.is_empty() => Some((PathBuf::from(value), DYLIB_ENV)),
        _ => None,
    };
    if let Some((path, origin)) = given {
        return if path.is_file() { Ok(path) } else { Err(OnnxError::LibraryNotFound { path, origin }) };
    }
    roots
        .iter()
        .find_map(|root| venv_library(root))
        .ok_or_else(|| OnnxError::LibraryNotInstalled { searched: roots.to_vec() })
}

/// Directories whose `.venv` may hold the library: the workspace root, the current directory and its ancestors, the
/// executable's ancestors; each once, in that order.
fn search_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut push = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        if !roots.contains(&p) {
            roots.push(p);
        }
    };
    push(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".."));
    if let Ok(cwd) = std::env::current_dir() {
        cwd.ancestors().for_each(&mut push);
    }
    if let Ok(exe) = std::env::current_exe() {
        exe.ancestors().skip(1).for_each(&mut push);
    }
    roots
}

/// `root/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, the highest version if several.
fn venv_library(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv").join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .filter(|python| python.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|python| std::fs::read_dir(python.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|capi| capi.flatten().map(|f| f.path()))
        .filter(|f| f.is_file() && f.file_name().is_some_and(|n| is_library_name(&n.to_string_lossy())))
        .collect();
    found.sort_by_key(|f| version_key(&f.to_string_lossy()));
    found.pop()
}

/// `libonnxruntime.so`, `libonnxruntime.so.1.31.1`, `libonnxruntime.1.31.1.dylib`; not the provider libraries.
fn is_library_name(name: &str) -> bool {
    name == "libonnxruntime.so"
        || name.starts_with("libonnxruntime.so.")
        || (name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
}

/// The numbers in a path, for ordering versions (`python3.9` < `python3.11`, `.so.1.9.0` < `.so.1.31.1`).
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

/// `ORT Build Info: git-branch=rel-1.31.1, ...` -> `1.31.1`.
fn version_from_build_info(info: &str) -> Option<String> {
    let rest = &info[info.find("git-branch=rel-")? + "git-branch=rel-".len()..];
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    (!version.is_empty()).then_some(version)
}

/// `libonnxruntime.so.1.31.1` -> `1.31.1`; `unknown` when the name carries no version.
fn version_from_file_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let digits: Vec<String> = version_key(&name).iter().map(u64::to_string).collect();
    if digits.is_empty() { "unknown".into() } else { digits.join(".") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_venv(root: &Path, python: &str, files: &[&str]) {
        let capi = root.join(".venv/lib").join(python).join("site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        for f in files {
            std::fs::write(capi.join(f), b"").unwrap();
        }
    }

    #[test]
    fn explicit_path_wins_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&lib, b"").unwrap();
        assert_eq!(locate_in(Some(&lib), Some("/elsewhere".into()), &[]).unwrap(), lib);

        let missing = dir.path().join("nope/libonnxruntime.so");
        let err = locate_in(Some(&missing), None, &[]).unwrap_err();
        assert!(
            matches!(&err, OnnxError::LibraryNotFound { path, origin: "OnnxOptions::library" } if *path == missing)
        );
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()) && msg.contains("bash ci/setup.sh"), "{msg}");
    }

    #[test]
    fn env_var_is_used_and_a_missing_target_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fake_venv(dir.path(), "python3.11", &["libonnxruntime.so.1.31.1"]);
        let err = locate_in(None, Some("/no/such/libonnxruntime.so".into()), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, OnnxError::LibraryNotFound { origin: DYLIB_ENV, .. }));
        assert!(err.to_string().contains("/no/such/libonnxruntime.so"));
        // An empty variable counts as unset.
        let found = locate_in(None, Some("".into()), &[dir.path().to_path_buf()]).unwrap();
        assert!(found.ends_with("python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"));
    }

    #[test]
    fn venv_search_takes_the_first_root_and_the_highest_version_and_skips_providers() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fake_venv(a.path(), "python3.9", &["libonnxruntime.so.1.31.0"]);
        fake_venv(
            a.path(),
            "python3.11",
            &["libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so", "onnxruntime_pybind11_state.so"],
        );
        fake_venv(b.path(), "python3.11", &["libonnxruntime.so.1.32.0"]);
        let roots = [PathBuf::from("/nonexistent-root"), a.path().to_path_buf(), b.path().to_path_buf()];
        let found = locate_in(None, None, &roots).unwrap();
        assert_eq!(found.file_name().unwrap(), "libonnxruntime.so.1.31.1");
        assert!(found.starts_with(a.path()));
    }

    #[test]
    fn nothing_installed_lists_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate_in(None, None, &[dir.path().to_path_buf()]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OnnxError::LibraryNotInstalled { .. }));
        assert!(msg.contains(&dir.path().display().to_string()) && msg.contains("bash ci/setup.sh"), "{msg}");
    }

    #[test]
    fn versions_are_read_from_build_info_or_file_name() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.31.1"));
        assert_eq!(version_from_build_info("ORT Build Info: git-branch=main"), None);
        assert_eq!(version_from_file_name(Path::new("/x/libonnxruntime.so.1.31.1")), "1.31.1");
        assert_eq!(version_from_file_name(Path::new("/x/libonnxruntime.so")), "unknown");
        assert!(version_key("python3.9") < version_key("python3.11"));
    }
}
