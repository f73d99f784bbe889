//! Conformance where bugs hide: the edge bundles of `fixtures/generate.py` (`EDGE_PRESETS`, built by `ci/setup.sh`
//! into `fixtures/edge-*`, git-ignored), each a tiny random model with one setting the committed fixtures lack. Every
//! runtime of `nano-vllm parity` either passes at the bundle's tolerances (f32, or its lossy setting's) or refuses
//! the bundle with an error naming the field it cannot compute; nothing computes another model silently.
//!
//! - `edge-long`: a 2,200-token prompt (2,216 positions compared, 138 KV blocks of 16), prefilled whole and in
//!   48-token chunks beside other sequences, and recomputed after preemption.
//! - `edge-mistral-window`: Mistral with `sliding_window` 48 under 224-token prompts. llama.cpp reads no window for
//!   the `llama` architecture Mistral GGUFs use: its settings (and `native:q4_k_m`, which runs llama.cpp's Q4_K_M
//!   file) refuse naming `sliding_window`.
//! - `edge-llama3-rope`: Llama-3 RoPE scaling (frequencies kept, smoothed and divided). llama.cpp reads it from the
//!   GGUF's `rope_freqs` tensor, and so does our GGUF loader (`native:q4_k_m` runs llama.cpp's Q4_K_M file).
//! - `edge-qwen2-window`: Qwen2 with `use_sliding_window` and `max_window_layers` 1: layer 0 full attention,
//!   layer 1 a window of 48. llama.cpp refuses as for Mistral.
//! - `edge-gpt2-noscale`: GPT-2 with `scale_attn_weights: false`; a GGUF cannot carry it, so llama.cpp refuses.
//!
//! Ignored by a plain `cargo test` (a fresh checkout has no generated bundle); ci/test.sh runs them with
//! `--ignored`, where a missing bundle is a failure.

use std::path::PathBuf;

use nano_vllm_harness::parity::{BundleParity, Status, ToleranceOverrides, check_bundle};
use nano_vllm_models::registry::RuntimeSettings;

/// What a runtime must do on an edge bundle.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Pass,
    /// Refuse to build, naming this field.
    Refuse(&'static str),
}

fn edge(name: &str) -> BundleParity {
    let dir: PathBuf = nano_vllm_bundle::fixtures_dir().join(name);
    assert!(
        dir.join("manifest.json").is_file(),
        "{} is missing: run `bash ci/setup.sh` (or `.venv/bin/python fixtures/generate.py --preset {name} --out DIR`)",
        dir.display()
    );
    let report = check_bundle(&dir, "all", &RuntimeSettings::default(), &ToleranceOverrides::default());
    assert_eq!(report.error, None, "{name}");
    report
}

/// Checks every runtime of `report` against `expect`, the same-file pairs and the tokenizers; returns the runtimes
/// that ran.
fn judge(report: &BundleParity, expect: impl Fn(&str) -> Expect) -> Vec<String> {
    let mut ran = Vec::new();
    for r in &report.runtimes {
        match expect(&r.runtime) {
            Expect::Pass => {
                assert_eq!(r.status, Status::Pass, "{} on {}: {:?}", r.runtime, report.bundle, r.failures);
                ran.push(r.runtime.clone());
            }
            Expect::Refuse(field) => {
                assert_eq!(r.status, Status::Error, "{} on {} should refuse naming {field}", r.runtime, report.bundle);
                assert!(
                    r.failures.iter().any(|f| f.contains(&format!("`{field}`")) || f.contains(field)),
                    "{} on {}: the refusal does not name {field}: {:?}",
                    r.runtime,
                    report.bundle,
                    r.failures
                );
            }
        }
    }
    for pair in &report.agreement {
        assert_eq!(pair.status, Status::Pass, "{} vs {} on {}: {:?}", pair.a, pair.b, report.bundle, pair.failures);
    }
    for t in &report.tokenizers {
        assert_eq!(t.status, Status::Pass, "{} on {}: {:?}", t.tokenizer, report.bundle, t.failures);
    }
    ran
}

fn llama_cpp_or_its_file(runtime: &str) -> bool {
    runtime.starts_with("llama-cpp") || runtime == "native:q4_k_m"
}

#[test]
#[ignore = "needs the generated fixtures/edge-long (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn long_context_passes_on_every_runtime() {
    let report = edge("edge-long");
    let ran = judge(&report, |_| Expect::Pass);
    assert!(ran.len() >= 4, "{ran:?}");
    for r in report.runtimes.iter().filter(|r| !r.check.starts_with("teacher")) {
        let rows = r.figures.as_ref().map_or(0, |f| f.rows);
        let batched = r.situations.iter().find(|s| s.situation == "batched").expect("the batched situation");
        // Batched, the long prompt's 2,200 tokens arrive in chunks of at most 48 (the situation's step budget).
        assert!(batched.steps >= 2200 / 48, "{}: {} batched steps", r.runtime, batched.steps);
        let preempted = r.situations.iter().find(|s| s.situation == "preempted").expect("the preempted situation");
        assert!(preempted.preemptions > 0, "{}", r.runtime);
        assert!(rows >= 4 * 2216, "{}: {rows} rows compared over the situations", r.runtime);
    }
}

/// Runs `name`: runtimes for which `refuses` names a field refuse naming it, the rest pass, and `must_run` all ran.
fn pass_or_refuse(name: &str, refuses: impl Fn(&str) -> Option<&'static str>, must_run: &[&str]) {
    let report = edge(name);
    let ran = judge(&report, |r| refuses(r).map_or(Expect::Pass, Expect::Refuse));
    for must in must_run {
        assert!(ran.iter().any(|r| r == must), "{must} did not run on {name}: {ran:?}");
    }
}

#[test]
#[ignore = "needs the generated fixtures/edge-mistral-window (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn mistral_sliding_window_passes_or_is_refused_by_name() {
    let refuses = |r: &str| llama_cpp_or_its_file(r).then_some("sliding_window");
    pass_or_refuse("edge-mistral-window", refuses, &["native", "onnx", "candle", "native:q8_0", "native:f16"]);
}

#[test]
#[ignore = "needs the generated fixtures/edge-llama3-rope (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn llama3_rope_scaling_passes_on_every_runtime() {
    let refuses = |_: &str| None;
    let must = ["native", "onnx", "candle", "llama-cpp", "llama-cpp:q8_0", "llama-cpp:defaults", "native:q4_k_m"];
    pass_or_refuse("edge-llama3-rope", refuses, &must);
}

#[test]
#[ignore = "needs the generated fixtures/edge-qwen2-window (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn qwen2_window_from_max_window_layers_passes_or_is_refused_by_name() {
    let refuses = |r: &str| llama_cpp_or_its_file(r).then_some("sliding_window");
    pass_or_refuse("edge-qwen2-window", refuses, &["native", "onnx", "candle", "native:q8_0", "native:bf16"]);
}

#[test]
#[ignore = "needs the generated fixtures/edge-gpt2-noscale (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn gpt2_without_attention_scaling_passes_or_is_refused_by_name() {
    let refuses = |r: &str| llama_cpp_or_its_file(r).then_some("scale_attn_weights");
    pass_or_refuse("edge-gpt2-noscale", refuses, &["native", "onnx", "candle", "native:q4_0"]);
}
