//! Replaying a workload against one runtime through the engine.
//!
//! Offline: every request is added at t = 0 and the engine runs flat out (maximum throughput). Online: the engine
//! steps continuously while requests are released at their arrival times; a request's t0 is its scheduled arrival
//! even when the engine was busy and added it late, so queueing counts in its latency (no coordinated omission).
//! Warm-up requests run first and are not measured. A runtime that fails mid-run ends that run only: the result
//! keeps what completed and carries the error. A cancel flag (Ctrl-C) stops the run the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nano_vllm_engine::{Config, LlmEngine, Runtime, RuntimeInfo, SamplingParams, StepStats};
use serde::Serialize;

use crate::metrics::RequestRecord;

/// A request ready to run: tokens resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRequest {
    pub id: Option<String>,
    pub arrival_s: f64,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Offline,
    Online,
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub mode: Mode,
    /// Requests run (unmeasured) before the measured ones: the first `warmup` of the workload, with their arrivals
    /// ignored.
    pub warmup: usize,
    /// Set from outside (Ctrl-C) to stop the run; what completed is kept.
    pub cancel: Arc<AtomicBool>,
    /// Called after every step with (completed, total), for progress bars.
    pub progress: Option<Progress>,
    /// At most this many measured requests in the engine at once, the next released when one finishes; a request's
    /// t0 is then its release (arrivals gated by the client, as `vllm bench serve --max-concurrency` and the HTTP
    /// targets do), so in-process rows and servers measured with the same cap compare.
    pub max_concurrency: Option<usize>,
}

/// A progress callback: (completed, total).
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// One engine step as reports show it (seconds from the run's start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub t_s: f64,
    pub num_seqs: usize,
    pub num_tokens: usize,
    pub num_prefill_tokens: usize,
    pub kv_blocks_used: usize,
    pub prefix_hit_tokens: usize,
    pub admitted_prompt_tokens: usize,
    pub num_preemptions: usize,
    pub schedule_ms: f64,
    pub runtime_ms: f64,
    pub postprocess_ms: f64,
}

impl StepRecord {
    fn new(s: &StepStats, start: Instant) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Self {
            t_s: s.time.saturating_duration_since(start).as_secs_f64(),
            num_seqs: s.num_seqs,
            num_tokens: s.num_tokens,
            num_prefill_tokens: s.num_prefill_tokens,
            kv_blocks_used: s.kv_blocks_used,
            prefix_hit_tokens: s.prefix_hit_tokens,
            admitted_prompt_tokens: s.admitted_prompt_tokens,
            num_preemptions: s.num_preemptions,
            schedule_ms: ms(s.schedule_time),
            runtime_ms: ms(s.runtime_time),
            postprocess_ms: ms(s.postprocess_time),
        }
    }
}

/// What one runtime did on the workload.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    pub runtime: RuntimeInfo,
    pub num_kv_blocks: usize,
    /// Measured requests, in workload order; unfinished ones (after an error or cancel) have no tokens.
    pub records: Vec<RequestRecord>,
    pub steps: Vec<StepRecord>,
    pub error: Option<String>,
    pub interrupted: bool,
    pub wall_s: f64,
}

