//! A runtime as a user names it (`native:q8_0`, `llama-cpp:defaults,q4_k_m`, `mock:fail-at=3`), parsed once into a
//! typed value: which runtime, which file it runs and how. Everything downstream (building the runtime, how parity
//! judges it, which runtimes run the same file) matches on this value, never on the string.
//!
//! Parsing does not depend on the features compiled in: a spec of a runtime left out of the build parses, and
//! [`crate::registry`] says it is not compiled in.

use std::fmt;
use std::time::Duration;

pub use crate::mix::Mix;
use crate::registry::{ParityCheck, RegistryError};

/// The file the native runtime loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeFile {
    /// The model's checkpoint: a bundle's or an HF directory's safetensors, or the GGUF a GGUF model is.
    Checkpoint,
    /// The GGUF shipped with a bundle (`shipped`).
    Shipped,
    /// llama.cpp's quantization of the bundle's f32 GGUF (`q4_k_m`, ...), run as stored.
    Mix(Mix),
}

/// How the native runtime stores the weights it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeDtype {
    F32,
    F16,
    Bf16,
    /// Quantized at load with ggml's reference quantizer.
    Q8_0,
    Q4_0,
}

/// `native[:file][,dtype]`. No dtype: a GGUF as stored, an HF checkpoint in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeSpec {
    pub file: NativeFile,
    pub dtype: Option<NativeDtype>,
}

/// The GGUF llama.cpp runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaCppFile {
    /// A bundle's f32 GGUF, or the GGUF a GGUF model is (the default).
    F32,
    /// A bundle's Q8_0 GGUF (`q8_0`).
    Q8_0,
    /// llama.cpp's pure Q4_0 of the bundle's f32 GGUF (`q4_0`).
    Q4_0,
    /// The shipped GGUF (`shipped`).
    Shipped,
    /// llama.cpp's quantization mix of the bundle's f32 GGUF.
    Mix(Mix),
}

/// `llama-cpp[:defaults][,file]`: parity settings (F32 KV cache, flash attention off) unless `defaults`
/// (llama.cpp's own: F16 KV cache, flash attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaCppSpec {
    pub defaults: bool,
    pub file: LlamaCppFile,
}

/// `mock[:fail-at=N][,panic-at=N][,delay-us=N]`: the model-free mock, its N-th step failing or panicking, each step
/// sleeping N microseconds (at most 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MockSpec {
    pub fail_at: Option<usize>,
    pub panic_at: Option<usize>,
    pub step_delay: Option<Duration>,
}

/// What a runtime name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    Native(NativeSpec),
    Onnx,
    /// `candle[:shipped]`: the checkpoint, or the shipped GGUF dequantized.
    Candle {
        shipped: bool,
    },
    LlamaCpp(LlamaCppSpec),
    Mock(MockSpec),
}

/// A parsed runtime name: the name as given (for reports and file names) and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    name: String,
    kind: SpecKind,
}

/// Runtime names: the base of every spec.
pub const BASES: [&str; 5] = ["native", "onnx", "candle", "llama-cpp", "mock"];

impl RuntimeSpec {
    /// Parses `base[:option,option...]`, checking every option; the error names the runtime and the option.
    pub fn parse(spec: &str) -> Result<Self, RegistryError> {
        let name = spec.trim();
        let (base, options) = match name.split_once(':') {
            Some((base, options)) => (base, options.split(',').map(str::trim).collect::<Vec<_>>()),
            None => (name, Vec::new()),
        };
        let bad = |option: &str| RegistryError::BadOption { name: name.to_owned(), option: option.to_owned() };
        let kind = match base {
            "native" => SpecKind::Native(native(&options, bad)?),
            "onnx" => match options.first() {
                Some(o) => return Err(bad(o)),
                None => SpecKind::Onnx,
            },
            "candle" => match options.as_slice() {
                [] => SpecKind::Candle { shipped: false },
                ["shipped"] => SpecKind::Candle { shipped: true },
                ["shipped", o, ..] | [o, ..] => return Err(bad(o)),
            },
            "llama-cpp" => SpecKind::LlamaCpp(llama_cpp(&options, bad)?),
            "mock" => SpecKind::Mock(mock(&options, bad)?),
            "" => return Err(RegistryError::NoRuntime),
            _ => return Err(RegistryError::Unknown { name: name.to_owned() }),
        };
        Ok(Self { name: name.to_owned(), kind })
    }

