//! Tokenizer conformance: the GGUF's tokenizer, run by llama.cpp, against the Hugging Face tokenizers reference of
//! every committed bundle (`tokenizer_reference.json`, 15 cases). Ids must be identical; any difference is a
//! conformance failure. No BOS/EOS is added (the reference has none); special-token text in the input is matched
//! (`parse_special`), as Hugging Face does (`special_tokens_in_text_are_matched`).

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_llama_cpp::{LlamaCppOptions, LlamaCppRuntime};

fn tokenizer_conformance(name: &str) {
    let bundle = open_fixture(name).unwrap();
    let reference = bundle.tokenizer_reference().unwrap();
    assert!(!reference.add_special_tokens && !reference.default_adds_bos, "{name}: the reference adds no BOS");
    let runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity()).unwrap();
    let parse_special = reference.special_tokens_in_text_are_matched;
    let (mut failures, mut identical) = (Vec::new(), 0);
    for case in &reference.cases {
        let ids = runtime.tokenize(&case.text, parse_special).unwrap();
        let decoded = runtime.detokenize(&ids).unwrap();
        let ok = ids == case.ids && decoded == case.decoded;
        identical += usize::from(ok);
        println!("{name} {:<18} {} ({} ids)", case.name, if ok { "ok" } else { "DIFFERS" }, case.ids.len());
        if ids != case.ids {
            failures.push(format!("{name} {}: ids {ids:?}, reference {:?}", case.name, case.ids));
        }
        if decoded != case.decoded {
            failures.push(format!("{name} {}: decoded {decoded:?}, reference {:?}", case.name, case.decoded));
        }
    }
    println!("{name}: {identical}/{} cases identical (ids and decoded text)", reference.cases.len());
    assert!(failures.is_empty(), "tokenizer conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn tiny_llama_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-llama");
}

#[test]
fn tiny_qwen2_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-qwen2");
}

#[test]
fn tiny_qwen3_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-qwen3");
}

#[test]
fn tiny_gemma3_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-gemma3");
}

#[test]
fn tiny_phi3_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-phi3");
}

#[test]
fn tiny_gpt2_gguf_tokenizer_matches_hf_tokenizers() {
    tokenizer_conformance("tiny-gpt2");
}

#[test]
fn every_committed_bundle_has_a_tokenizer_test() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"]);
}

/// Why `parse_special` is on: without it llama.cpp tokenizes `<s>` as the text `<`, `s`, `>`.
#[test]
fn special_token_text_needs_parse_special() {
    let bundle = open_fixture("tiny-llama").unwrap();
    let case = bundle.tokenizer_reference().unwrap().case("special_token_text").cloned().unwrap();
    assert!(case.ids.contains(&0) && case.ids.contains(&1), "{:?}", case.ids);
    let runtime = LlamaCppRuntime::from_bundle(&bundle, &LlamaCppOptions::parity()).unwrap();
    assert_eq!(runtime.tokenize(&case.text, true).unwrap(), case.ids);
    let plain = runtime.tokenize(&case.text, false).unwrap();
    assert!(!plain.contains(&0) && !plain.contains(&1), "{plain:?}");
    // Never a BOS, even for empty text.
    assert!(runtime.tokenize("", true).unwrap().is_empty());
    // Ids outside the vocabulary are an error, not a panic.
    let err = runtime.detokenize(&[3, 512]).unwrap_err().to_string();
    assert!(err.contains("token id 512 is outside the vocabulary of 512"), "{err}");
}
