//! A bounded loopback load test of `nano-vllm serve` (native runtime, tiny-llama): 1,200 requests from 64 concurrent
//! clients, streamed and whole, completions and prompts as ids; one in ten clients leaves mid-stream and one in ten
//! sends a malformed body. Every well-formed request is answered in full (its usage says the tokens it asked for)
//! or refused cleanly, every malformed one gets a 400 with an error body, the server never panics, every KV block is
//! free at the end (read from /metrics) and SIGTERM ends it with status 0.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use serve_process::{ServeProcess, fixture, sample};

const REQUESTS: usize = 1200;
const CLIENTS: usize = 64;

#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    refused: AtomicUsize,
    malformed_refused: AtomicUsize,
    left: AtomicUsize,
    wrong: AtomicUsize,
}

const MALFORMED: [&str; 6] = [
    "{\"prompt\": \"hi\", \"max_tokens\": ",
    "not json at all",
    "{\"prompt\": {\"text\": 1}, \"max_tokens\": 4}",
    "{\"prompt\": [1, 2, 3], \"max_tokens\": -4}",
    "{\"prompt\": [1, 2, 4294967296], \"max_tokens\": 4}",
    "[1, 2, 3]",
];

async fn one(client: &reqwest::Client, url: &str, i: usize, tally: &Tally) -> Result<(), String> {
    let max_tokens = 4 + i % 13;
    let prompt: Value = if i.is_multiple_of(3) {
        json!((0..(8 + i % 40)).map(|k| ((k * 7 + i) % 250 + 3) as u32).collect::<Vec<_>>())
    } else {
        json!(format!("Request {i}: the engine schedules requests and pages the cache"))
    };
    match i % 10 {
        // Malformed: never reaches the engine.
        5 => {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(MALFORMED[i / 10 % MALFORMED.len()])
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.map_err(|e| format!("malformed {i}: no JSON error body: {e}"))?;
            if status != 400 || body["error"]["code"] != 400 {
                return Err(format!("malformed {i}: {status} {body}"));
            }
            tally.malformed_refused.fetch_add(1, Ordering::Relaxed);
        }
        // Leaves after the first chunk or two.
        0 => {
            let body = json!({ "prompt": prompt, "max_tokens": 200, "ignore_eos": true, "stream": true });
            let r = client.post(url).json(&body).send().await.map_err(|e| e.to_string())?;
            if r.status().as_u16() == 429 {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let mut s = r.bytes_stream();
            for _ in 0..(1 + i % 2) {
                s.next().await;
            }
            drop(s);
            tally.left.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            let stream = i.is_multiple_of(2);
            let body = json!({ "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": true, "temperature": 0,
                               "stream": stream, "stream_options": if stream { json!({ "include_usage": true }) } else { Value::Null } });
            let r = client.post(url).json(&body).send().await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            if status == 429 {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let text = r.text().await.map_err(|e| format!("request {i}: body cut: {e}"))?;
            let usage = if stream {
                let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if events.last() != Some(&"[DONE]") {
                    return Err(format!("request {i}: stream did not end with [DONE]: {text}"));
                }
                let last: Value = serde_json::from_str(events[events.len() - 2]).map_err(|e| e.to_string())?;
                last["usage"].clone()
            } else {
                let v: Value = serde_json::from_str(&text).map_err(|e| format!("request {i}: {e}: {text}"))?;
                v["usage"].clone()
            };
            if status != 200 || usage["completion_tokens"] != max_tokens {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
                return Err(format!("request {i}: {status}, usage {usage}: {text}"));
            }
            tally.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[test]
fn a_thousand_requests_with_leavers_and_garbage_leave_the_server_clean() {
    let mut server =
        ServeProcess::start(&["--model", &fixture("tiny-llama"), "--runtime", "native", "--max-num-seqs", "32"]);
    let url = format!("{}/completions", server.base);
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let errors: Vec<String> = rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, url, tally, next) = (client.clone(), url.clone(), tally.clone(), next.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= REQUESTS {
                            return errors;
                        }
                        if let Err(e) = one(&client, &url, i, &tally).await {
                            errors.push(e);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = start.elapsed();
    let (answered, refused, malformed, left) = (
        tally.answered.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.malformed_refused.load(Ordering::Relaxed),
        tally.left.load(Ordering::Relaxed),
    );
    eprintln!(
        "{REQUESTS} requests from {CLIENTS} clients in {:.1} s: {answered} answered, {refused} refused (429), \
         {malformed} malformed refused (400), {left} left mid-stream",
        elapsed.as_secs_f64()
    );
    assert!(errors.is_empty(), "{} failures, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert_eq!(answered + refused + malformed + left, REQUESTS);
    assert_eq!(malformed, REQUESTS / 10);
    assert!(answered >= REQUESTS * 7 / 10, "{answered} answered");

    // Every block free, nothing running or waiting, once the leavers' requests are aborted.
    let metrics_url = format!("{}/metrics", server.base.trim_end_matches("/v1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = rt.block_on(async { reqwest::get(&metrics_url).await.unwrap().text().await.unwrap() });
        let idle = sample(&m, "nano_vllm:kv_blocks_used") == 0.0
            && sample(&m, "vllm:num_requests_running") == 0.0
            && sample(&m, "vllm:num_requests_waiting") == 0.0;
        if idle {
            break m;
        }
        assert!(Instant::now() < deadline, "the server did not go idle:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(sample(&m, "vllm:kv_cache_usage_perc"), 0.0);
    assert!(sample(&m, "vllm:generation_tokens_total") >= (answered * 4) as f64);
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0), "{}", server.stderr());
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "the server panicked:\n{stderr}");
}
