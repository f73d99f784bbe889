use super::resolve::params_key;
use super::*;
use crate::workload::Workload;
use nano_vllm_engine::SamplingParams;

#[test]
fn the_workload_hash_of_unset_new_parameters_is_the_one_baselines_recorded() {
    let p = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(16) };
    assert_eq!(
        params_key(&p),
        "SamplingParams { temperature: 0.0, top_k: None, top_p: 1.0, max_tokens: 16, ignore_eos: true, \
         stop_token_ids: [], seed: None, logits: None }"
    );
    let with = SamplingParams { min_tokens: 4, logprobs: Some(2), ..p };
    assert!(params_key(&with).ends_with("seed: None, min_tokens: 4, logprobs: 2, logits: None }"));
}
use crate::workload::TraceRequest;

fn settings(runtimes: &[&str], repeat: usize) -> BenchSettings {
    BenchSettings {
        runtimes: runtimes.iter().map(|s| RuntimeSpec::parse(s).unwrap()).collect(),
        runtime: RuntimeSettings::default(),
        engine: Config::builder().max_model_len(256).num_kv_blocks(64).build().unwrap(),
        mode: Mode::Offline,
        warmup: 1,
        repeat,
        percentiles: vec![50.0, 99.0],
        slo: Slo::default(),
        targets: Vec::new(),
        http: HttpSettings::default(),
    }
}

fn workload(n: usize) -> BenchWorkload {
    let requests = (0..n)
        .map(|i| TraceRequest::ids(0.0, vec![(i % 50) as u32 + 2; 8], 4))
        .map(|r| ResolvedRequest { id: None, arrival_s: 0.0, prompt: vec![5; 8], params: r.sampling_params() })
        .collect();
    BenchWorkload { source: "test".into(), requests, seed: Some(0), rate: None, burstiness: None }
}

#[derive(Default)]
struct Seen(Vec<String>);
impl BenchEvents for Seen {
    fn finished(&mut self, label: &str, result: &RuntimeResult) {
        self.0.push(format!("{label}: {}", result.status));
    }
}

#[test]
fn runtimes_run_in_rounds_and_a_failing_one_does_not_stop_the_others() {
    let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
    let mut seen = Seen::default();
    let cancel = Arc::new(AtomicBool::new(false));
    // tiny-llama ships no GGUF: candle:shipped does not build.
    let s = settings(&["mock", "mock:fail-at=2", "candle:shipped"], 2);
    let (results, records) = run(&bundle, &workload(6), &s, &cancel, &mut seen).unwrap();
    // The failing mock and the runtime that does not build stop after their first round; the good one runs twice.
    assert_eq!(seen.0, ["mock 1/2: ok", "mock:fail-at=2 1/2: failed", "candle:shipped 1/2: failed", "mock 2/2: ok"]);
    let statuses: Vec<(&str, &str)> = results.runs.iter().map(|r| (r.runtime.as_str(), r.status.as_str())).collect();
    assert_eq!(statuses, [("mock", "ok"), ("mock:fail-at=2", "failed"), ("candle:shipped", "failed")]);
    assert_eq!(results.runs[0].repeats.len(), 2);
    assert!(results.runs[2].error.as_deref().unwrap().contains("needs a shipped GGUF file"));
    assert_eq!(results.metadata.workload.num_requests, 5);
    assert!(results.metadata.cpu.as_ref().is_some_and(|c| c.cores >= 1));
    // Per-request records of every runtime that replayed (the failing mock's completed requests are kept).
    let recorded: Vec<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(recorded, ["mock", "mock:fail-at=2"]);
    // A warm-up that leaves nothing to measure is refused up front.
    let err = run(&bundle, &workload(1), &s, &cancel, &mut ()).unwrap_err();
    assert_eq!(err.to_string(), "--warmup 1 leaves no measured request of 1");
}

#[test]
fn a_cancelled_run_measures_nothing_more() {
    let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
    let cancel = Arc::new(AtomicBool::new(true));
    let (results, _) = run(&bundle, &workload(4), &settings(&["mock"], 3), &cancel, &mut ()).unwrap();
    assert!(results.runs.is_empty());
}

#[test]
fn requests_are_checked_against_the_model() {
    let tok = Tokenizer::from_file(nano_vllm_bundle::fixtures_dir().join("tiny-llama/tokenizer.json")).unwrap();
    let w = |r: TraceRequest| Workload::new(vec![r]);
    let tok = Some(&tok);
    let err = resolve(&w(TraceRequest::ids(0.0, vec![600], 4)), tok, 512, 256).unwrap_err();
    assert_eq!(err.to_string(), "request #0: token id 600 is outside the vocabulary (512)");
    let err = resolve(&w(TraceRequest::ids(0.0, vec![5; 250], 8)), tok, 512, 256).unwrap_err();
    assert_eq!(err.to_string(), "request #0: prompt (250 tokens) + max_tokens (8) exceeds the model's context (256)");
    let err = resolve(&w(TraceRequest::ids(0.0, vec![], 8)), tok, 512, 256).unwrap_err();
    assert_eq!(err.to_string(), "request #0: the prompt is empty");
    assert_eq!(resolve(&w(TraceRequest::ids(0.5, vec![5, 6], 8)), tok, 512, 256).unwrap()[0].prompt, [5, 6]);
}
