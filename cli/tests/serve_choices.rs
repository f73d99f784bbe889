//! `n` choices and lists of prompts from `nano-vllm serve` over HTTP, answered as vLLM 0.32 answers them: one engine
//! request per choice, choices numbered prompt-major and streamed interleaved, usage counting each prompt once, a
//! seeded choice j equal to a single request seeded seed + j, and vLLM's refusals. ci/clients/same_as_vllm.py sends
//! the same requests to vLLM itself.

#[path = "support/http.rs"]
mod http;
#[path = "support/serve_process.rs"]
mod serve_process;

use std::time::Duration;

use http::{metrics, post, rt, stream};
use serde_json::{Value, json};
use serve_process::{ServeProcess, fixture};

/// A response's choices by index, and the text each streamed (chunks of any choice, in any order).
fn streamed_texts(events: &[String], field: &str) -> (Vec<String>, Vec<usize>, Value) {
    let mut texts: Vec<String> = Vec::new();
    let mut finishes: Vec<usize> = Vec::new();
    let mut usage = Value::Null;
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        if c["choices"] == json!([]) {
            usage = c["usage"].clone();
            continue;
        }
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        if texts.len() <= i {
            texts.resize(i + 1, String::new());
            finishes.resize(i + 1, 0);
        }
        let piece = if field == "text" { &choice["text"] } else { &choice["delta"]["content"] };
        texts[i].push_str(piece.as_str().unwrap_or_default());
        if !choice["finish_reason"].is_null() {
            finishes[i] += 1;
        }
    }
    (texts, finishes, usage)
}

