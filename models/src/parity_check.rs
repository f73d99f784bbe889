//! How `nano-vllm parity` judges a runtime setting ([`crate::registry::RuntimeSpec::parity_check`] chooses).

use crate::mix::Mix;

/// How `nano-vllm parity` judges a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParityCheck {
    /// Float32 settings: every logit within the bundle's `f32` tolerance (max |diff|, argmax agreement), in every
    /// engine situation, greedy continuations identical.
    Elementwise,
    /// llama.cpp on the f32 GGUF: as [`ParityCheck::Elementwise`] with the manifest's `llama_cpp_f32` tolerance
    /// (its documented override where ggml differs, e.g. GPT-2's f16 GELU table; else `f32`).
    LlamaCppElementwise,
    /// Q8_0 weights (alone or with other lossy options): teacher forced on the reference tokens, held to the bundle's
    /// `q8_0` distribution tolerance (mean KL, top-1 agreement); the situations still run and report.
    TeacherForced,
    /// Q4_0 weights (`native:q4_0`, `llama-cpp:q4_0`), and llama.cpp's IQ4_NL and IQ4_XS mixes (no torch emulation
    /// of their own, bounded by Q4_0's): teacher forced, held to the bundle's `q4_0` tolerance.
    TeacherForcedQ4_0,
    /// llama.cpp's K-quant mixes (`native:q4_k_m`, `llama-cpp:q4_k_m`; Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K): teacher
    /// forced, held to the bundle's tolerance of that mix (`tolerances.mixes.<mix>`, measured on the generator's
    /// emulation of the same file), once the file's tensor types are checked to be the emulation's.
    TeacherForcedMix(Mix),
    /// llama.cpp on the shipped GGUF (quantized kernels): teacher forced, held to the bundle's `shipped` tolerance.
    ShippedTeacherForced,
    /// f16 weights (`native:f16`): teacher forced, held to the bundle's `f16` tolerance (mean KL, top-1 agreement
    /// and max |diff|, from the generator's torch emulation of the same rounding). Also llama.cpp's F16 file
    /// (`mostly_f16`), which rounds each product's input and the embeddings too (about 2.5x that KL): the tolerance
    /// is not its own, so its verdict is a report; the same-file pair judges it.
    TeacherForcedF16,
    /// bf16 weights (`native:bf16`): teacher forced, held to the bundle's `bf16` tolerance; also llama.cpp's BF16
    /// file (`mostly_bf16`), as for `mostly_f16`.
    TeacherForcedBf16,
    /// llama.cpp's defaults on the f32 GGUF (`llama-cpp:defaults`: F16 KV cache, flash attention): teacher forced,
    /// held to the bundle's `llama_cpp_defaults` tolerance.
    LlamaCppDefaults,
}

impl ParityCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elementwise => "elementwise",
            Self::LlamaCppElementwise => "elementwise (llama_cpp_f32)",
            Self::TeacherForced => "teacher_forced",
            Self::TeacherForcedQ4_0 => "teacher_forced (q4_0)",
            Self::TeacherForcedMix(m) => m.teacher_forced_label(),
            Self::ShippedTeacherForced => "teacher_forced (shipped)",
            Self::TeacherForcedF16 => "teacher_forced (f16)",
            Self::TeacherForcedBf16 => "teacher_forced (bf16)",
            Self::LlamaCppDefaults => "teacher_forced (llama_cpp_defaults)",
        }
    }

    /// Lossy settings: judged teacher forced against a distribution tolerance rather than element-wise.
    pub fn is_teacher_forced(self) -> bool {
        !matches!(self, Self::Elementwise | Self::LlamaCppElementwise)
    }
}
