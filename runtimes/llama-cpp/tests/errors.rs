//! Error paths: every bad input is a typed error naming what it is about, never a panic.

mod common;

use common::{Part, step};
use nano_vllm_bundle::{Bundle, open_fixture};
use nano_vllm_engine::{BatchError, Runtime};
use nano_vllm_llama_cpp::{LlamaCppError, LlamaCppOptions, LlamaCppRuntime, LoadError, StepError};

fn load_err(path: &std::path::Path) -> LlamaCppError {
    LlamaCppRuntime::load(path, &LlamaCppOptions::parity()).unwrap_err()
}

#[test]
fn a_missing_gguf_file_is_named() {
    let path = std::path::Path::new("/nonexistent/model.f32.gguf");
    let err = load_err(path);
    assert_eq!(err, LlamaCppError::Load(LoadError::NotFound { path: path.to_path_buf() }));
    assert_eq!(err.to_string(), "GGUF file /nonexistent/model.f32.gguf not found");
}

#[test]
fn a_file_that_is_not_gguf_is_named_with_its_magic() {
    let onnx = open_fixture("tiny-llama").unwrap().onnx();
    let err = load_err(&onnx);
    assert!(matches!(&err, LlamaCppError::Load(LoadError::NotGguf { path, .. }) if *path == onnx), "{err:?}");
    assert!(err.to_string().contains("model.onnx is not a GGUF file: it starts with"), "{err}");
}

