//! Runtimes by name. The one place that knows which runtimes are compiled in: a known runtime built without its
//! feature is a "not compiled in" error naming the feature, an unknown name lists the available ones.

use nano_vllm_bundle::Bundle;
use nano_vllm_engine::{MockRuntime, Runtime};

/// Every runtime the project knows, with the cargo feature that compiles it in.
pub const KNOWN: [(&str, Option<&str>); 5] = [
    ("native", Some("native")),
    ("onnx", Some("onnx")),
    ("candle", Some("candle")),
    ("llama-cpp", Some("llama-cpp")),
    ("mock", None),
];

/// Settings shared by every runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    /// Worker threads (0: one per core).
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("runtime '{name}' is not compiled in: build with --features {feature}")]
    NotCompiledIn { name: String, feature: String },
    #[error(
        "runtime '{name}': option '{option}' is not known (native: f32, f16, bf16; mock: fail-at=N, delay-us=N; llama-cpp: defaults, q8_0, f32)"
    )]
    BadOption { name: String, option: String },
    #[error("unknown runtime '{name}'; available: {}", available().join(", "))]
    Unknown { name: String },
    #[error("runtime '{name}' failed to load {}: {source}", bundle.display())]
    Load {
        name: String,
        bundle: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The runtimes compiled into this build.
pub fn available() -> Vec<&'static str> {
    KNOWN.iter().filter(|(name, _)| compiled_in(name)).map(|(name, _)| *name).collect()
}

fn compiled_in(name: &str) -> bool {
    const COMPILED: [(&str, bool); 5] = [
        ("native", cfg!(feature = "native")),
        ("onnx", cfg!(feature = "onnx")),
        ("candle", cfg!(feature = "candle")),
        ("llama-cpp", cfg!(feature = "llama-cpp")),
        ("mock", true),
    ];
    COMPILED.iter().any(|&(n, on)| n == name && on)
}

/// The model-free mock, with options: `mock`, `mock:fail-at=N` (its N-th step fails), `mock:delay-us=N` (each step
/// sleeps N microseconds), combinable as `mock:fail-at=9,delay-us=200`.
fn mock(spec: &str, vocab: usize) -> Result<MockRuntime, RegistryError> {
    let mut m = MockRuntime::new(vocab);
    let Some(options) = spec.strip_prefix("mock:") else { return Ok(m) };
    for opt in options.split(',') {
        let bad = || RegistryError::BadOption { name: spec.to_owned(), option: opt.to_owned() };
        let (key, value) = opt.split_once('=').ok_or_else(bad)?;
        let n: u64 = value.parse().map_err(|_| bad())?;
        m = match key {
            "fail-at" => m.fail_at_step(n as usize),
            "delay-us" => m.step_delay(std::time::Duration::from_micros(n)),
            _ => return Err(bad()),
        };
    }
    Ok(m)
}

/// llama.cpp's settings: `llama-cpp` is parity mode (F32 KV cache, flash attention off, f32 GGUF); options
/// `llama-cpp:defaults` (F16 KV, flash attention: llama.cpp's own defaults) and `llama-cpp:q8_0` (the Q8_0 GGUF)
/// combine as `llama-cpp:defaults,q8_0`.
#[cfg(feature = "llama-cpp")]
fn llama_cpp_options(
    spec: &str,
    settings: &RuntimeSettings,
) -> Result<nano_vllm_llama_cpp::LlamaCppOptions, RegistryError> {
    use nano_vllm_llama_cpp::{LlamaCppOptions, Weights};
    let mut o = LlamaCppOptions::parity();
    for opt in spec.strip_prefix("llama-cpp:").map(|s| s.split(',').collect::<Vec<_>>()).unwrap_or_default() {
        match opt {
            "defaults" => o = LlamaCppOptions { weights: o.weights, ..LlamaCppOptions::llama_defaults() },
            "q8_0" => o.weights = Weights::Q8_0,
            "f32" => o.weights = Weights::F32,
            _ => return Err(RegistryError::BadOption { name: spec.to_owned(), option: opt.to_owned() }),
        }
    }
    o.threads = settings.threads;
    Ok(o)
}

