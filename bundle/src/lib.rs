//! Reader of nano-vllm fixture bundles (format: `fixtures/README.md`).
//!
//! A bundle is a directory holding one model in every format the runtimes load (HF safetensors, ONNX with KV
//! cache, GGUF f32 and q8_0) with reference logits computed by Hugging Face transformers in float32, a tokenizer
//! reference, and a `manifest.json` with checksums and tolerances. `fixtures/generate.py` makes them.
//!
//! ```no_run
//! let bundle = nano_vllm_bundle::open_fixture("tiny-llama")?;
//! bundle.verify()?;
//! let reference = bundle.reference()?;
//! for prompt in &reference.prompts {
//!     println!("{}: {} prompt tokens, first greedy token {}", prompt.name, prompt.prompt_ids.len(),
//!              prompt.greedy_tokens[0]);
//! }
//! # Ok::<(), nano_vllm_bundle::BundleError>(())
//! ```

mod bundle;
mod error;
mod format;
pub mod gguf;
mod hf_config;
mod logits;
mod manifest;
mod reference;
pub mod safetensors_layout;
mod tokenizer_reference;

use std::path::PathBuf;

pub use bundle::{Bundle, MANIFEST_FILE};
pub use error::BundleError;
pub use format::Format;
pub use hf_config::{Activation, HfArchitecture, HfConfig, LayerExtras, Llama3RopeScaling};
pub use logits::{Logits, argmax};
pub use manifest::{
    Architecture, FORMAT_VERSION, FileEntry, LogitTolerance, Manifest, MixTolerance, ModelConfig, PromptInfo,
    PromptKind, Q8Tolerance, ReferenceInfo, TokenizerReferenceInfo, Tolerances, TypeDifference,
};
pub use reference::{Reference, ReferencePrompt};
pub use tokenizer_reference::{TOKENIZER_REFERENCE_VERSION, TokenizerCase, TokenizerReference};

/// The bundles committed under `fixtures/`.
pub const COMMITTED_BUNDLES: [&str; 6] =
    ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"];

/// Environment variable that overrides [`fixtures_dir`].
pub const FIXTURES_ENV: &str = "NANO_VLLM_FIXTURES";

/// The committed fixtures directory: `$NANO_VLLM_FIXTURES` if set, else `fixtures/` of this workspace (found from
/// this crate's `CARGO_MANIFEST_DIR` at compile time, so it works from any crate's tests).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("fixtures"),
    }
}

/// Open the bundle `fixtures_dir()/name` (one of [`COMMITTED_BUNDLES`], or `bench` once generated).
pub fn open_fixture(name: &str) -> Result<Bundle, BundleError> {
    Bundle::open(fixtures_dir().join(name))
}