    /// A `--runtime` list: names separated by commas, where a piece that is not a runtime name continues the options
    /// of the spec before it (`llama-cpp:defaults,q8_0,native` is two runtimes). Parsed whole before anything runs.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, RegistryError> {
        let mut names: Vec<String> = Vec::new();
        for piece in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let base = piece.split(':').next().unwrap_or(piece);
            match names.last_mut() {
                // An option of the spec before: that spec has options, and this piece is not a runtime name.
                Some(last) if last.contains(':') && !piece.contains(':') && !BASES.contains(&base) => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => names.push(piece.to_owned()),
            }
        }
        if names.is_empty() {
            return Err(RegistryError::NoRuntime);
        }
        names.iter().map(|n| Self::parse(n)).collect()
    }

    /// A spec written in this program (the settings `all` means); they all parse (a test holds them).
    pub(crate) fn known(spec: &'static str) -> Self {
        Self::parse(spec).unwrap_or_else(|e| unreachable!("built-in runtime spec {spec}: {e}"))
    }

    /// The name as given, trimmed.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> SpecKind {
        self.kind
    }

    /// The runtime's name without options (`native`, `llama-cpp`, ...).
    pub fn base(&self) -> &'static str {
        match self.kind {
            SpecKind::Native(_) => "native",
            SpecKind::Onnx => "onnx",
            SpecKind::Candle { .. } => "candle",
            SpecKind::LlamaCpp(_) => "llama-cpp",
            SpecKind::Mock(_) => "mock",
        }
    }

    /// Whether this runtime computes the model in float32 from float32 weights (a GGUF's dequantized) on a model of
    /// `kind`: the settings a quality run's default base is chosen from.
    pub fn computes_in_f32(&self, kind: crate::model::ModelKind) -> bool {
        let gguf = kind == crate::model::ModelKind::Gguf;
        match self.kind {
            SpecKind::Native(NativeSpec { dtype: Some(NativeDtype::F32), .. }) => true,
            SpecKind::Native(NativeSpec { file: NativeFile::Checkpoint, dtype: None }) => !gguf,
            SpecKind::Onnx | SpecKind::Candle { .. } => true,
            SpecKind::LlamaCpp(LlamaCppSpec { defaults: false, file: LlamaCppFile::F32 }) => !gguf,
            _ => false,
        }
    }

    /// How `nano-vllm parity` judges this runtime (see [`ParityCheck`]).
    pub fn parity_check(&self) -> ParityCheck {
        match self.kind {
            SpecKind::Native(NativeSpec { file, dtype }) => match (file, dtype) {
                (NativeFile::Mix(m), _) => m.parity_check(),
                (_, Some(NativeDtype::Q4_0)) => ParityCheck::TeacherForcedQ4_0,
                (_, Some(NativeDtype::Q8_0)) => ParityCheck::TeacherForced,
                (_, Some(NativeDtype::F16)) => ParityCheck::TeacherForcedF16,
                (_, Some(NativeDtype::Bf16)) => ParityCheck::TeacherForcedBf16,
                // The shipped GGUF as stored: its quantized kernels.
                (NativeFile::Shipped, None) => ParityCheck::ShippedTeacherForced,
                _ => ParityCheck::Elementwise,
            },
            SpecKind::LlamaCpp(LlamaCppSpec { defaults, file }) => match file {
                LlamaCppFile::Shipped => ParityCheck::ShippedTeacherForced,
                LlamaCppFile::Mix(m) => m.parity_check(),
                LlamaCppFile::Q4_0 => ParityCheck::TeacherForcedQ4_0,
                LlamaCppFile::Q8_0 => ParityCheck::TeacherForced,
                LlamaCppFile::F32 if defaults => ParityCheck::LlamaCppDefaults,
                LlamaCppFile::F32 => ParityCheck::LlamaCppElementwise,
            },
            _ => ParityCheck::Elementwise,
        }
    }

    /// The quantized file this runtime runs as stored, when native and llama.cpp can both run it: the setting of a
    /// same-file pair (`native:<s>` beside `llama-cpp:<s>`), with llama.cpp in its parity settings.
    pub fn same_file_setting(&self) -> Option<SameFile> {
        match self.kind {
            SpecKind::Native(NativeSpec { file: NativeFile::Checkpoint, dtype: Some(NativeDtype::Q8_0) })
            | SpecKind::LlamaCpp(LlamaCppSpec { defaults: false, file: LlamaCppFile::Q8_0 }) => Some(SameFile::Q8_0),
            SpecKind::Native(NativeSpec { file: NativeFile::Checkpoint, dtype: Some(NativeDtype::Q4_0) })
            | SpecKind::LlamaCpp(LlamaCppSpec { defaults: false, file: LlamaCppFile::Q4_0 }) => Some(SameFile::Q4_0),
            SpecKind::Native(NativeSpec { file: NativeFile::Mix(m), dtype: None })
            | SpecKind::LlamaCpp(LlamaCppSpec { defaults: false, file: LlamaCppFile::Mix(m) }) => {
                Some(SameFile::Mix(m))
            }
            SpecKind::Native(NativeSpec { file: NativeFile::Shipped, dtype: None })
            | SpecKind::LlamaCpp(LlamaCppSpec { defaults: false, file: LlamaCppFile::Shipped }) => {
                Some(SameFile::Shipped)
            }
            _ => None,
        }
    }
}

