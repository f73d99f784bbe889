//! The engine on its own thread. It owns every sequence; handlers reach it only through a bounded channel of
//! submissions, and each request gets its events (tokens, then the finish) on a channel of its own. A request whose
//! receiver is gone (the client disconnected, or a stop string ended it) is aborted before the next step, so its
//! KV blocks are freed at once. The number of requests in the server (waiting, running, or being answered) is
//! capped: past the cap a submission is refused at once (HTTP 429), never queued without bound.
//!
//! Metrics are brought up to date before a step's events are sent, so a client that has just received a token reads
//! gauges of that step or later, never of the one before. How each request ended (`request_success`, the e2e latency)
//! is counted by its handler, which alone knows whether a stop string ended it (see `handlers::Started`). The thread
//! marks the engine dead when it ends, however it ends (a runtime error, shutdown, or a panic), so `/health` answers
//! 503 from then on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use nano_vllm_engine::{AddRequestError, FinishReason, LlmEngine, SamplingParams, SeqId, TokenLogprobs};
use tokio::sync::mpsc;

use super::metrics::ServerMetrics;

/// What a request hears from the engine.
#[derive(Debug)]
pub enum Event {
    Token {
        token: u32,
        logprobs: Option<TokenLogprobs>,
    },
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        cached_tokens: usize,
    },
    /// The engine refused the request (a limit the handler could not check, e.g. the KV cache's size).
    Refused(AddRequestError),
    /// The engine failed; the server can serve nothing more.
    Failed(String),
}

/// A request for the engine.
#[derive(Debug)]
pub struct Submission {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub arrival: Instant,
    pub events: mpsc::UnboundedSender<Event>,
}

/// Why a submission did not reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// `max_pending` requests are in the server already.
    QueueFull { max_pending: usize },
    /// The engine has stopped (a runtime failure, or shutdown).
    Unavailable,
}

/// The handlers' side of the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Submission>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    alive: Arc<AtomicBool>,
}

/// A place among the server's requests; dropping it (when the response is done, or its client gone) frees it.
#[derive(Debug)]
pub struct Permit {
    pending: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EngineHandle {
    /// Most engine requests in the server at once (`--max-pending`).
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Whether the engine can still serve.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Hands a request to the engine; its events arrive on the receiver, which the request holds with the permit.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
        arrival: Instant,
    ) -> Result<(mpsc::UnboundedReceiver<Event>, Permit), SubmitError> {
        if !self.is_alive() {
            return Err(SubmitError::Unavailable);
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::QueueFull { max_pending: self.max_pending });
        }
        let permit = Permit { pending: self.pending.clone() };
        let (events, rx) = mpsc::unbounded_channel();
        self.tx.try_send(Submission { prompt, params, arrival, events }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull { max_pending: self.max_pending },
            mpsc::error::TrySendError::Closed(_) => SubmitError::Unavailable,
        })?;
        Ok((rx, permit))
    }
}

/// Starts the engine thread. It ends when every handle is dropped and its requests are done, or, with `cancel` set,
/// at once (its requests aborted).
pub fn spawn(
    engine: LlmEngine,
    metrics: ServerMetrics,
    max_pending: usize,
    cancel: Arc<AtomicBool>,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(max_pending.max(1));
    let alive = Arc::new(AtomicBool::new(true));
    let handle = EngineHandle { tx, pending: Arc::default(), max_pending, alive: alive.clone() };
    let thread = std::thread::Builder::new()
        .name("nano-vllm-engine".into())
        .spawn(move || EngineLoop { alive: MarkDead(alive), engine, metrics, live: HashMap::new(), cancel }.run(rx))?;
    Ok((handle, thread))
}

/// Marks the engine dead when dropped: at the end of the engine thread, a panic's unwinding included. The first field
/// of [`EngineLoop`], so it is dropped before the requests' channels: a client that sees its stream end early finds
/// `/health` already at 503.
struct MarkDead(Arc<AtomicBool>);

