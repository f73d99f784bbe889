//! llama.cpp's quantized files of a bundle (`native:<mix>` and `llama-cpp:<mix>` run the same one), by the option
//! name a runtime spec gives them, and how parity judges a runtime on each.

use crate::registry::ParityCheck;

/// llama.cpp's quantization mixes of a bundle's f32 GGUF, made by its quantizer (`native:<mix>` and
/// `llama-cpp:<mix>` run the same file), and its F16 and BF16 files (`mostly_f16`, `mostly_bf16`: every matrix in
/// the half type, as `llama-quantize ... F16` / `BF16` writes them and as such GGUFs are published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mix {
    Q2K,
    Q3KM,
    Q4KM,
    Q5KM,
    Q6K,
    IQ4NL,
    IQ4XS,
    /// llama.cpp's `MOSTLY_F16` file type.
    F16,
    /// llama.cpp's `MOSTLY_BF16` file type.
    BF16,
}

impl Mix {
    /// Every mix, in llama.cpp's order, then the half-precision files.
    pub const ALL: [Mix; 9] =
        [Mix::Q2K, Mix::Q3KM, Mix::Q4KM, Mix::Q5KM, Mix::Q6K, Mix::IQ4NL, Mix::IQ4XS, Mix::F16, Mix::BF16];

    /// The option name: llama.cpp's mix name in lower case; `mostly_f16` and `mostly_bf16` (llama.cpp's names of the
    /// file types) for the half-precision files, since `f16` and `bf16` name native's rounding at load.
    pub fn as_str(self) -> &'static str {
        match self {
            Mix::Q2K => "q2_k",
            Mix::Q3KM => "q3_k_m",
            Mix::Q4KM => "q4_k_m",
            Mix::Q5KM => "q5_k_m",
            Mix::Q6K => "q6_k",
            Mix::IQ4NL => "iq4_nl",
            Mix::IQ4XS => "iq4_xs",
            Mix::F16 => "mostly_f16",
            Mix::BF16 => "mostly_bf16",
        }
    }

    pub fn parse(name: &str) -> Option<Mix> {
        Mix::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// How parity judges a runtime on this file: the half-precision files by the bundle's f16 / bf16 tolerance
    /// (weights rounded to the type), the K-quant mixes by their own (the generator emulates them), IQ4_NL and IQ4_XS
    /// by the bundle's Q4_0 one (their quantizer is not emulated).
    pub fn parity_check(self) -> ParityCheck {
        match self {
            Mix::F16 => ParityCheck::TeacherForcedF16,
            Mix::BF16 => ParityCheck::TeacherForcedBf16,
            Mix::IQ4NL | Mix::IQ4XS => ParityCheck::TeacherForcedQ4_0,
            Mix::Q2K | Mix::Q3KM | Mix::Q4KM | Mix::Q5KM | Mix::Q6K => ParityCheck::TeacherForcedMix(self),
        }
    }

    /// The parity report's name of the check on a K-quant mix's own tolerance; the other mixes are judged by another
    /// check ([`Mix::parity_check`]), whose name this is.
    pub(crate) fn teacher_forced_label(self) -> &'static str {
        match self {
            Mix::Q2K => "teacher_forced (q2_k)",
            Mix::Q3KM => "teacher_forced (q3_k_m)",
            Mix::Q4KM => "teacher_forced (q4_k_m)",
            Mix::Q5KM => "teacher_forced (q5_k_m)",
            Mix::Q6K => "teacher_forced (q6_k)",
            Mix::IQ4NL | Mix::IQ4XS | Mix::F16 | Mix::BF16 => self.parity_check().as_str(),
        }
    }
}