#[test]
fn a_truncated_gguf_is_refused_with_what_llama_cpp_said() {
    let src = std::fs::read(open_fixture("tiny-llama").unwrap().gguf_f32()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    std::fs::write(&path, &src[..src.len() / 2]).unwrap();
    let err = load_err(&path);
    let LlamaCppError::Load(LoadError::Model { path: p, llama_log }) = &err else { panic!("{err:?}") };
    assert_eq!(p, &path);
    assert!(!llama_log.is_empty(), "{err}");
    println!("{err}");
    assert!(err.to_string().starts_with(&format!("llama.cpp cannot load GGUF file {}", path.display())), "{err}");
}

#[test]
fn a_gguf_with_a_corrupt_body_is_refused() {
    let mut bytes = std::fs::read(open_fixture("tiny-llama").unwrap().gguf_f32()).unwrap();
    // Keep the magic and version, overwrite the tensor and metadata counts and what follows.
    for b in &mut bytes[8..64] {
        *b = 0xff;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path);
    assert!(matches!(&err, LlamaCppError::Load(LoadError::Model { path: p, .. }) if *p == path), "{err:?}");
}

#[test]
fn a_gguf_that_does_not_match_its_bundle_is_refused() {
    // A copy of tiny-llama whose f32 GGUF is tiny-gpt2's (same vocabulary and layers, 4 KV heads instead of 2).
    let llama = open_fixture("tiny-llama").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(llama.dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::copy(open_fixture("tiny-gpt2").unwrap().gguf_f32(), dir.path().join("model.f32.gguf")).unwrap();
    let bundle = Bundle::open(dir.path()).unwrap();
    let err = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity()).unwrap_err();
    assert!(matches!(err, LlamaCppError::Load(LoadError::BundleMismatch { .. })), "{err:?}");
    assert!(err.to_string().contains("(512, 2, 4) in the GGUF but (512, 2, 2) in the bundle's manifest"), "{err}");
}

#[test]
fn impossible_options_are_refused_before_loading() {
    let bundle = open_fixture("tiny-llama").unwrap();
    for (options, expected) in [
        (LlamaCppOptions { n_seq_max: 0, ..LlamaCppOptions::parity() }, "n_seq_max must be in 1..=256"),
        (LlamaCppOptions { n_seq_max: 257, ..LlamaCppOptions::parity() }, "got 257"),
        (LlamaCppOptions { n_batch: 0, ..LlamaCppOptions::parity() }, "n_batch must be"),
        (LlamaCppOptions { ctx_per_seq: Some(0), ..LlamaCppOptions::parity() }, "ctx_per_seq must be at least 1"),
    ] {
        let err = LlamaCppRuntime::from_bundle(&bundle, &options).unwrap_err();
        assert!(matches!(err, LlamaCppError::Load(LoadError::Options(_))), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

fn tiny(options: LlamaCppOptions) -> LlamaCppRuntime {
    LlamaCppRuntime::from_bundle(&open_fixture("tiny-llama").unwrap(), &options).unwrap()
}

#[test]
fn a_token_outside_the_vocabulary_is_an_error_and_leaves_the_cache_alone() {
    let mut rt = tiny(LlamaCppOptions::parity());
    rt.step(&step(&[Part::new(0, &[5, 6, 7], 0)])).unwrap();
    let err = rt.step(&step(&[Part::new(0, &[512], 3), Part::new(1, &[4], 0)])).unwrap_err();
    assert_eq!(
        err,
        LlamaCppError::Step(StepError::Invalid(BatchError::TokenOutOfRange { seq_id: 0, token: 512, vocab_size: 512 }))
    );
    assert_eq!((rt.held_tokens(0), rt.num_held_sequences()), (3, 1));
    // The sequence goes on as if the bad step had not happened.
    rt.step(&step(&[Part::new(0, &[8], 3)])).unwrap();
    assert_eq!(rt.held_tokens(0), 4);
    // The engine refuses such a request up front, from the runtime's vocabulary size.
    assert_eq!(rt.capabilities().vocab_size, Some(512));
}

#[test]
fn step_errors_name_the_sequence_and_the_limit() {
    let mut rt = tiny(LlamaCppOptions { n_seq_max: 2, n_batch: 8, ctx_per_seq: Some(32), ..LlamaCppOptions::parity() });
    // llama.cpp rounds each sequence's cells up to a multiple of 256.
    assert_eq!(rt.cells_per_sequence(), 256);
    let err = |rt: &mut LlamaCppRuntime, parts: &[Part<'_>]| match rt.step(&step(parts)).unwrap_err() {
        LlamaCppError::Step(e) => e,
        other => panic!("{other:?}"),
    };
    // More tokens than n_batch.
    assert_eq!(err(&mut rt, &[Part::new(0, &[1; 9], 0)]), StepError::TooManyTokens { tokens: 9, n_batch: 8 });
    // More cells than a sequence holds.
    let full = err(&mut rt, &[Part::new(0, &[1; 3], 254)]);
    assert_eq!(full, StepError::ContextFull { seq_id: 0, needed: 257, per_seq: 256 });
    // Computed tokens the runtime does not hold.
    assert_eq!(err(&mut rt, &[Part::new(0, &[1], 5)]), StepError::KvMismatch { seq_id: 0, expected: 5, held: 0 });
    // A prefix hit nobody holds.
    let hit = Part { cached: 16, ..Part::new(3, &[1], 16) };
    assert_eq!(err(&mut rt, &[hit]), StepError::NoPrefixHolder { seq_id: 3, cached_tokens: 16, block_index: 0 });
    // More sequences than llama.cpp sequence ids.
    rt.step(&step(&[Part::new(0, &[1], 0), Part::new(1, &[2], 0)])).unwrap();
    assert_eq!(err(&mut rt, &[Part::new(2, &[3], 0)]), StepError::NoFreeSequence { seq_id: 2, n_seq_max: 2 });
    // Once one is released its id is free again.
    rt.release(0);
    rt.step(&step(&[Part::new(2, &[3], 0)])).unwrap();
    // An empty step does nothing.
    assert_eq!(rt.step(&step(&[])).unwrap().num_rows(), 0);
    // Positions that are not the next ones, and a sequence twice.
    let mut b = step(&[Part::new(2, &[4], 1)]);
    b.positions[0] = 7;
    let misplaced = rt.step(&b).unwrap_err().to_string();
    assert_eq!(misplaced, "step batch: sequence 2: token 0 is at position 7, expected 1 (computed tokens + index)");
    let twice = err(&mut rt, &[Part::new(1, &[4], 1), Part::new(1, &[4], 1)]);
    assert_eq!(twice, StepError::Invalid(BatchError::Duplicate { seq_id: 1 }));
}
