//! Requests to a running `nano-vllm serve` as a client sends them, for the tests that start one.

#![allow(dead_code)]

use serde_json::Value;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn post_raw(base: &str, path: &str, body: &'static str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `data:` payloads of a streamed response, `[DONE]` included.
pub async fn stream(base: &str, path: &str, body: &Value) -> Vec<String> {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

pub async fn metrics(base: &str) -> String {
    let root = base.trim_end_matches("/v1");
    reqwest::get(format!("{root}/metrics")).await.unwrap().text().await.unwrap()
}

pub fn token_ids(logprobs: &Value) -> Vec<u32> {
    logprobs["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().strip_prefix("token_id:").unwrap().parse().unwrap())
        .collect()
}
