//! What a config asks for that a GGUF of its architecture cannot carry, so that llama.cpp (or our loader on
//! llama.cpp's quantization of it) would compute another model: each named by its field.

use super::{HfArchitecture, HfConfig};

impl HfConfig {
    /// What this config asks for that a GGUF file cannot carry, so that a runtime reading the model from a GGUF made
    /// of it (llama.cpp, or ours on llama.cpp's quantization of it) would silently compute another model, named by
    /// the field: a sliding window shorter than `context` (llama.cpp reads no window for the `llama` and `qwen2`
    /// architectures that Mistral and Qwen2 files use), a non-standard attention scale (GPT-2's
    /// `scale_attn_weights: false`; ggml always scales by `1 / sqrt(head_dim)`), Llama-3 RoPE scaling on Qwen2 (the
    /// `rope_freqs` tensor is read by llama.cpp's `llama` architecture only). `None`: a GGUF says it all.
    pub fn beyond_gguf(&self, context: usize) -> Option<String> {
        if self.architecture == HfArchitecture::Gemma3 {
            return self.beyond_gemma3_gguf();
        }
        if let Some(window) = self.sliding_window.filter(|&w| w < context) {
            let layers = self.num_layers - self.full_attention_layers.len();
            return Some(format!(
                "field `sliding_window`: {window} (in {layers} of {} layers) is shorter than the context of {context} \
                 positions, and a GGUF of the `{}` architecture ({}'s) carries no window (llama.cpp would attend to \
                 the whole context); run with a context of at most {window} positions (--max-model-len)",
                self.num_layers,
                if self.architecture == HfArchitecture::Llama || self.architecture == HfArchitecture::Mistral {
                    "llama"
                } else {
                    self.architecture.as_str()
                },
                self.architecture.as_str()
            ));
        }
        if self.rope_scaling.is_some() && !self.architecture.gguf_permutes_qk() {
            return Some(format!(
                "field `rope_scaling`: Llama-3 RoPE scaling reaches llama.cpp as a `rope_freqs` tensor, which its \
                 `{}` architecture does not read",
                self.architecture.as_str()
            ));
        }
        let standard = 1.0 / (self.head_dim as f64).sqrt();
        if (self.attention_scale - standard).abs() > 1e-9 * standard {
            return Some(format!(
                "field `scale_attn_weights`: false (attention scores scaled by {}) cannot be carried by a GGUF: \
                 llama.cpp always scales by 1/sqrt(head_dim) = {standard}",
                self.attention_scale
            ));
        }
        None
    }

    /// llama.cpp's `gemma3` reads the window from the GGUF but fixes the rest: every 6th layer global, a local RoPE
    /// base of 10,000, attention scaled by `1 / sqrt(head_dim)` (but for the 27B model).
    fn beyond_gemma3_gguf(&self) -> Option<String> {
        let sixth: Vec<usize> = (0..self.num_layers).filter(|i| (i + 1) % 6 == 0).collect();
        if self.sliding_window.is_some() && self.full_attention_layers != sixth {
            return Some(format!(
                "field `layer_types`: full attention in layers {:?}, where llama.cpp's `gemma3` makes every 6th layer \
                 global ({sixth:?})",
                self.full_attention_layers
            ));
        }
        if self.extras.rope_local_theta.is_some_and(|t| t != 10_000.0) {
            return Some(
                "field `rope_local_base_freq`: llama.cpp's `gemma3` fixes the local RoPE base at 10000".into(),
            );
        }
        let standard = 1.0 / (self.head_dim as f64).sqrt();
        if (self.attention_scale - standard).abs() > 1e-9 * standard {
            return Some(format!(
                "field `query_pre_attn_scalar`: attention scaled by {}, where llama.cpp's `gemma3` scales by \
                 1/sqrt(head_dim) = {standard}",
                self.attention_scale
            ));
        }
        None
    }
}
