//! A runtime's own tokenizer (llama.cpp's, from the vocabulary of the GGUF it runs), for tokenizer conformance.

use crate::model::ModelSource;
use crate::registry::{RegistryError, RuntimeSpec};
#[cfg(feature = "llama-cpp")]
use crate::registry::{RuntimeSettings, SpecKind, llama_cpp_file, llama_cpp_options};

/// A runtime's own tokenizer, for tokenizer conformance.
pub trait RuntimeTokenizer {
    /// Ids of `text`, no BOS/EOS added; `parse_special`: special-token text in the input becomes the special token.
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String>;
    /// Text of `ids`, special tokens rendered.
    fn detokenize(&self, ids: &[u32]) -> Result<String, String>;
}

#[cfg(feature = "llama-cpp")]
impl RuntimeTokenizer for nano_vllm_llama_cpp::LlamaCppRuntime {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        nano_vllm_llama_cpp::LlamaCppRuntime::tokenize(self, text, parse_special).map_err(|e| e.to_string())
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, String> {
        nano_vllm_llama_cpp::LlamaCppRuntime::detokenize(self, ids).map_err(|e| e.to_string())
    }
}

/// A runtime tokenizer, or why it did not load.
pub type LoadedTokenizer = Result<Box<dyn RuntimeTokenizer>, RegistryError>;

/// The tokenizer of runtime `name` when it brings its own (llama.cpp: the vocabulary of the GGUF file it runs), labelled
/// with that file; `None` when the runtime uses the model's `tokenizer.json` (or is not compiled in).
pub fn runtime_tokenizer(spec: &RuntimeSpec, model: &ModelSource) -> Option<(String, LoadedTokenizer)> {
    #[cfg(feature = "llama-cpp")]
    if let SpecKind::LlamaCpp(llama) = spec.kind() {
        let name = spec.name();
        let options = llama_cpp_options(llama, &RuntimeSettings { max_model_len: Some(256), ..Default::default() });
        let file = llama_cpp_file(name, model, options.weights).map(|path| (path, options));
        let (path, options) = match file {
            Ok(f) => f,
            Err(e) => return Some((format!("llama-cpp ({name})"), Err(e))),
        };
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let label = format!("llama-cpp ({file} vocabulary)");
        let loaded = nano_vllm_llama_cpp::LlamaCppRuntime::load(&path, &options)
            .map(|r| Box::new(r) as Box<dyn RuntimeTokenizer>)
            .map_err(|e| RegistryError::Load { name: name.to_owned(), model: path.clone(), source: e.into() });
        return Some((label, loaded));
    }
    let _ = (spec, model);
    None
}