/// A quantized file that native and llama.cpp both run as stored (see [`RuntimeSpec::same_file_setting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SameFile {
    /// A bundle's Q8_0 GGUF; `native:q8_0` quantizes the f32 checkpoint at load with ggml's reference quantizer: the
    /// same blocks.
    Q8_0,
    /// llama.cpp's pure Q4_0 of the bundle (native: the same blocks, quantized at load).
    Q4_0,
    Mix(Mix),
    Shipped,
}

impl SameFile {
    /// Every same-file setting: q8_0, q4_0, the mixes, shipped.
    pub fn all() -> impl Iterator<Item = SameFile> {
        [SameFile::Q8_0, SameFile::Q4_0].into_iter().chain(Mix::ALL.map(SameFile::Mix)).chain([SameFile::Shipped])
    }

    /// The option naming it (`q8_0`, `q4_k_m`, `shipped`).
    pub fn as_str(self) -> &'static str {
        match self {
            SameFile::Q8_0 => "q8_0",
            SameFile::Q4_0 => "q4_0",
            SameFile::Mix(m) => m.as_str(),
            SameFile::Shipped => "shipped",
        }
    }
}

impl fmt::Display for RuntimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Compared by name, as reports and file names know it.
impl PartialEq<str> for RuntimeSpec {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for RuntimeSpec {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl std::str::FromStr for RuntimeSpec {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn native(options: &[&str], bad: impl Fn(&str) -> RegistryError) -> Result<NativeSpec, RegistryError> {
    let mut spec = NativeSpec { file: NativeFile::Checkpoint, dtype: None };
    for &o in options {
        let dtype = match o {
            "f32" => Some(NativeDtype::F32),
            "f16" => Some(NativeDtype::F16),
            "bf16" => Some(NativeDtype::Bf16),
            "q8_0" => Some(NativeDtype::Q8_0),
            "q4_0" => Some(NativeDtype::Q4_0),
            _ => None,
        };
        let file = match o {
            "shipped" => Some(NativeFile::Shipped),
            _ => Mix::parse(o).map(NativeFile::Mix),
        };
        match (dtype, file) {
            (Some(d), _) if spec.dtype.is_none() => spec.dtype = Some(d),
            (_, Some(file)) if spec.file == NativeFile::Checkpoint => spec.file = file,
            // Two dtypes, two files, or an unknown option.
            _ => return Err(bad(o)),
        }
    }
    // A mix runs as llama.cpp stored it: no other storage.
    if let (NativeFile::Mix(m), Some(_)) = (spec.file, spec.dtype) {
        let other = options.iter().find(|o| **o != m.as_str()).copied().unwrap_or_default();
        return Err(bad(other));
    }
    Ok(spec)
}

fn llama_cpp(options: &[&str], bad: impl Fn(&str) -> RegistryError) -> Result<LlamaCppSpec, RegistryError> {
    let mut spec = LlamaCppSpec { defaults: false, file: LlamaCppFile::F32 };
    let mut file_given = false;
    for &o in options {
        let file = match o {
            "defaults" if !spec.defaults => {
                spec.defaults = true;
                continue;
            }
            "f32" => LlamaCppFile::F32,
            "q8_0" => LlamaCppFile::Q8_0,
            "q4_0" => LlamaCppFile::Q4_0,
            "shipped" => LlamaCppFile::Shipped,
            _ => Mix::parse(o).map(LlamaCppFile::Mix).ok_or_else(|| bad(o))?,
        };
        if std::mem::replace(&mut file_given, true) {
            return Err(bad(o));
        }
        spec.file = file;
    }
    Ok(spec)
}

fn mock(options: &[&str], bad: impl Fn(&str) -> RegistryError) -> Result<MockSpec, RegistryError> {
    let mut spec = MockSpec::default();
    for &o in options {
        let (key, value) = o.split_once('=').ok_or_else(|| bad(o))?;
        let n: u64 = value.parse().map_err(|_| bad(o))?;
        match key {
            "fail-at" if spec.fail_at.is_none() => spec.fail_at = Some(n as usize),
            "panic-at" if spec.panic_at.is_none() => spec.panic_at = Some(n as usize),
            // At most 10 s a step: a stand-in for a runtime, not a way to stall a run for days.
            "delay-us" if spec.step_delay.is_none() && n <= 10_000_000 => {
                spec.step_delay = Some(Duration::from_micros(n))
            }
            _ => return Err(bad(o)),
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> SpecKind {
        RuntimeSpec::parse(s).unwrap().kind()
    }

    fn err(s: &str) -> String {
        RuntimeSpec::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn names_parse_into_what_they_mean() {
        let native = |file, dtype| SpecKind::Native(NativeSpec { file, dtype });
        assert_eq!(kind("native"), native(NativeFile::Checkpoint, None));
        assert_eq!(kind(" native:q8_0 "), native(NativeFile::Checkpoint, Some(NativeDtype::Q8_0)));
        assert_eq!(kind("native:shipped,f32"), native(NativeFile::Shipped, Some(NativeDtype::F32)));
        assert_eq!(kind("native:q4_k_m"), native(NativeFile::Mix(Mix::Q4KM), None));
        let llama = |defaults, file| SpecKind::LlamaCpp(LlamaCppSpec { defaults, file });
        assert_eq!(kind("llama-cpp"), llama(false, LlamaCppFile::F32));
        assert_eq!(kind("llama-cpp:defaults,q8_0"), llama(true, LlamaCppFile::Q8_0));
        assert_eq!(kind("llama-cpp:q8_0,defaults"), llama(true, LlamaCppFile::Q8_0));
        assert_eq!(kind("llama-cpp:iq4_xs"), llama(false, LlamaCppFile::Mix(Mix::IQ4XS)));
        assert_eq!(kind("candle:shipped"), SpecKind::Candle { shipped: true });
        assert_eq!(
            kind("mock:fail-at=9,delay-us=200"),
            SpecKind::Mock(MockSpec { fail_at: Some(9), panic_at: None, step_delay: Some(Duration::from_micros(200)) })
        );
        assert_eq!(RuntimeSpec::parse(" llama-cpp:defaults ").unwrap().to_string(), "llama-cpp:defaults");
    }

    #[test]
    fn bad_names_and_options_are_named() {
        assert_eq!(err("tensorrt"), RegistryError::Unknown { name: "tensorrt".into() }.to_string());
        for (spec, option) in [
            ("native:bogus", "bogus"),
            ("native:q8_0,q4_0", "q4_0"),
            ("native:q4_k_m,f16", "f16"),
            ("native:shipped,q4_k_m", "q4_k_m"),
            ("onnx:fast", "fast"),
            ("candle:f16", "f16"),
            ("candle:shipped,shipped", "shipped"),
            ("llama-cpp:q9_9", "q9_9"),
            ("llama-cpp:q8_0,q4_0", "q4_0"),
            ("llama-cpp:defaults,defaults", "defaults"),
            ("mock:speed=3", "speed=3"),
            ("mock:fail-at=-1", "fail-at=-1"),
            ("mock:delay-us=100000000000", "delay-us=100000000000"),
            ("mock:fail-at=1,fail-at=2", "fail-at=2"),
        ] {
            assert!(err(spec).contains(&format!("option '{option}' is not known")), "{spec}: {}", err(spec));
        }
    }

    #[test]
    fn lists_split_at_runtime_names_only() {
        let names = |l: &str| -> Vec<String> {
            RuntimeSpec::parse_list(l).unwrap().iter().map(|s| s.name().to_owned()).collect()
        };
        assert_eq!(names("llama-cpp:defaults,q8_0,native"), ["llama-cpp:defaults,q8_0", "native"]);
        assert_eq!(
            names(" mock , mock:fail-at=9,delay-us=200 ,candle"),
            ["mock", "mock:fail-at=9,delay-us=200", "candle"]
        );
        assert_eq!(names("native:q8_0,onnx,candle:shipped"), ["native:q8_0", "onnx", "candle:shipped"]);
        assert!(RuntimeSpec::parse_list("native,q8_0").unwrap_err().to_string().starts_with("unknown runtime 'q8_0'"));
        assert!(RuntimeSpec::parse_list("native:q8_0,tensorrt").unwrap_err().to_string().contains("'tensorrt'"));
        assert_eq!(RuntimeSpec::parse_list(" , ").unwrap_err().to_string(), "no runtime given");
    }

    #[test]
    fn parity_checks_and_same_file_pairs_follow_the_spec() {
        let check = |s: &str| RuntimeSpec::parse(s).unwrap().parity_check();
        assert_eq!(check("native"), ParityCheck::Elementwise);
        assert_eq!(check("native:shipped,f32"), ParityCheck::Elementwise);
        assert_eq!(check("native:shipped"), ParityCheck::ShippedTeacherForced);
        assert_eq!(check("native:q8_0"), ParityCheck::TeacherForced);
        assert_eq!(check("llama-cpp:defaults,q8_0"), ParityCheck::TeacherForced);
        assert_eq!(check("llama-cpp:defaults"), ParityCheck::LlamaCppDefaults);
        assert_eq!(check("llama-cpp"), ParityCheck::LlamaCppElementwise);
        for m in Mix::ALL {
            let (n, l) = (format!("native:{}", m.as_str()), format!("llama-cpp:{}", m.as_str()));
            let want = match m {
                Mix::F16 => ParityCheck::TeacherForcedF16,
                Mix::BF16 => ParityCheck::TeacherForcedBf16,
                Mix::IQ4NL | Mix::IQ4XS => ParityCheck::TeacherForcedQ4_0,
                _ => ParityCheck::TeacherForcedMix(m),
            };
            assert_eq!((check(&n), check(&l)), (want, want), "{m:?}");
            if let ParityCheck::TeacherForcedMix(_) = want {
                assert_eq!(want.as_str(), format!("teacher_forced ({})", m.as_str()));
            }
            let pair = |s: &str| RuntimeSpec::parse(s).unwrap().same_file_setting();
            assert_eq!((pair(&n), pair(&l)), (Some(SameFile::Mix(m)), Some(SameFile::Mix(m))));
        }
        // The manifest's `tolerances.mixes` keys are the mixes judged by their own tolerance.
        let own: Vec<&str> = Mix::ALL
            .into_iter()
            .filter(|m| matches!(m.parity_check(), ParityCheck::TeacherForcedMix(_)))
            .map(Mix::as_str)
            .collect();
        assert_eq!(own, nano_vllm_bundle::MixTolerance::MIXES);
        let pair = |s: &str| RuntimeSpec::parse(s).unwrap().same_file_setting();
        assert_eq!(pair("llama-cpp:defaults,q8_0"), None);
        assert_eq!(pair("native:shipped,f32"), None);
        assert_eq!(SameFile::all().map(SameFile::as_str).collect::<Vec<_>>().len(), 12);
    }
}
