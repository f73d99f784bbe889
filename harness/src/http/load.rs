//! The load generator: a workload sent to a [`Target`] open loop, as vLLM's `bench serve` sends it.
//!
//! Every request is sent at its scheduled time (offline: all at t = 0; online: the workload's arrivals) whether or
//! not earlier ones have answered, and its clock (t0) starts at that scheduled time, so a slow server cannot hide
//! its queueing from the figures (no coordinated omission). With `max_concurrency` the client holds a request until
//! one of its slots frees: arrivals are then gated by the client, t0 is when the request was released (as in
//! `vllm bench serve --max-concurrency`), and the report says so. A fleet picks a server per request (round robin,
//! or the fewest requests in flight). Warm-up requests go first, unmeasured, to every server of the target.
//!
//! Each request in flight holds a connection, a file descriptor of this process. An open-loop run with more requests
//! than the process may open files for (`RLIMIT_NOFILE`, less a reserve) holds the surplus until a connection frees,
//! its clock still running from the scheduled time (the wait is queueing, as it would be at the server), and records
//! the cap (`client_connection_cap`): the client's limit is never reported as the server's failures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, Exchange, Failure};
use super::request::{PreparedRequest, with_model};
use super::{Balance, Endpoint, HttpError, Target};
use crate::metrics::RequestRecord;
use crate::replay::{Mode, Progress};

/// How to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub endpoint: Endpoint,
    pub mode: Mode,
    /// The first `warmup` requests are sent first, unmeasured, to every server.
    pub warmup: usize,
    /// At most this many requests in flight (client-gated arrivals); `None`: open loop.
    pub max_concurrency: Option<usize>,
    /// Per request, from its send to the last byte.
    pub request_timeout: Duration,
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<Progress>,
}

/// What a target did on the workload.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Measured requests in workload order; failed ones have `error` set, unsent ones (after a cancel)
    /// `finish_reason` `unsent`.
    pub records: Vec<RequestRecord>,
    /// Failed requests by kind (`timeout`, `http_500`, ...).
    pub failures: BTreeMap<String, usize>,
    pub interrupted: bool,
    /// Failures of the warm-up requests (not measured, but a target whose warm-up fails is probably down).
    pub warmup_failures: Vec<String>,
    /// Connections at most in flight because of this process's open-files limit, when it bound the run.
    pub connection_cap: Option<usize>,
    pub wall_s: f64,
}

/// Sends `requests` (warm-up first) to `target`. `tokenizer` counts output tokens when a server reports no usage.
pub fn run(
    target: &Target,
    requests: &[PreparedRequest],
    tokenizer: &Tokenizer,
    options: &LoadOptions,
) -> Result<LoadResult, HttpError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HttpError::Client(e.to_string()))?;
    runtime.block_on(run_async(target, requests, tokenizer, options))
}

/// How long an idle kept-alive connection stays in the pool: well under the 5 s after which uvicorn (vLLM,
/// llama.cpp's Python server) closes one. A connection idle longer is one the server may be closing just as a request
/// goes out on it, which then fails without reaching the server ("error sending request"); a client whose runtime
/// does not run between requests (parity's) never sees the server's FIN, so without this it reused such connections
/// every time a request took the server more than 5 s (seen under load in the test command).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// One HTTP client for a run: connections are kept alive and reused (for at most [`POOL_IDLE_TIMEOUT`] idle), no
/// proxy from the environment (benchmarks of a local server must not go through one), no overall timeout (each
/// request has its own).
pub fn http_client() -> Result<reqwest::Client, HttpError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
        .map_err(|e| HttpError::Client(e.to_string()))
}

struct Sent {
    index: usize,
    server: usize,
    t0: Instant,
    exchange: Exchange,
}

