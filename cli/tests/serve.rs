//! `nano-vllm serve` over HTTP, as a child process: greedy outputs token for token those of the same runtime in
//! process, the API's shapes (completions, chat, streams, usage, logprobs, stop strings), refusals with
//! OpenAI-style errors before anything reaches the engine, 429 when full, a disconnect freeing its KV blocks, the
//! API key, and a clean exit on SIGTERM with the request in flight finished. `n` choices and lists of prompts are
//! tests/serve_choices.rs, the load test tests/serve_load.rs;
//! third-party clients (the openai SDK, vllm bench serve) are in ci/interop.sh.

#[path = "support/http.rs"]
mod http;
#[path = "support/serve_process.rs"]
mod serve_process;

use std::time::Duration;

use futures_util::StreamExt;
use http::{metrics, post, post_raw, rt, stream, token_ids};
use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings};
use serde_json::{Value, json};
use serve_process::{ServeProcess, fixture, sample};

const PROMPTS: [&str; 3] = ["The engine schedules requests", "Once upon a time", "Paged attention keeps"];

#[test]
fn greedy_outputs_are_those_of_the_runtime_in_process() {
    let model = ModelSource::open(fixture("tiny-llama")).unwrap();
    let tokenizer = model.tokenizer().unwrap();
    let info = model.info().clone();
    let mut expected = Vec::new();
    for p in PROMPTS {
        let ids = tokenizer.encode(p, true).unwrap().get_ids().to_vec();
        let config =
            Config::builder().max_model_len(128).num_kv_blocks(16).eos_token_ids(info.eos_token_ids.clone()).build();
        let runtime = registry::build(&"native".parse().unwrap(), &model, &RuntimeSettings::default()).unwrap();
        let mut engine = LlmEngine::new(config.unwrap(), runtime).unwrap();
        let out = engine.generate(vec![ids.clone()], &SamplingParams::greedy(24)).unwrap();
        expected.push((ids, out[0].output_token_ids().to_vec()));
    }

    let server = ServeProcess::start(&["--model", &fixture("tiny-llama"), "--runtime", "native"]);
    rt().block_on(async {
        for (p, (prompt_ids, want)) in PROMPTS.iter().zip(&expected) {
            let body = json!({ "model": "tiny-llama", "prompt": p, "max_tokens": 24, "temperature": 0,
                               "logprobs": 0, "return_tokens_as_token_ids": true });
            let (status, r) = post(&server.base, "/completions", &body).await;
            assert_eq!(status, 200, "{r}");
            let choice = &r["choices"][0];
            assert_eq!(&token_ids(&choice["logprobs"]), want, "prompt {p:?}");
            assert_eq!(choice["text"], tokenizer.decode(want, true).unwrap());
            assert_eq!(r["usage"]["prompt_tokens"], prompt_ids.len());
            assert_eq!(r["usage"]["completion_tokens"], want.len());
            let expected_reason = if want.len() == 24 { "length" } else { "stop" };
            assert_eq!(choice["finish_reason"], expected_reason);

            // The same prompt as token ids, streamed: the same tokens, one chunk per token.
            let body = json!({ "model": "tiny-llama", "prompt": prompt_ids, "max_tokens": 24, "temperature": 0,
                               "logprobs": 0, "return_tokens_as_token_ids": true, "stream": true,
                               "stream_options": { "include_usage": true } });
            let events = stream(&server.base, "/completions", &body).await;
            assert_eq!(events.last().unwrap(), "[DONE]");
            let chunks: Vec<Value> =
                events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
            let usage = chunks.last().unwrap();
            assert_eq!(usage["choices"], json!([]));
            assert_eq!(usage["usage"]["completion_tokens"], want.len());
            let streamed: Vec<u32> =
                chunks[..chunks.len() - 1].iter().flat_map(|c| token_ids(&c["choices"][0]["logprobs"])).collect();
            assert_eq!(&streamed, want);
            let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
            assert_eq!(text, tokenizer.decode(want, true).unwrap());
            assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], expected_reason);
        }
    });
}

