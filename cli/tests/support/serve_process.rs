//! `nano-vllm serve` as a child process on a free port, for tests that talk to it over HTTP as any client would
//! (and that see its exit status and everything it printed, panics included).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server.
pub struct ServeProcess {
    pub base: String,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Reads the child's stderr until the pipe closes (the child exited).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `nano-vllm serve --port 0 ARGS` and waits until it listens (its first line names the address).
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nano-vllm"))
            .arg("serve")
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nano-vllm serve starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(at) = line.find("at http://") {
                    let url = line[at + 3..].split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(url);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("nano-vllm serve did not start: {:?}", stderr.lock().unwrap());
            }
        };
        Self { base, child: Some(child), stderr, reader: Some(reader) }
    }

    /// What it printed so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `limit`); its status code (`None`: killed by a signal).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                // Every line it printed: the reader ends when the pipe closes.
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return status.code();
            }
            assert!(start.elapsed() < limit, "nano-vllm serve did not exit within {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The fixture directory of a committed bundle.
pub fn fixture(name: &str) -> String {
    format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One sample of a metric from `/metrics` text.
pub fn sample(text: &str, name: &str) -> f64 {
    nano_vllm_serve::metrics::read_sample(text, name).unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}