async fn run_async(
    target: &Target,
    requests: &[PreparedRequest],
    tokenizer: &Tokenizer,
    options: &LoadOptions,
) -> Result<LoadResult, HttpError> {
    let client = http_client()?;
    for server in &target.servers {
        check_server(&client, server).await?;
    }
    let urls: Arc<Vec<String>> = Arc::new(target.servers.iter().map(|s| s.url(options.endpoint)).collect());
    let bodies: Vec<Vec<serde_json::Value>> = target
        .servers
        .iter()
        .map(|s| requests.iter().map(|r| with_model(&r.body, &s.served_model)).collect())
        .collect();
    let bodies = Arc::new(bodies);
    let (warmup, measured) = requests.split_at(options.warmup.min(requests.len()));

    // Warm-up: each request to every server, two at a time.
    let mut warmup_failures = Vec::new();
    let gate = Arc::new(Semaphore::new(2));
    let mut set = JoinSet::new();
    for (i, _) in warmup.iter().enumerate() {
        for (s, url) in urls.iter().enumerate() {
            let (client, url, body, gate) = (client.clone(), url.clone(), bodies[s][i].clone(), gate.clone());
            let (endpoint, timeout) = (options.endpoint, options.request_timeout);
            set.spawn(async move {
                let _slot = gate.acquire_owned().await;
                client::stream(&client, &url, &body, endpoint, timeout).await.failure.map(|f| format!("{url}: {f}"))
            });
        }
    }
    while let Some(done) = set.join_next().await {
        if let Some(f) = done.map_err(|e| HttpError::Client(e.to_string()))? {
            warmup_failures.push(f);
        }
    }

    let start = Instant::now();
    let slots = options.max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1))));
    // The client's own limit on connections (file descriptors), when the run would exceed it.
    let connection_cap = open_files_budget().filter(|&cap| cap < options.max_concurrency.unwrap_or(measured.len()));
    let connections = Arc::new(Semaphore::new(connection_cap.unwrap_or(Semaphore::MAX_PERMITS)));
    let in_flight: Arc<Vec<AtomicUsize>> = Arc::new(target.servers.iter().map(|_| AtomicUsize::new(0)).collect());
    let turn = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let mut interrupted = false;
    let offset = warmup.len();
    for (index, r) in measured.iter().enumerate() {
        let at =
            start + Duration::from_secs_f64(if options.mode == Mode::Offline { 0.0 } else { r.arrival_s.max(0.0) });
        // Sleep until the arrival, waking now and then to notice a cancel.
        loop {
            if options.cancel.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let now = Instant::now();
            if now >= at {
                break;
            }
            tokio::time::sleep((at - now).min(Duration::from_millis(50))).await;
        }
        if interrupted {
            break;
        }
        let (client, urls, bodies, slots) = (client.clone(), urls.clone(), bodies.clone(), slots.clone());
        let connections = connections.clone();
        let (in_flight, turn, completed, progress) =
            (in_flight.clone(), turn.clone(), completed.clone(), options.progress.clone());
        let (balance, endpoint, timeout, total) =
            (target.balance, options.endpoint, options.request_timeout, measured.len());
        set.spawn(async move {
            let slot = match slots {
                Some(s) => Some(s.acquire_owned().await.expect("never closed")),
                None => None,
            };
            // Open loop: the scheduled time; gated by the client: when a slot freed.
            let t0 = if slot.is_some() { Instant::now().max(at) } else { at };
            // A connection of this process's (its wait counts from t0, like queueing at the server).
            let _connection = connections.acquire_owned().await.expect("never closed");
            let server = pick(balance, &in_flight, &turn);
            in_flight[server].fetch_add(1, Ordering::Relaxed);
            let exchange =
                client::stream(&client, &urls[server], &bodies[server][offset + index], endpoint, timeout).await;
            in_flight[server].fetch_sub(1, Ordering::Relaxed);
            drop(slot);
            let n = completed.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = progress {
                (p.0)(n, total);
            }
            Sent { index, server, t0, exchange }
        });
    }
    // Wait for what was sent; a cancel aborts what is still in flight (those requests are recorded as unfinished).
    let mut sent: Vec<Sent> = Vec::with_capacity(measured.len());
    loop {
        tokio::select! {
            next = set.join_next() => match next {
                Some(Ok(s)) => sent.push(s),
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => return Err(HttpError::Client(e.to_string())),
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if options.cancel.load(Ordering::Relaxed) && !set.is_empty() {
                    interrupted = true;
                    set.abort_all();
                }
            }
        }
    }
    let wall_s = start.elapsed().as_secs_f64();

    let mut records: Vec<RequestRecord> = measured
        .iter()
        .enumerate()
        .map(|(index, r)| RequestRecord {
            index,
            id: r.id.clone(),
            prompt_tokens: r.prompt_tokens,
            output_tokens: 0,
            cached_tokens: 0,
            preemptions: 0,
            arrival_s: if options.mode == Mode::Offline { 0.0 } else { r.arrival_s },
            token_times_s: Vec::new(),
            finish_reason: if interrupted { "unsent" } else { "unfinished" }.into(),
            output_token_ids: Vec::new(),
            error: None,
            count_source: "",
            server: None,
        })
        .collect();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for s in sent {
        let rec = &mut records[s.index];
        rec.server = Some(target.servers[s.server].label());
        fill_record(rec, s.t0, start, &s.exchange, tokenizer);
        if let Some(f) = &s.exchange.failure {
            *failures.entry(f.kind()).or_default() += 1;
        }
    }
    Ok(LoadResult { records, failures, interrupted, warmup_failures, connection_cap, wall_s })
}

