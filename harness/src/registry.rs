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
        "runtime '{name}': option '{option}' is not known (mock: fail-at=N, delay-us=N; llama-cpp: defaults, q8_0, f32)"
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
        "native" => {
            let options = nano_vllm_native::NativeOptions { threads: settings.threads, ..Default::default() };
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
            match KNOWN.iter().find(|(known, _)| *known == name) {
                Some((_, Some(feature))) => {
                    Err(RegistryError::NotCompiledIn { name: name.to_owned(), feature: (*feature).to_owned() })
                }
                _ => Err(RegistryError::Unknown { name: name.to_owned() }),
            }
        }
    }
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