#[test]
fn n_choices_and_lists_of_prompts_answer_as_vllm_does() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("chat.jinja");
    std::fs::write(&template, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>")
        .unwrap();
    let server = ServeProcess::start(&[
        "--model",
        &fixture("tiny-llama"),
        "--chat-template",
        template.to_str().unwrap(),
        "--renderer-num-workers",
        "2",
        "--enable-log-requests",
    ]);
    let prompts = ["Once upon a time", "The engine schedules requests"];
    rt().block_on(async {
        let b = &server.base;
        let one = |prompt: &str, seed: Option<u64>| {
            let mut body = json!({ "prompt": prompt, "max_tokens": 8, "ignore_eos": true, "temperature": 0 });
            if let Some(seed) = seed {
                body["temperature"] = json!(1.0);
                body["seed"] = json!(seed);
            }
            body
        };
        let mut greedy = Vec::new();
        let mut prompt_tokens = 0;
        for p in prompts {
            let (_, r) = post(b, "/completions", &one(p, None)).await;
            greedy.push(r["choices"][0]["text"].as_str().unwrap().to_owned());
            prompt_tokens += r["usage"]["prompt_tokens"].as_u64().unwrap();
        }

        // A list of prompts: one choice each, in order, each prompt's tokens counted once.
        let body = json!({ "prompt": prompts, "max_tokens": 8, "ignore_eos": true, "temperature": 0 });
        let (status, r) = post(b, "/completions", &body).await;
        assert_eq!(status, 200, "{r}");
        let texts: Vec<&str> = r["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
        assert_eq!(texts, [&greedy[0], &greedy[1]]);
        assert_eq!(r["usage"]["prompt_tokens"], prompt_tokens);

        // Two prompts, two seeded choices each: indices prompt-major (prompt x n + j), choice j of each prompt is the
        // single request seeded seed + j, each prompt's tokens counted once.
        let seeded_pair = |p: &str, j: u64| one(p, Some(7 + j));
        let mut want = Vec::new();
        for p in prompts {
            for j in 0..2 {
                let (_, single) = post(b, "/completions", &seeded_pair(p, j)).await;
                want.push(single["choices"][0]["text"].as_str().unwrap().to_owned());
            }
        }
        let body = json!({ "prompt": prompts, "n": 2, "max_tokens": 8, "ignore_eos": true, "temperature": 1.0,
                           "seed": 7 });
        let (status, r) = post(b, "/completions", &body).await;
        assert_eq!(status, 200, "{r}");
        let choices = r["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 4);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["text"], want[i], "choice {i}");
            assert_eq!(c["finish_reason"], "length");
        }
        assert_eq!(r["usage"]["prompt_tokens"], prompt_tokens);
        assert_eq!(r["usage"]["completion_tokens"], 32);

        // Streamed: the same texts, one final chunk per choice, the same usage.
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({ "include_usage": true });
        let events = stream(b, "/completions", &streamed).await;
        let (texts, finishes, usage) = streamed_texts(&events, "text");
        assert_eq!(texts, want);
        assert_eq!(finishes, [1, 1, 1, 1]);
        assert_eq!(usage, r["usage"]);

        // Seeded sampling: choice j is the single request seeded seed + j (vLLM's child requests).
        let body = json!({ "prompt": prompts[0], "n": 3, "max_tokens": 8, "ignore_eos": true, "temperature": 1.0,
                           "seed": 40 });
        let (_, r) = post(b, "/completions", &body).await;
        for j in 0..3u64 {
            let (_, single) = post(b, "/completions", &one(prompts[0], Some(40 + j))).await;
            assert_eq!(r["choices"][j as usize]["text"], single["choices"][0]["text"], "choice {j}");
        }
        let texts: std::collections::BTreeSet<&str> =
            r["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
        assert!(texts.len() > 1, "three seeds, one text: {r}");

        // Chat with n = 2, streamed: a role chunk for each choice, then both texts (seeded: the same as whole).
        let body = json!({ "messages": [{ "role": "user", "content": "Hello" }], "n": 2, "max_tokens": 6,
                           "ignore_eos": true, "temperature": 1.0, "seed": 3 });
        let (_, whole) = post(b, "/chat/completions", &body).await;
        assert_eq!(whole["choices"].as_array().unwrap().len(), 2);
        let whole_texts: Vec<String> = whole["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_owned())
            .collect();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = stream(b, "/chat/completions", &streamed).await;
        let roles: Vec<Value> = events[..2].iter().map(|e| serde_json::from_str::<Value>(e).unwrap()).collect();
        for (i, c) in roles.iter().enumerate() {
            assert_eq!(
                (&c["choices"][0]["index"], &c["choices"][0]["delta"]["role"]),
                (&json!(i), &json!("assistant"))
            );
        }
        let (texts, finishes, _) = streamed_texts(&events, "content");
        assert_eq!(texts, whole_texts);
        assert_eq!(finishes, [1, 1]);

        // Request ids: the client's header, else the body's request_id, else a fresh random one; sent back in the
        // X-Request-Id header and logged.
        let client = reqwest::Client::new();
        let url = format!("{b}/completions");
        let r = client.post(&url).header("X-Request-Id", "trace-7").json(&one("hi", None)).send().await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "trace-7");
        assert_eq!(r.json::<Value>().await.unwrap()["id"], "cmpl-trace-7");
        let mut with_id = one("hi", None);
        with_id["request_id"] = json!("body-id");
        let (_, r) = post(b, "/completions", &with_id).await;
        assert_eq!(r["id"], "cmpl-body-id");
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..2 {
            let r = client.post(&url).json(&one("hi", None)).send().await.unwrap();
            let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            assert_eq!(id, format!("cmpl-{header}"));
            assert!(header.len() == 16 && header.chars().all(|c| c.is_ascii_hexdigit()), "{header}");
            ids.insert(id);
        }
        assert_eq!(ids.len(), 2, "fresh ids differ");
        let r = client.post(&url).header("X-Request-Id", "bad-7").json(&json!({ "prompt": "" })).send().await.unwrap();
        assert_eq!((r.status().as_u16(), &r.headers()["x-request-id"]), (400, &"bad-7".parse().unwrap()));

        // Every choice is an engine request, counted as one when its response is done: 30 in all above.
        let m = metrics(b).await;
        let line = r#"vllm:request_success_total{finished_reason="length",model_name="tiny-llama"} 30"#;
        assert!(m.contains(line), "{line} not in:\n{m}");
    });
    // The log has the request's id as it arrived and as it ended, with the choices' finishes (wait for the lines:
    // stderr is read on a thread of its own).
    let start = std::time::Instant::now();
    while !server.stderr().contains("request cmpl-trace-7: ended") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.stderr();
    assert!(log.contains("request cmpl-trace-7: received, prompt tokens ["), "{log}");
    assert!(log.contains("finish length,length,length,length"), "{log}");
    assert!(log.contains("2 tokenizer worker(s)"), "{log}");
}