/// Connections this process may hold at once: its soft limit on open files (Linux `/proc/self/limits`) less a
/// reserve for everything else it has open; `None` where the limit cannot be read or is unlimited.
pub fn open_files_budget() -> Option<usize> {
    const RESERVE: usize = 64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    open_files_soft_limit(&limits).map(|soft| soft.saturating_sub(RESERVE).max(1))
}

fn open_files_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// A server that is not there, or does not serve the model, is an error of the target before anything is sent.
async fn check_server(client: &reqwest::Client, server: &super::Server) -> Result<(), HttpError> {
    let err = |message: String| HttpError::Server { url: server.base_url.clone(), message };
    match client::served_models(client, &server.base_url).await {
        Err(f) => Err(err(f.to_string())),
        Ok(Some(models)) if !models.is_empty() && !models.contains(&server.served_model) => {
            Err(err(format!("does not serve model '{}' (it lists {})", server.served_model, models.join(", "))))
        }
        Ok(_) => Ok(()),
    }
}

/// The server of the next request.
fn pick(balance: Balance, in_flight: &[AtomicUsize], turn: &AtomicUsize) -> usize {
    let n = in_flight.len();
    match balance {
        Balance::RoundRobin => turn.fetch_add(1, Ordering::Relaxed) % n,
        Balance::LeastOutstanding => {
            // Ties go round robin, so an idle fleet is not all sent to its first server.
            let first = turn.fetch_add(1, Ordering::Relaxed) % n;
            (0..n).map(|k| (first + k) % n).min_by_key(|&i| in_flight[i].load(Ordering::Relaxed)).unwrap_or(0)
        }
    }
}

/// Timings relative to the run's `start`; token counts from the server's usage, else counted with the tokenizer.
fn fill_record(rec: &mut RequestRecord, t0: Instant, start: Instant, ex: &Exchange, tokenizer: &Tokenizer) {
    let since = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    rec.arrival_s = since(t0);
    rec.token_times_s = ex.chunk_times.iter().map(|&t| since(t)).collect();
    rec.finish_reason = ex.finish_reason.clone().unwrap_or_else(|| "unfinished".into());
    let ids = tokenizer.encode(ex.text.as_str(), false).map(|e| e.get_ids().to_vec()).unwrap_or_default();
    match ex.usage {
        Some(u) => {
            rec.prompt_tokens = u.prompt_tokens;
            rec.output_tokens = u.completion_tokens;
            rec.count_source = "usage";
        }
        None => {
            rec.output_tokens = ids.len();
            rec.count_source = "tokenizer";
        }
    }
    rec.output_token_ids = ids;
    if let Some(f) = &ex.failure {
        rec.error = Some(format!("{}: {f}", f.kind()));
        if matches!(f, Failure::Timeout(_) | Failure::Dropped(_)) && rec.finish_reason == "unfinished" {
            rec.finish_reason = "failed".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancing_round_robin_and_least_outstanding() {
        let in_flight: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let turn = AtomicUsize::new(0);
        let picks: Vec<usize> = (0..6).map(|_| pick(Balance::RoundRobin, &in_flight, &turn)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        in_flight[0].store(5, Ordering::Relaxed);
        in_flight[1].store(1, Ordering::Relaxed);
        in_flight[2].store(2, Ordering::Relaxed);
        assert_eq!(pick(Balance::LeastOutstanding, &in_flight, &turn), 1);
        in_flight[1].store(2, Ordering::Relaxed);
        // Tied at 2: starts from the turn, so the tie does not always go to the same server.
        let tied: Vec<usize> = (0..4).map(|_| pick(Balance::LeastOutstanding, &in_flight, &turn)).collect();
        assert!(tied.contains(&1) && tied.contains(&2) && !tied.contains(&0), "{tied:?}");
    }

    #[test]
    fn the_open_files_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95424                95424                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_soft_limit(text), Some(1024));
        assert_eq!(open_files_soft_limit("Max open files            unlimited            unlimited    files"), None);
        assert_eq!(open_files_soft_limit(""), None);
        #[cfg(target_os = "linux")]
        assert!(open_files_budget().is_some_and(|b| b >= 1));
    }
}