/// Builds the runtime `name` for `bundle`.
pub fn build(name: &str, bundle: &Bundle, settings: &RuntimeSettings) -> Result<Box<dyn Runtime>, RegistryError> {
    let load_err = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Load {
        name: name.to_owned(),
        bundle: bundle.dir().to_path_buf(),
        source,
    };
    match name {
        "mock" => Ok(Box::new(MockRuntime::new(bundle.config().vocab_size))),
        spec if spec.starts_with("mock:") => Ok(Box::new(mock(spec, bundle.config().vocab_size)?)),
        #[cfg(feature = "native")]
        spec if spec == "native" || spec.starts_with("native:") => {
            use nano_vllm_native::WeightDtype;
            let weight_dtype = match spec.strip_prefix("native:") {
                None | Some("f32") => WeightDtype::F32,
                Some("f16") => WeightDtype::F16,
                Some("bf16") => WeightDtype::Bf16,
                Some(option) => {
                    return Err(RegistryError::BadOption { name: spec.to_owned(), option: option.to_owned() });
                }
            };
            let options = nano_vllm_native::NativeOptions { threads: settings.threads, weight_dtype };
            Ok(Box::new(
                nano_vllm_native::NativeRuntime::from_bundle(bundle, &options).map_err(|e| load_err(e.into()))?,
            ))
        }
        #[cfg(feature = "onnx")]
        "onnx" => {
            let options = nano_vllm_onnx::OnnxOptions { intra_threads: settings.threads, ..Default::default() };
            Ok(Box::new(nano_vllm_onnx::OnnxRuntime::from_bundle(bundle, &options).map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "candle")]
        "candle" => {
            let threads = (settings.threads > 0).then_some(settings.threads);
            let options = nano_vllm_candle::CandleOptions { threads };
            Ok(Box::new(
                nano_vllm_candle::CandleRuntime::from_bundle(bundle, &options).map_err(|e| load_err(e.into()))?,
            ))
        }
        #[cfg(feature = "llama-cpp")]
        spec if spec == "llama-cpp" || spec.starts_with("llama-cpp:") => {
            let options = llama_cpp_options(spec, settings)?;
            Ok(Box::new(
                nano_vllm_llama_cpp::LlamaCppRuntime::from_bundle(bundle, &options).map_err(|e| load_err(e.into()))?,
            ))
        }
        _ => {
            let _ = (settings, load_err);
            let base = name.split(':').next().unwrap_or(name);
            match KNOWN.iter().find(|(known, _)| *known == base) {
                Some((_, Some(feature))) => {
                    Err(RegistryError::NotCompiledIn { name: name.to_owned(), feature: (*feature).to_owned() })
                }
                _ => Err(RegistryError::Unknown { name: name.to_owned() }),
            }
        }
    }
}

/// Thread settings candle 0.11 needs to be measured fairly, to set (before any thread starts) where absent: without
/// `RAYON_NUM_THREADS` every matmul re-reads /proc/cpuinfo (~30 us), and its element-wise pool spins against the
/// step's threads unless `CANDLE_NUM_THREADS` is 1 (see runtimes/candle). Only where absent, so a user can measure
/// candle's defaults by setting them.
pub fn thread_env_defaults() -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    [("RAYON_NUM_THREADS", cores), ("CANDLE_NUM_THREADS", "1".to_owned())]
        .into_iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .collect()
}

/// How `nano-vllm parity` judges a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParityCheck {
    /// Float32 settings: every logit within the bundle's `f32` tolerance (max |diff|, argmax agreement), in every
    /// engine situation, greedy continuations identical.
    Elementwise,
    /// llama.cpp on the f32 GGUF: as [`ParityCheck::Elementwise`] with the manifest's `llama_cpp_f32` tolerance
    /// (its documented override where ggml differs, e.g. GPT-2's f16 GELU table; else `f32`).
    LlamaCppElementwise,
    /// Lossy settings (quantized or f16/bf16 weights, an f16 KV cache): teacher forced on the reference tokens, held to the
    /// bundle's `q8_0` distribution tolerance (mean KL, top-1 agreement); the situations still run and report.
    TeacherForced,
}

impl ParityCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elementwise => "elementwise",
            Self::LlamaCppElementwise => "elementwise (llama_cpp_f32)",
            Self::TeacherForced => "teacher_forced",
        }
    }
}

/// How parity judges the runtime `name` (see [`ParityCheck`]).
pub fn parity_check(name: &str) -> ParityCheck {
    if matches!(name, "native:f16" | "native:bf16") {
        return ParityCheck::TeacherForced;
    }
    match name.strip_prefix("llama-cpp") {
        Some(options) if options.contains("q8_0") || options.contains("defaults") => ParityCheck::TeacherForced,
        Some(_) => ParityCheck::LlamaCppElementwise,
        None => ParityCheck::Elementwise,
    }
}

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

/// The tokenizer of runtime `name` when it brings its own (llama.cpp: the vocabulary of the GGUF file it runs, f32 or
/// Q8_0), labelled with that file; `None` when the runtime uses the bundle's `tokenizer.json` (or is not compiled in).
pub fn runtime_tokenizer(name: &str, bundle: &Bundle) -> Option<(String, LoadedTokenizer)> {
    #[cfg(feature = "llama-cpp")]
    if name == "llama-cpp" || name.starts_with("llama-cpp:") {
        let options = match llama_cpp_options(name, &RuntimeSettings::default()) {
            Ok(o) => o,
            Err(e) => return Some((format!("llama-cpp ({name})"), Err(e))),
        };
        let gguf = match options.weights {
            nano_vllm_llama_cpp::Weights::F32 => bundle.gguf_f32(),
            nano_vllm_llama_cpp::Weights::Q8_0 => bundle.gguf_q8_0(),
        };
        let file = gguf.file_name().map_or_else(|| gguf.display().to_string(), |f| f.to_string_lossy().into_owned());
        let label = format!("llama-cpp ({file} vocabulary)");
        let loaded = nano_vllm_llama_cpp::LlamaCppRuntime::from_bundle(bundle, &options)
            .map(|r| Box::new(r) as Box<dyn RuntimeTokenizer>)
            .map_err(|e| RegistryError::Load {
                name: name.to_owned(),
                bundle: bundle.dir().to_path_buf(),
                source: e.into(),
            });
        return Some((label, loaded));
    }
    let _ = (name, bundle);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_not_compiled_in_runtimes_are_explained() {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        let err = build("tensorrt", &bundle, &RuntimeSettings::default()).err().unwrap().to_string();
        assert!(err.starts_with("unknown runtime 'tensorrt'; available: ") && err.contains("mock"), "{err}");
        #[cfg(not(feature = "llama-cpp"))]
        {
            let err = build("llama-cpp", &bundle, &RuntimeSettings::default()).err().unwrap().to_string();
            assert_eq!(err, "runtime 'llama-cpp' is not compiled in: build with --features llama-cpp");
        }
        assert!(build("mock", &bundle, &RuntimeSettings::default()).is_ok());
        assert!(build("mock:fail-at=3,delay-us=10", &bundle, &RuntimeSettings::default()).is_ok());
        let err = build("mock:speed=3", &bundle, &RuntimeSettings::default()).err().unwrap().to_string();
        assert!(err.contains("option 'speed=3'"), "{err}");
    }
}
