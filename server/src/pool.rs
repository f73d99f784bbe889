//! Tokenization and chat-template rendering off the async workers: a fixed pool of threads that parse request bodies
//! (tokenizing their prompts, rendering their chat templates) and answer `/tokenize` and `/detokenize`, as vLLM moved
//! this work off its event loop. The two async workers then only move bytes: a long prompt being tokenized no longer
//! holds up the streams of every other client. The pool's size is `serve --renderer-num-workers` (vLLM's name for
//! its renderer pool). A job that panics is answered with a 500 and its worker lives on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};

use axum::http::StatusCode;

use super::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; cloning the sender side is cheap, and the threads end when the pool is dropped.
#[derive(Debug)]
pub struct TokenizerPool {
    jobs: Mutex<mpsc::Sender<Job>>,
    workers: usize,
}

impl TokenizerPool {
    /// `workers` threads (at least one).
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("nano-vllm-tokenizer-{i}")).spawn(move || {
                loop {
                    // The lock is held only to take one job; a poisoned lock cannot happen (nothing panics holding it).
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => {
                            let _ = catch_unwind(AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self { jobs: Mutex::new(tx), workers })
    }

    /// Threads in the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a worker and waits for its result without blocking the async worker.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self.jobs.lock().map(|jobs| jobs.send(job).is_ok()).unwrap_or(false);
        let internal = |message: &str| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            param: None,
        };
        if !sent {
            return Err(internal("the tokenizer pool has stopped"));
        }
        // The sender is dropped unsent only when `f` panicked.
        rx.await.map_err(|_| internal("tokenizing this request failed (a tokenizer worker panicked)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn jobs_run_on_the_pools_threads_and_a_panic_is_a_500_that_leaves_the_worker_alive() {
        let pool = TokenizerPool::new(2).unwrap();
        assert_eq!(pool.workers(), 2);
        block_on(async {
            let name = pool.run(|| std::thread::current().name().unwrap_or_default().to_owned()).await.unwrap();
            assert!(name.starts_with("nano-vllm-tokenizer-"), "{name}");
            let e = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
            assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
            // Both workers still answer (more jobs than workers, each waited for).
            for i in 0..8u32 {
                assert_eq!(pool.run(move || i * 2).await.unwrap(), i * 2);
            }
        });
    }
}
