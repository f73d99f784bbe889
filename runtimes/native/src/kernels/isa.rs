//! Which SIMD kernels this CPU runs: one detection for the whole crate, made once per process. An [`Isa`] that
//! names a SIMD instruction set can only come from [`Isa::detect`], [`Isa::avx2`] or [`Isa::avx512`], which check the
//! CPU first, so
//! safe code holding one may run those instructions: the kernels that take an `Isa` stay safe functions.

use std::sync::OnceLock;

/// A set of kernels this CPU can run: the portable ones everywhere, AVX2+FMA+F16C where the CPU has all three, and
/// AVX-512F besides them where it has that too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(Kind);

/// Private: outside this module an `Isa` is made only by the checked constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2's set plus AVX-512F: every AVX2 kernel runs too.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The portable kernels, on any CPU.
    pub const PORTABLE: Isa = Isa(Kind::Portable);

    /// The best kernels this CPU runs (detected once, then cached).
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| Self::avx512().or_else(Self::avx2).unwrap_or(Self::PORTABLE))
    }

    /// The AVX-512 kernels (and every AVX2 one), when this CPU has AVX-512F besides AVX2, FMA and F16C.
    pub fn avx512() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if Self::avx2().is_some() && std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Isa(Kind::Avx512));
        }
        None
    }

    /// The AVX2 kernels, when this CPU has AVX2, FMA and F16C (every kernel behind them may use all three).
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Some(Isa(Kind::Avx2));
        }
        None
    }

    /// Whether kernels compiled for AVX2, FMA and F16C may run.
    pub fn has_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.0, Kind::Avx2 | Kind::Avx512) {
            return true;
        }
        false
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2+fma+f16c",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512f+avx2+fma+f16c",
        }
    }

    pub(crate) fn kind(self) -> Kind {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_cpu() {
        #[cfg(target_arch = "x86_64")]
        {
            let has = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            assert_eq!(Isa::avx2().is_some(), has);
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Isa::avx512().is_some(), Isa::avx2().is_some() && std::arch::is_x86_feature_detected!("avx512f"));
        assert_eq!(Isa::detect(), Isa::avx512().or_else(Isa::avx2).unwrap_or(Isa::PORTABLE));
        assert!(Isa::avx512().is_none_or(Isa::has_avx2));
        assert!(!Isa::PORTABLE.has_avx2());
    }
}