/// Replays `requests` against `runtime` with the engine `config`.
pub fn replay(
    runtime: Box<dyn Runtime>,
    config: Config,
    requests: &[ResolvedRequest],
    options: &ReplayOptions,
) -> Result<ReplayResult, nano_vllm_engine::EngineError> {
    let mut engine = LlmEngine::new(config, runtime)?;
    let mut result = ReplayResult {
        runtime: engine.runtime_info().clone(),
        num_kv_blocks: engine.num_kv_blocks(),
        records: Vec::with_capacity(requests.len()),
        steps: Vec::new(),
        error: None,
        interrupted: false,
        wall_s: 0.0,
    };

    // Warm-up, unmeasured.
    for r in requests.iter().take(options.warmup) {
        engine.add_request(r.prompt.clone(), r.params.clone())?;
    }
    while engine.has_unfinished() {
        if let Err(e) = engine.step() {
            result.error = Some(format!("during warm-up: {e}"));
            return Ok(result);
        }
    }

    let measured = &requests[options.warmup.min(requests.len())..];
    let start = Instant::now();
    let at = |s: f64| start + Duration::from_secs_f64(s.max(0.0));
    let arrival = |r: &ResolvedRequest| if options.mode == Mode::Offline { 0.0 } else { r.arrival_s };
    // Engine id -> measured index: a map, as a million-request trace finishes thousands of requests a second.
    let mut ids: std::collections::HashMap<nano_vllm_engine::SeqId, usize> =
        std::collections::HashMap::with_capacity(measured.len());
    let mut next = 0;
    let mut completed = 0;
    result.records = measured
        .iter()
        .enumerate()
        .map(|(index, r)| RequestRecord {
            index,
            id: r.id.clone(),
            prompt_tokens: r.prompt.len(),
            output_tokens: 0,
            cached_tokens: 0,
            preemptions: 0,
            arrival_s: arrival(r),
            token_times_s: Vec::new(),
            finish_reason: "unfinished".into(),
            output_token_ids: Vec::new(),
            error: None,
            count_source: "engine",
            server: None,
        })
        .collect();
    loop {
        if options.cancel.load(Ordering::Relaxed) {
            result.interrupted = true;
            break;
        }
        let now = Instant::now();
        while next < measured.len()
            && at(arrival(&measured[next])) <= now
            && options.max_concurrency.is_none_or(|n| next - completed < n)
        {
            let r = &measured[next];
            let mut t0 = at(arrival(r));
            if options.max_concurrency.is_some() && now > t0 {
                t0 = now;
                result.records[next].arrival_s = now.saturating_duration_since(start).as_secs_f64();
            }
            let id = engine.add_request_at(r.prompt.clone(), r.params.clone(), t0)?;
            ids.insert(id, next);
            next += 1;
        }
        if engine.has_unfinished() {
            let step = match engine.step() {
                Ok(s) => s,
                Err(e) => {
                    result.error = Some(e.to_string());
                    break;
                }
            };
            result.steps.extend(step.stats.as_ref().map(|s| StepRecord::new(s, start)));
            for seq in step.finished {
                let index = ids[&seq.id()];
                let rec = &mut result.records[index];
                rec.output_tokens = seq.num_output_tokens();
                rec.output_token_ids = seq.output_token_ids().to_vec();
                rec.cached_tokens = seq.num_cached_tokens();
                rec.preemptions = seq.num_preemptions();
                rec.token_times_s =
                    seq.timing().token_times.iter().map(|t| t.saturating_duration_since(start).as_secs_f64()).collect();
                rec.finish_reason = seq.finish_reason().map_or("?", |r| r.as_str()).to_owned();
                completed += 1;
            }
            if let Some(p) = &options.progress {
                (p.0)(completed, measured.len());
            }
        } else if next < measured.len() {
            // Idle until the next arrival, waking now and then to notice a cancel.
            let wait = at(arrival(&measured[next])).saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        } else {
            break;
        }
    }
    result.wall_s = start.elapsed().as_secs_f64();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nano_vllm_engine::MockRuntime;

    fn reqs(n: usize, gap_s: f64) -> Vec<ResolvedRequest> {
        (0..n)
            .map(|i| ResolvedRequest {
                id: Some(format!("r{i}")),
                arrival_s: i as f64 * gap_s,
                prompt: vec![(i % 40) as u32 + 2; 8],
                params: SamplingParams { ignore_eos: true, ..SamplingParams::greedy(4) },
            })
            .collect()
    }

    fn options(mode: Mode, warmup: usize) -> ReplayOptions {
        ReplayOptions { mode, warmup, cancel: Arc::default(), progress: None, max_concurrency: None }
    }

    fn config() -> Config {
        Config::builder().max_model_len(64).num_kv_blocks(64).build().unwrap()
    }

    #[test]
    fn offline_runs_everything_from_zero_and_skips_warmup() {
        let r = replay(Box::new(MockRuntime::new(50)), config(), &reqs(10, 1.0), &options(Mode::Offline, 2)).unwrap();
        assert_eq!(r.records.len(), 8);
        assert!(r.records.iter().all(|x| x.arrival_s == 0.0 && x.output_tokens == 4 && x.finish_reason == "length"));
        assert_eq!(r.records[0].id.as_deref(), Some("r2"));
        assert!(r.error.is_none() && !r.interrupted);
        assert!(r.wall_s < 1.0, "offline must not wait for arrivals");
    }

    #[test]
    fn online_releases_requests_at_their_arrival_times() {
        let r = replay(Box::new(MockRuntime::new(50)), config(), &reqs(4, 0.05), &options(Mode::Online, 0)).unwrap();
        for (i, rec) in r.records.iter().enumerate() {
            assert_eq!(rec.arrival_s, i as f64 * 0.05);
            assert!(rec.token_times_s[0] >= rec.arrival_s, "a token before its request arrived");
        }
        assert!(r.wall_s >= 0.15);
        assert!(r.steps.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }

    #[test]
    fn a_concurrency_cap_releases_each_request_when_one_finishes() {
        let options = ReplayOptions { max_concurrency: Some(2), ..options(Mode::Offline, 0) };
        let r = replay(Box::new(MockRuntime::new(50)), config(), &reqs(6, 0.0), &options).unwrap();
        let m = crate::metrics::ServingMetrics::compute(&r.records, &[50.0], &crate::metrics::Slo::default());
        assert_eq!((m.completed, m.max_concurrent_requests), (6, 2));
        let mut by_arrival = r.records.clone();
        by_arrival.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        // Requests 3.. were released at the completion of an earlier one, not at t = 0.
        assert!(by_arrival[2..].iter().all(|x| x.arrival_s > 0.0));
        assert!(r.steps.iter().all(|s| s.num_seqs <= 2));
    }

    #[test]
    fn a_failing_runtime_keeps_what_completed() {
        let runtime = MockRuntime::new(50).fail_at_step(6);
        let reqs = reqs(6, 0.0);
        let config = Config::builder().max_model_len(64).num_kv_blocks(64).max_num_seqs(1).build().unwrap();
        let r = replay(Box::new(runtime), config, &reqs, &options(Mode::Offline, 0)).unwrap();
        assert_eq!(r.error.as_deref(), Some("runtime 'mock' failed: injected failure at step 6"));
        let done = r.records.iter().filter(|x| x.output_tokens > 0).count();
        assert!((1..6).contains(&done), "{done}");
        assert!(r.records.iter().any(|x| x.finish_reason == "unfinished"));
    }

    #[test]
    fn cancel_stops_the_run() {
        let o = options(Mode::Online, 0);
        o.cancel.store(true, Ordering::Relaxed);
        let r = replay(Box::new(MockRuntime::new(50)), config(), &reqs(3, 10.0), &o).unwrap();
        assert!(r.interrupted && r.wall_s < 1.0);
    }
}