#[test]
fn the_api_answers_in_openais_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("chat.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    .unwrap();
    let server = ServeProcess::start(&[
        "--model",
        &fixture("tiny-llama"),
        "--served-model-name",
        "tiny",
        "--chat-template",
        template.to_str().unwrap(),
    ]);
    rt().block_on(async {
        let models: Value = reqwest::get(format!("{}/models", server.base)).await.unwrap().json().await.unwrap();
        assert_eq!(models["data"][0]["id"], "tiny");
        let root = server.base.trim_end_matches("/v1");
        assert_eq!(reqwest::get(format!("{root}/health")).await.unwrap().status().as_u16(), 200);

        // Chat, whole and streamed: the same greedy text; the stream starts with the assistant's role.
        let body = json!({ "model": "tiny", "messages": [{ "role": "user", "content": "Hello there" }],
                           "max_tokens": 12, "temperature": 0, "ignore_eos": true });
        let (status, whole) = post(&server.base, "/chat/completions", &body).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
        assert_eq!(whole["usage"]["completion_tokens"], 12);
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = stream(&server.base, "/chat/completions", &streamed).await;
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
        assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage unless asked");

        // Chat logprobs: the sampled token is the most likely one under greedy.
        let mut lp = body.clone();
        lp["logprobs"] = json!(true);
        lp["top_logprobs"] = json!(2);
        let (_, r) = post(&server.base, "/chat/completions", &lp).await;
        let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
        assert_eq!(content.len(), 12);
        assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(content[0]["top_logprobs"][0]["token"], content[0]["token"]);

        // A stop string cuts the text before it; the finish reason is stop and says which.
        let body = json!({ "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "ignore_eos": true });
        let (_, free) = post(&server.base, "/completions", &body).await;
        let text = free["choices"][0]["text"].as_str().unwrap().to_owned();
        let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
        let stop = text[cut..].chars().take(3).collect::<String>();
        let mut stopped = body.clone();
        stopped["stop"] = json!([stop]);
        let (_, r) = post(&server.base, "/completions", &stopped).await;
        let want = &text[..text.find(&stop).unwrap()];
        assert_eq!(r["choices"][0]["text"], want, "stop {stop:?} in {text:?}");
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
        assert_eq!(r["choices"][0]["stop_reason"], stop);
        stopped["stream"] = json!(true);
        let events = stream(&server.base, "/completions", &stopped).await;
        let streamed: String = events[..events.len() - 1]
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(streamed, want);

        // Seeded sampling is reproducible; min_tokens with ignore_eos off still gives at least that many tokens.
        let seeded = json!({ "prompt": "Once", "max_tokens": 10, "temperature": 0.9, "top_p": 0.9, "top_k": 20,
                             "seed": 11 });
        let (_, a) = post(&server.base, "/completions", &seeded).await;
        let (_, b) = post(&server.base, "/completions", &seeded).await;
        assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
        let body = json!({ "prompt": "Once", "max_tokens": 20, "min_tokens": 20, "temperature": 0 });
        let (_, r) = post(&server.base, "/completions", &body).await;
        assert_eq!(r["usage"]["completion_tokens"], 20);

        let m = metrics(&server.base).await;
        assert!(sample(&m, "vllm:generation_tokens_total") > 100.0);
        assert!(m.contains("vllm:time_to_first_token_seconds_count"));
        assert!(m.contains(r#"model_name="tiny""#));
        assert_eq!(sample(&m, "nano_vllm:kv_blocks_used"), 0.0);
    });
}

#[test]
fn bad_requests_get_openai_errors_and_never_reach_the_engine() {
    let server = ServeProcess::start(&["--model", &fixture("tiny-llama"), "--max-model-len", "64"]);
    rt().block_on(async {
        let b = &server.base;
        let cases: Vec<(u16, Value, &str, &str)> = vec![
            (400, json!({ "prompt": "hi", "max_tokens": "many" }), "max_tokens", "invalid type"),
            (400, json!({ "prompt": "hi", "max_tokens": 100 }), "max_tokens", "maximum context length is 64"),
            (400, json!({ "prompt": "hi", "max_tokens": 0 }), "max_tokens", "at least 1"),
            (400, json!({ "prompt": [1, 2, 999_999], "max_tokens": 4 }), "prompt", "outside the vocabulary"),
            (400, json!({ "prompt": [1, -2], "max_tokens": 4 }), "prompt", "token ids"),
            (400, json!({ "prompt": ["a", 5] }), "prompt", "not a mix"),
            (400, json!({ "prompt": ["a", [1, 2]] }), "prompt", "not a mix"),
            (400, json!({ "prompt": [[1], [1, -2]] }), "prompt[1]", "token ids"),
            (400, json!({ "prompt": ["a", ""] }), "prompt", "prompt 1 is empty"),
            (400, json!({ "prompt": "" }), "prompt", "empty"),
            (400, json!({ "max_tokens": 4 }), "prompt", "required"),
            (400, json!({ "prompt": "hi", "temperature": -1 }), "temperature", "temperature must be in"),
            (400, json!({ "prompt": "hi", "top_p": 0 }), "top_p", "top_p must be in"),
            (400, json!({ "prompt": "hi", "n": 0 }), "n", "at least 1"),
            (400, json!({ "prompt": "hi", "n": 2, "temperature": 0 }), "n", "n must be 1 when using greedy sampling"),
            (400, json!({ "prompt": "hi", "n": 5000 }), "n", "--max-pending"),
            (400, json!({ "prompt": "hi", "n": 2, "best_of": 3 }), "best_of", "not supported"),
            (400, json!({ "prompt": "hi", "presence_penalty": 0.5 }), "presence_penalty", "not supported"),
            (400, json!({ "prompt": "hi", "max_tokens": 4, "min_tokens": 5 }), "min_tokens", "must not exceed"),
            (400, json!({ "prompt": "hi", "logprobs": 50 }), "logprobs", "at most 20"),
            (400, json!({ "prompt": "hi", "stop_token_ids": [999_999] }), "stop_token_ids", "outside the vocabulary"),
            (400, json!({ "prompt": "hi", "stream_options": { "include_usage": true } }), "stream_options", "stream"),
            (404, json!({ "model": "gpt-5", "prompt": "hi" }), "model", "does not exist"),
        ];
        for (status, body, param, message) in &cases {
            let (got, r) = post(b, "/completions", body).await;
            assert_eq!(got, *status, "{body} -> {r}");
            let e = &r["error"];
            assert_eq!(e["code"], *status);
            assert_eq!(e["param"], *param, "{body} -> {r}");
            assert!(e["message"].as_str().unwrap().contains(message), "{body} -> {r}");
            assert!(e["type"].as_str().unwrap().ends_with("Error"));
        }
        let (got, r) = post_raw(b, "/completions", "{\"prompt\": \"hi\",").await;
        assert_eq!(got, 400);
        assert!(r["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{r}");
        // No chat template in this model: chat is refused with a way out.
        let (got, r) =
            post(b, "/chat/completions", &json!({ "messages": [{ "role": "user", "content": "hi" }] })).await;
        assert_eq!(got, 400);
        assert!(r["error"]["message"].as_str().unwrap().contains("--chat-template"), "{r}");
        let m = metrics(b).await;
        assert_eq!(sample(&m, "vllm:prompt_tokens_total"), 0.0, "nothing reached the engine");
        // Every 400 above, the malformed body and the chat request.
        let invalid = cases.iter().filter(|c| c.0 == 400).count() + 2;
        let line =
            format!(r#"nano_vllm:requests_rejected_total{{model_name="tiny-llama",reason="invalid"}} {invalid}"#);
        assert!(m.contains(&line), "{line} not in:\n{m}");
        assert!(m.contains(r#"nano_vllm:requests_rejected_total{model_name="tiny-llama",reason="not_found"} 1"#));
    });

    let keyed = ServeProcess::start(&["--model", &fixture("tiny-llama"), "--api-key", "s3cret"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/completions", keyed.base);
        let body = json!({ "prompt": "hi", "max_tokens": 2 });
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = client.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = client.post(&url).bearer_auth("s3cret").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // Health and metrics stay open (probes and scrapers carry no key).
        let root = keyed.base.trim_end_matches("/v1");
        assert_eq!(reqwest::get(format!("{root}/health")).await.unwrap().status().as_u16(), 200);
    });
}

#[test]
fn a_full_server_answers_429_and_a_client_that_leaves_frees_its_blocks() {
    // A slow model (each step sleeps 20 ms), room for two requests.
    let mut server = ServeProcess::start(&[
        "--model",
        &fixture("tiny-llama"),
        "--runtime",
        "mock:delay-us=20000",
        "--max-pending",
        "2",
    ]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/completions", server.base);
        let long = json!({ "prompt": [5, 6, 7, 8], "max_tokens": 200, "ignore_eos": true, "stream": true });
        let mut a = client.post(&url).json(&long).send().await.unwrap().bytes_stream();
        let mut b = client.post(&url).json(&long).send().await.unwrap().bytes_stream();
        // Both are generating once each has sent a chunk.
        a.next().await.unwrap().unwrap();
        b.next().await.unwrap().unwrap();
        let (status, r) = post(&server.base, "/completions", &json!({ "prompt": "hi", "max_tokens": 2 })).await;
        assert_eq!(status, 429, "{r}");
        assert_eq!(r["error"]["type"], "RateLimitError");
        let m = metrics(&server.base).await;
        assert_eq!(sample(&m, "vllm:num_requests_running"), 2.0);
        assert!(sample(&m, "nano_vllm:kv_blocks_used") > 0.0);
        // Both clients leave mid-stream: their requests are aborted and every block is free again, long before
        // 200 tokens at 20 ms a step would have ended them.
        drop((a, b));
        let start = std::time::Instant::now();
        loop {
            let m = metrics(&server.base).await;
            if sample(&m, "nano_vllm:kv_blocks_used") == 0.0 && sample(&m, "vllm:num_requests_running") == 0.0 {
                assert!(m.contains(r#"vllm:request_success_total{finished_reason="abort",model_name="tiny-llama"} 2"#));
                break;
            }
            // The abort counter, not the clock, shows they were aborted: a busy machine may take its time.
            assert!(start.elapsed() < Duration::from_secs(60), "blocks still held after the clients left:\n{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, _) = post(&server.base, "/completions", &json!({ "prompt": "hi", "max_tokens": 2 })).await;
        assert_eq!(status, 200, "room again once they left");
    });

    // SIGTERM with a request in flight: it finishes, then the server exits 0.
    let body = json!({ "prompt": [5, 6, 7], "max_tokens": 30, "ignore_eos": true });
    let url = format!("{}/completions", server.base);
    let pending = std::thread::spawn(move || {
        rt().block_on(async {
            let r = reqwest::Client::new().post(&url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    });
    // Terminate once the request is in the engine.
    rt().block_on(async {
        let start = std::time::Instant::now();
        while sample(&metrics(&server.base).await, "vllm:num_requests_running") < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(20), "the request never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    server.terminate();
    let (status, r) = pending.join().unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 30);
    assert_eq!(server.wait(Duration::from_secs(20)), Some(0), "{}", server.stderr());
    assert!(server.stderr().contains("shutting down"));
}
