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
    name == "mock" || (name == "native" && cfg!(feature = "native"))
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
        #[cfg(feature = "native")]
        "native" => {
            let options = nano_vllm_native::NativeOptions { threads: settings.threads, ..Default::default() };
            Ok(Box::new(
                nano_vllm_native::NativeRuntime::from_bundle(bundle, &options).map_err(|e| load_err(e.into()))?,
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
        let err = build("llama-cpp", &bundle, &RuntimeSettings::default()).err().unwrap().to_string();
        assert_eq!(err, "runtime 'llama-cpp' is not compiled in: build with --features llama-cpp");
        assert!(build("mock", &bundle, &RuntimeSettings::default()).is_ok());
    }
}
