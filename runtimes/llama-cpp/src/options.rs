//! Settings of a [`LlamaCppRuntime`](crate::LlamaCppRuntime).
//!
//! Two presets: [`LlamaCppOptions::parity`] (the default, for conformance: F32 KV cache, flash attention off) and
//! [`LlamaCppOptions::llama_defaults`] (what llama.cpp does when not told otherwise: F16 KV cache, flash attention,
//! which its `auto` setting turns on for the CPU). llama.cpp's defaults put logits about 1e-3 from an f32 reference;
//! the parity settings matched a numpy reference to 5e-7 (`../shared/RUNTIME-NOTES.md`). The KV cache is always
//! non-unified: each sequence owns `n_ctx / n_seq_max` cells, so a sequence's attention never depends on the others.

use llama_cpp_2::context::params::KvCacheType;

/// Element type of llama.cpp's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    pub(crate) fn ggml(self) -> KvCacheType {
        match self {
            Self::F32 => KvCacheType::F32,
            Self::F16 => KvCacheType::F16,
        }
    }

    /// Bytes per element.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// Which GGUF of a bundle [`LlamaCppRuntime::from_bundle`](crate::LlamaCppRuntime::from_bundle) loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// `model.f32.gguf`.
    #[default]
    F32,
    /// `model.q8_0.gguf`.
    Q8_0,
    /// The GGUF the bundle was made from, as shipped (a bundle made with `fixtures/generate.py --from-gguf`).
    Shipped,
    /// `model.f32.gguf` quantized by llama.cpp's quantizer ([`crate::quantize`]); the caller makes the file and
    /// loads it with `LlamaCppRuntime::load`.
    Quantized(crate::Quantization),
}

impl Weights {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q8_0 => "q8_0",
            Self::Shipped => "shipped",
            Self::Quantized(q) => q.as_str(),
        }
    }
}

/// The most sequence ids llama.cpp's context takes (`LLAMA_MAX_SEQ`).
pub const MAX_SEQUENCES: usize = 256;

/// How to load and run a GGUF with llama.cpp. `Default` is [`LlamaCppOptions::parity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaCppOptions {
    pub kv_type: KvType,
    pub flash_attention: bool,
    /// CPU threads for decode and prompt processing; 0 = the available parallelism.
    pub threads: usize,
    /// llama.cpp sequence ids, so the most sequences in one step (at most 256).
    pub n_seq_max: usize,
    /// Most tokens in one step (llama.cpp's `n_batch`); micro-batches are `min(n_batch, 512)` (`n_ubatch`).
    pub n_batch: usize,
    /// KV cells per sequence; `None` = the model's context length. `n_ctx` is this times `n_seq_max`; llama.cpp
    /// rounds each sequence's share up to a multiple of 256.
    pub ctx_per_seq: Option<usize>,
    /// Which of a bundle's GGUF files `from_bundle` loads (`load` takes a path instead).
    pub weights: Weights,
}

impl LlamaCppOptions {
    /// Conformance settings: F32 KV cache, flash attention off, every core, 16 sequences.
    pub fn parity() -> Self {
        Self {
            kv_type: KvType::F32,
            flash_attention: false,
            threads: 0,
            n_seq_max: 16,
            n_batch: 2048,
            ctx_per_seq: None,
            weights: Weights::F32,
        }
    }

    /// llama.cpp's own defaults for what changes results: F16 KV cache and flash attention on.
    pub fn llama_defaults() -> Self {
        Self { kv_type: KvType::F16, flash_attention: true, ..Self::parity() }
    }

    /// The same settings with `weights`.
    pub fn with_weights(self, weights: Weights) -> Self {
        Self { weights, ..self }
    }

    /// Threads actually used (0 resolved to the available parallelism).
    pub fn resolved_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `n_ubatch`: llama.cpp's default 512, or `n_batch` if smaller.
    pub fn n_ubatch(&self) -> usize {
        self.n_batch.min(512)
    }
}

impl Default for LlamaCppOptions {
    fn default() -> Self {
        Self::parity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_differ_only_in_kv_type_and_flash_attention() {
        let (p, d) = (LlamaCppOptions::parity(), LlamaCppOptions::llama_defaults());
        assert_eq!((p.kv_type, p.flash_attention), (KvType::F32, false));
        assert_eq!((d.kv_type, d.flash_attention), (KvType::F16, true));
        assert_eq!(LlamaCppOptions { kv_type: KvType::F32, flash_attention: false, ..d }, p);
        assert_eq!(LlamaCppOptions::default(), p);
        assert_eq!(p.clone().with_weights(Weights::Q8_0).weights, Weights::Q8_0);
        assert!(p.resolved_threads() >= 1);
        assert_eq!(LlamaCppOptions { n_batch: 64, ..p }.n_ubatch(), 64);
    }
}
