//! The tokenizer built from a real GGUF's own vocabulary, checked three ways on the same texts
//! (fixtures/golden/tokenizer-NAME.json, made by fixtures/golden/make_gguf_tokenizer.py): the ids and decoded text of
//! transformers' tokenizer loaded from the same file, llama.cpp's own tokenizer (`llama_tokenize` through the
//! llama-cpp runtime) of that file, and decode(encode(x)) = x. Gemma 3's SentencePiece vocabulary (262,144 tokens,
//! scores, byte fallback, user-defined whitespace runs) and SmolLM2's byte-level BPE.
//!
//! The GGUFs are the pinned files `ci/setup.sh` installs; the test command runs these with `--ignored`.

use std::path::{Path, PathBuf};

use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::runtime_tokenizer;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

struct Case {
    name: String,
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

/// The golden cases, after checking that `gguf` is the file they were made from.
fn golden(name: &str, gguf: &Path) -> Vec<Case> {
    let path = fixtures().join(format!("golden/tokenizer-{name}.json"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sha = hex::encode(Sha256::digest(std::fs::read(gguf).unwrap()));
    assert_eq!(
        sha,
        doc["sha256"].as_str().unwrap(),
        "{} is not the file the golden ids were made from",
        gguf.display()
    );
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["text"].as_str().unwrap().to_owned(),
            ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            decoded: c["decoded"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn three_ways(name: &str, gguf: &Path) {
    let cases = golden(name, gguf);
    assert!(cases.len() >= 25, "{name}: {} cases", cases.len());
    let model = ModelSource::open(gguf).unwrap();
    let ours = model.tokenizer().unwrap();
    let (label, llama) =
        runtime_tokenizer(&"llama-cpp".parse().unwrap(), &model).expect("llama-cpp is a default feature");
    let llama = llama.unwrap_or_else(|e| panic!("{label}: {e}"));
    for case in &cases {
        let ids = ours.encode(case.text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(ids, case.ids, "{name} {}: ours vs transformers", case.name);
        assert_eq!(ours.decode(&ids, false).unwrap(), case.decoded, "{name} {}: decoded", case.name);
        assert_eq!(case.decoded, case.text, "{name} {}: decode(encode(x)) = x", case.name);
        assert_eq!(llama.tokenize(&case.text, true).unwrap(), ids, "{name} {}: ours vs {label}", case.name);
        assert_eq!(llama.detokenize(&ids).unwrap(), case.text, "{name} {}: {label} decoded", case.name);
    }
}

#[test]
#[ignore = "needs the Gemma 3 GGUF ci/setup.sh joins (fixtures/gemma-3-270m-q4_k_m.gguf)"]
fn gemma3_sentencepiece_vocabulary_matches_transformers_and_llama_cpp() {
    three_ways("gemma3", &fixtures().join("gemma-3-270m-q4_k_m.gguf"));
}

#[test]
#[ignore = "needs the SmolLM2 GGUF ci/setup.sh installs (fixtures/smollm2)"]
fn smollm2_byte_level_vocabulary_matches_transformers_and_llama_cpp() {
    three_ways("smollm2", &fixtures().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
}

/// With special tokens requested, the file's `add_bos_token` decides (Gemma: yes, BOS 2), as llama.cpp adds it.
#[test]
#[ignore = "needs the Gemma 3 GGUF ci/setup.sh joins (fixtures/gemma-3-270m-q4_k_m.gguf)"]
fn gemma3_adds_its_bos_when_special_tokens_are_requested() {
    let model = ModelSource::open(fixtures().join("gemma-3-270m-q4_k_m.gguf")).unwrap();
    let ids = model.tokenizer().unwrap().encode("Hello", true).unwrap().get_ids().to_vec();
    assert_eq!(ids.first(), Some(&2));
    assert_eq!(model.info().bos_token_id, Some(2));
    assert_eq!(model.info().eos_token_ids.first(), Some(&1));
}
