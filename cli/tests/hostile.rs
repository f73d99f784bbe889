//! The hostile-input corpus (`tests/hostile/make_corpus.py`: broken safetensors, GGUF, ONNX, tokenizer.json,
//! config.json and manifests; impossible engine settings; bad traces; bad command lines; corrupt results and
//! baselines), every case run through the `nano-vllm` binary. Each must end with a non-zero exit and an error naming
//! what is wrong (the case's expected words): never a panic, a signal (a failed allocation aborts), a hang, or an
//! accepted bad input; a few odd but valid inputs (a context of 10^15 positions) must run. The earlier run the
//! corpus holds is still there, byte for byte, afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    args: Vec<String>,
    expect: Vec<String>,
    timeout_s: u64,
    /// Odd but valid input: it must run (exit 0), and not crash, hang or allocate absurdly.
    #[serde(default)]
    ok: bool,
    /// Where it runs (default: the repository root).
    #[serde(default)]
    cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Clean,
    Unclear,
    Accepted,
    Panic,
    Signal,
    Hang,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs one case; its outcome and the end of its stderr.
fn run(case: &Case, scratch: &Path, index: usize) -> (Outcome, String) {
    let (out_path, err_path) = (scratch.join(format!("{index}.out")), scratch.join(format!("{index}.err")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nano-vllm"))
        .args(&case.args)
        .current_dir(case.cwd.clone().unwrap_or_else(repo))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(case.timeout_s);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned();
    let tail: String = stderr.trim().lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    let outcome = match status {
        None => Outcome::Hang,
        Some(s) if s.code().is_none() => Outcome::Signal,
        Some(s) if s.code() == Some(101) || stderr.contains("panicked") => Outcome::Panic,
        Some(s) if case.ok => {
            if s.success() {
                Outcome::Clean
            } else {
                Outcome::Unclear
            }
        }
        Some(s) if s.success() => Outcome::Accepted,
        Some(_) if case.expect.iter().all(|e| stderr.contains(e.as_str())) => Outcome::Clean,
        Some(_) => Outcome::Unclear,
    };
    (outcome, tail)
}

fn digest_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn every_hostile_input_ends_in_a_named_error() {
    let corpus = tempfile::tempdir().unwrap();
    let made = Command::new("python3")
        .arg(repo().join("cli/tests/hostile/make_corpus.py"))
        .arg(corpus.path())
        .current_dir(repo())
        .output()
        .expect("python3 runs the corpus generator");
    assert!(made.status.success(), "make_corpus.py: {}", String::from_utf8_lossy(&made.stderr));
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(corpus.path().join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let good = corpus.path().join("runs/good");
    let before = digest_dir(&good);

    let scratch = tempfile::tempdir().unwrap();
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    // Two at a time: the cases are short, the machine has few cores.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(case) = cases.get(i) else { break };
                    let (outcome, tail) = run(case, scratch.path(), i);
                    results.lock().unwrap().push((outcome, case.name.clone(), case.expect.clone(), tail));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort();
    let count = |o: Outcome| results.iter().filter(|r| r.0 == o).count();
    let summary = format!(
        "{} cases: {} clean errors, {} unclear errors, {} accepted, {} panics, {} signals, {} hangs",
        results.len(),
        count(Outcome::Clean),
        count(Outcome::Unclear),
        count(Outcome::Accepted),
        count(Outcome::Panic),
        count(Outcome::Signal),
        count(Outcome::Hang)
    );
    eprintln!("{summary}");
    let failures: Vec<String> = results
        .iter()
        .filter(|r| r.0 != Outcome::Clean)
        .map(|(o, name, expect, tail)| format!("{o:?}: {name} (expected {expect:?}): {tail}"))
        .collect();
    assert!(failures.is_empty(), "{summary}\n{}", failures.join("\n"));
    // The earlier run in the corpus was neither replaced nor joined by another run's files.
    assert_eq!(digest_dir(&good), before, "runs/good changed");
}