impl Drop for MarkDead {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A request the engine is serving.
#[derive(Debug)]
struct Live {
    events: mpsc::UnboundedSender<Event>,
    arrival: Instant,
    last_token: Option<Instant>,
}

struct EngineLoop {
    /// Dropped first (fields drop in order).
    #[allow(dead_code)]
    alive: MarkDead,
    engine: LlmEngine,
    metrics: ServerMetrics,
    live: HashMap<SeqId, Live>,
    cancel: Arc<AtomicBool>,
}

impl EngineLoop {
    fn run(mut self, mut rx: mpsc::Receiver<Submission>) {
        self.metrics.set_kv(0, self.engine.num_kv_blocks());
        loop {
            if self.cancel.load(Ordering::Acquire) {
                self.abort_all();
                break;
            }
            if !self.engine.has_unfinished() {
                // Idle: sleep until a submission comes (or every handle is gone, which ends the thread).
                match rx.blocking_recv() {
                    Some(s) => self.admit(s),
                    None => break,
                }
            }
            while let Ok(s) = rx.try_recv() {
                self.admit(s);
            }
            self.abort_abandoned();
            if !self.engine.has_unfinished() {
                self.update_gauges();
                continue;
            }
            match self.engine.step() {
                Ok(step) => self.deliver(step),
                Err(e) => {
                    let message = e.to_string();
                    for (_, live) in self.live.drain() {
                        let _ = live.events.send(Event::Failed(message.clone()));
                    }
                    // Answer whatever is still queued, then stop: after a runtime error the engine must go.
                    rx.close();
                    while let Ok(s) = rx.try_recv() {
                        let _ = s.events.send(Event::Failed(message.clone()));
                    }
                    break;
                }
            }
        }
    }

    fn admit(&mut self, s: Submission) {
        if s.events.is_closed() {
            return;
        }
        let prompt_tokens = s.prompt.len() as u64;
        match self.engine.add_request_at(s.prompt, s.params, s.arrival) {
            Ok(id) => {
                self.metrics.prompt_tokens.inc_by(prompt_tokens);
                self.live.insert(id, Live { events: s.events, arrival: s.arrival, last_token: None });
            }
            Err(e) => {
                let _ = s.events.send(Event::Refused(e));
            }
        }
    }

    /// Aborts the requests nobody listens to any more (a client gone, or a stop string that ended it): their blocks
    /// are freed now, not when they would have ended. Their handlers counted how they ended.
    fn abort_abandoned(&mut self) {
        let gone: Vec<SeqId> = self.live.iter().filter(|(_, l)| l.events.is_closed()).map(|(&id, _)| id).collect();
        for id in gone {
            self.live.remove(&id);
            let _ = self.engine.abort(id);
        }
    }

    fn abort_all(&mut self) {
        for (id, live) in std::mem::take(&mut self.live) {
            let _ = self.engine.abort(id);
            let _ = live.events.send(Event::Failed("the server is shutting down".into()));
        }
        self.update_gauges();
    }

    /// Records the step in the metrics, then sends its events (so a client never reads gauges older than its token).
    fn deliver(&mut self, step: nano_vllm_engine::StepResult) {
        let now = step.stats.as_ref().map_or_else(Instant::now, |s| s.time);
        self.metrics.generation_tokens.inc_by(step.new_tokens.len() as u64);
        if let Some(s) = &step.stats {
            self.metrics.prefix_cache_queries.inc_by(s.admitted_prompt_tokens as u64);
            self.metrics.prefix_cache_hits.inc_by(s.prefix_hit_tokens as u64);
            self.metrics.preemptions.inc_by(s.num_preemptions as u64);
        }
        for (id, _) in &step.new_tokens {
            let Some(live) = self.live.get_mut(id) else { continue };
            match live.last_token {
                None => self.metrics.ttft.observe(now.saturating_duration_since(live.arrival).as_secs_f64()),
                Some(last) => self.metrics.itl.observe(now.saturating_duration_since(last).as_secs_f64()),
            }
            live.last_token = Some(now);
        }
        self.update_gauges();

        let mut logprobs: HashMap<SeqId, TokenLogprobs> = step.logprobs.into_iter().collect();
        for (id, token) in step.new_tokens {
            if let Some(live) = self.live.get(&id) {
                let _ = live.events.send(Event::Token { token, logprobs: logprobs.remove(&id) });
            }
        }
        for seq in step.finished {
            let Some(live) = self.live.remove(&seq.id()) else { continue };
            let _ = live.events.send(Event::Finished {
                reason: seq.finish_reason().unwrap_or(FinishReason::Length),
                prompt_tokens: seq.num_prompt_tokens(),
                cached_tokens: seq.num_cached_tokens(),
            });
        }
    }

    fn update_gauges(&self) {
        let scheduler = self.engine.scheduler();
        self.metrics.requests_running.set(scheduler.running().len() as i64);
        self.metrics.requests_waiting.set(scheduler.waiting().len() as i64);
        let bm = scheduler.block_manager();
        self.metrics.set_kv(bm.num_used_blocks(), bm.num_blocks());
    }
}
