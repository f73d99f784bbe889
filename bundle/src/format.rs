//! The files every bundle holds, by role. The manifest's `formats` object maps each key to a file name.

use std::fmt;

/// One file of a bundle, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// Hugging Face `config.json`.
    Config,
    /// Hugging Face `generation_config.json`.
    GenerationConfig,
    /// Hugging Face weights, float32 (`model.safetensors`).
    Safetensors,
    /// Hugging Face tokenizers file (`tokenizer.json`).
    Tokenizer,
    /// ONNX model with KV-cache inputs and outputs, weights embedded (`model.onnx`).
    Onnx,
    /// GGUF, every tensor F32 (`model.f32.gguf`).
    GgufF32,
    /// GGUF, 2-D tensors Q8_0, norms and biases F32 (`model.q8_0.gguf`).
    GgufQ8_0,
    /// Reference prompts and logits (`reference.safetensors`).
    Reference,
    /// Tokenizer reference cases (`tokenizer_reference.json`).
    TokenizerReference,
    /// Optional: Hugging Face `tokenizer_config.json` (special tokens, chat template) of a shipped checkpoint.
    TokenizerConfig,
    /// Optional: the chat template, Jinja (`chat_template.jinja`).
    ChatTemplate,
    /// Optional: the GGUF the bundle was made from, as shipped (its own name; judged by the `shipped` tolerance).
    GgufShipped,
}

impl Format {
    /// Every format a version-1 bundle must have.
    pub const ALL: [Format; 9] = [
        Format::Config,
        Format::GenerationConfig,
        Format::Safetensors,
        Format::Tokenizer,
        Format::Onnx,
        Format::GgufF32,
        Format::GgufQ8_0,
        Format::Reference,
        Format::TokenizerReference,
    ];

    /// Formats a bundle may have (made from a shipped checkpoint); checked like the others when listed.
    pub const OPTIONAL: [Format; 3] = [Format::TokenizerConfig, Format::ChatTemplate, Format::GgufShipped];

    /// The key of this format in the manifest's `formats` object.
    pub fn key(self) -> &'static str {
        match self {
            Format::Config => "config",
            Format::GenerationConfig => "generation_config",
            Format::Safetensors => "safetensors",
            Format::Tokenizer => "tokenizer",
            Format::Onnx => "onnx",
            Format::GgufF32 => "gguf_f32",
            Format::GgufQ8_0 => "gguf_q8_0",
            Format::Reference => "reference",
            Format::TokenizerReference => "tokenizer_reference",
            Format::TokenizerConfig => "tokenizer_config",
            Format::ChatTemplate => "chat_template",
            Format::GgufShipped => "gguf_shipped",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}
