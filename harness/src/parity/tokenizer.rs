//! Tokenizer conformance: a tokenizer against the bundle's reference ids (`tokenizer_reference.json`, made with
//! Hugging Face), case by case. Ids and the decoded text must both be identical.

use nano_vllm_bundle::TokenizerReference;
use tokenizers::Tokenizer;

use super::{Status, TokenizerParity};
use nano_vllm_models::registry::RuntimeTokenizer;

/// Runs every case through `encode` / `decode` and compares with the reference.
pub fn check_tokenizer(
    label: &str,
    reference: &TokenizerReference,
    encode: impl Fn(&str) -> Result<Vec<u32>, String>,
    decode: impl Fn(&[u32]) -> Result<String, String>,
) -> TokenizerParity {
    let mut out = TokenizerParity {
        tokenizer: label.to_owned(),
        cases: reference.cases.len(),
        identical: 0,
        status: Status::Pass,
        failures: Vec::new(),
    };
    for case in &reference.cases {
        let mut ok = true;
        match encode(&case.text) {
            Ok(ids) if ids == case.ids => {}
            Ok(ids) => {
                ok = false;
                out.failures
                    .push(format!("tokenizer {label} case {}: ids {ids:?}, reference {:?}", case.name, case.ids));
            }
            Err(e) => {
                ok = false;
                out.failures.push(format!("tokenizer {label} case {}: encoding failed: {e}", case.name));
            }
        }
        match decode(&case.ids) {
            Ok(text) if text == case.decoded => {}
            Ok(text) => {
                ok = false;
                out.failures.push(format!(
                    "tokenizer {label} case {}: decoded {text:?}, reference {:?}",
                    case.name, case.decoded
                ));
            }
            Err(e) => {
                ok = false;
                out.failures.push(format!("tokenizer {label} case {}: decoding failed: {e}", case.name));
            }
        }
        out.identical += usize::from(ok);
    }
    if reference.cases.is_empty() {
        out.failures.push(format!("tokenizer {label}: the reference has no cases"));
    }
    if !out.failures.is_empty() {
        out.status = Status::Fail;
    }
    out
}

/// The bundle's `tokenizer.json` through the tokenizers crate (special tokens added as the reference was made;
/// decoding keeps special tokens).
pub fn check_hf_tokenizer(tokenizer: &Tokenizer, reference: &TokenizerReference) -> TokenizerParity {
    check_tokenizers_crate("tokenizers (tokenizer.json)", tokenizer, reference)
}

/// The tokenizer this crate builds from a GGUF's own vocabulary (for a model given as a GGUF alone).
pub fn check_gguf_vocabulary(gguf: &std::path::Path, reference: &TokenizerReference) -> TokenizerParity {
    let name = gguf.file_name().map_or_else(|| gguf.display().to_string(), |f| f.to_string_lossy().into_owned());
    let label = format!("tokenizers ({name} vocabulary)");
    let built = nano_vllm_bundle::gguf::GgufFile::open(gguf)
        .map_err(|e| e.to_string())
        .and_then(|file| nano_vllm_models::model::tokenizer::from_gguf(&file));
    match built {
        Ok(tokenizer) => check_tokenizers_crate(&label, &tokenizer, reference),
        Err(e) => TokenizerParity {
            tokenizer: label,
            cases: reference.cases.len(),
            identical: 0,
            status: Status::Error,
            failures: vec![e],
        },
    }
}

fn check_tokenizers_crate(label: &str, tokenizer: &Tokenizer, reference: &TokenizerReference) -> TokenizerParity {
    check_tokenizer(
        label,
        reference,
        |text| {
            tokenizer
                .encode(text, reference.add_special_tokens)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| e.to_string())
        },
        |ids| tokenizer.decode(ids, false).map_err(|e| e.to_string()),
    )
}

/// A runtime's own tokenizer (see [`nano_vllm_models::registry::runtime_tokenizer`]); special-token text is matched when the
/// reference's tokenizer matches it.
pub fn check_runtime_tokenizer(
    label: &str,
    tokenizer: &dyn RuntimeTokenizer,
    reference: &TokenizerReference,
) -> TokenizerParity {
    let parse_special = reference.special_tokens_in_text_are_matched;
    check_tokenizer(label, reference, |text| tokenizer.tokenize(text, parse_special), |ids| tokenizer.detokenize(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_tokenizer_of_every_committed_bundle_matches_its_reference() {
        for name in nano_vllm_bundle::COMMITTED_BUNDLES {
            let bundle = nano_vllm_bundle::open_fixture(name).unwrap();
            let reference = bundle.tokenizer_reference().unwrap();
            let tokenizer = Tokenizer::from_file(bundle.tokenizer_json()).unwrap();
            let r = check_hf_tokenizer(&tokenizer, &reference);
            assert_eq!(r.status, Status::Pass, "{name}: {:?}", r.failures);
            assert_eq!((r.identical, r.cases), (15, 15), "{name}");
        }
    }

    #[test]
    fn a_different_tokenizer_fails_case_by_case() {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        let reference = bundle.tokenizer_reference().unwrap();
        // The committed bundles share one tokenizer; this one also splits out "e" as an added token of its own.
        let mut other = Tokenizer::from_file(bundle.tokenizer_json()).unwrap();
        assert_eq!(other.add_tokens([tokenizers::AddedToken::from("e", false)]).unwrap(), 1);
        let r = check_hf_tokenizer(&other, &reference);
        assert_eq!(r.status, Status::Fail);
        assert!(r.identical < r.cases && !r.failures.is_empty());
        assert!(r.failures[0].starts_with("tokenizer tokenizers (tokenizer.json) case "), "{}", r.failures[0]);
        // An encoder that errors is a failure naming the case, not a panic.
        let r = check_tokenizer("broken", &reference, |_| Err("boom".into()), |_| Ok(String::new()));
        assert_eq!(r.identical, 0);
        assert!(r.failures.iter().any(|f| f.contains("encoding failed: boom")), "{:?}", r.failures);
    }
}
