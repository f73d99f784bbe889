//! Runtimes by name. The one place that knows which runtimes are compiled in: a known runtime built without its
//! feature is a "not compiled in" error naming the feature, an unknown name lists the available ones. Also the one
//! place that knows which of a model's files each runtime loads (see [`build`]).

use std::path::PathBuf;

use nano_vllm_engine::{MockRuntime, Runtime};

use crate::model::ModelSource;
pub use crate::parity_check::ParityCheck;
pub use crate::runtime_spec::{
    LlamaCppFile, LlamaCppSpec, Mix, MockSpec, NativeDtype, NativeFile, NativeSpec, RuntimeSpec, SameFile, SpecKind,
};
pub use crate::runtime_tokenizer::{LoadedTokenizer, RuntimeTokenizer, runtime_tokenizer};

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
    /// The engine's `max_model_len`, for runtimes that size a per-sequence cache when they load (llama.cpp's
    /// context); `None`: the model's context length.
    pub max_model_len: Option<usize>,
    /// The engine's `max_num_seqs` and `max_num_batched_tokens`, so that a runtime that sizes its own limits
    /// (llama.cpp's `n_seq_max`, `n_batch`) can run every step the engine schedules; `None`: the runtime's defaults.
    pub max_num_seqs: Option<usize>,
    pub max_num_batched_tokens: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("runtime '{name}' is not compiled in: build with --features {feature}")]
    NotCompiledIn { name: String, feature: String },
    #[error(
        "runtime '{name}': option '{option}' is not known (native: one of f32, f16, bf16, q8_0, q4_0, and shipped, or \
         one of llama.cpp's files q2_k, q3_k_m, q4_k_m, q5_k_m, q6_k, iq4_nl, iq4_xs, mostly_f16, mostly_bf16; candle: \
         shipped; mock: fail-at=N, \
         panic-at=N, delay-us=N; llama-cpp: defaults, and one of q8_0, q4_0, f32, shipped or a mix)"
    )]
    BadOption { name: String, option: String },
    #[error("runtime '{name}' needs {needs}, which {} does not have", model.display())]
    NoFile { name: String, needs: String, model: PathBuf },
    #[error("unknown runtime '{name}'; available: {}", available().join(", "))]
    Unknown { name: String },
    #[error("no runtime given")]
    NoRuntime,
    #[error("runtime '{name}' failed to load {}: {source}", model.display())]
    Load {
        name: String,
        model: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The runtimes compiled into this build.
pub fn available() -> Vec<&'static str> {
    KNOWN.iter().filter(|(name, _)| compiled_in(name)).map(|(name, _)| *name).collect()
}

/// What `all` means, for every command: each compiled-in runtime but the mock, and llama.cpp on the Q8_0 GGUF too.
pub fn default_runtimes() -> Vec<RuntimeSpec> {
    let mut names: Vec<&'static str> = available().into_iter().filter(|r| *r != "mock").collect();
    if compiled_in("native") {
        names.extend(["native:q8_0", "native:q4_0", "native:f16", "native:bf16"]);
    }
    if compiled_in("llama-cpp") {
        names.extend(["llama-cpp:q8_0", "llama-cpp:q4_0", "llama-cpp:defaults"]);
        // llama.cpp's Q4_K_M of the bundle, run by both.
        if compiled_in("native") {
            names.push("native:q4_k_m");
        }
        names.push("llama-cpp:q4_k_m");
    }
    names.into_iter().map(RuntimeSpec::known).collect()
}

/// What `all` means for `model`: the runtimes that can load its files. A bundle: [`default_runtimes`], and with a
/// shipped GGUF the runtimes that read it (`native:shipped` and `llama-cpp:shipped` run it as stored,
/// `candle:shipped` dequantizes it). An HF directory: native, candle, and onnx when it has `model.onnx`. A GGUF: llama.cpp, and
/// native and candle for the architectures they implement (Llama, Qwen2, Qwen3, Gemma 3, Phi-3, GPT-2).
pub fn default_runtimes_for(model: &ModelSource) -> Vec<RuntimeSpec> {
    use crate::model::ModelKind;
    let hf_arch = |arch: &str| matches!(arch, "llama" | "qwen2" | "qwen3" | "gemma3" | "phi3" | "gpt2");
    let mut names = match model.kind() {
        ModelKind::Bundle => default_runtimes(),
        ModelKind::HfDir => {
            let mut names = vec!["native", "candle"];
            if model.onnx().is_some() {
                names.push("onnx");
            }
            names.into_iter().filter(|n| compiled_in(n)).map(RuntimeSpec::known).collect()
        }
        ModelKind::Gguf => {
            let arch = model.gguf().and_then(|f| f.str("general.architecture").ok()).unwrap_or("");
            ["native", "candle", "llama-cpp"]
                .into_iter()
                .filter(|n| compiled_in(n) && (*n == "llama-cpp" || hf_arch(arch)))
                .map(RuntimeSpec::known)
                .collect()
        }
    };
    let left_out = left_out_of_all(model);
    names.retain(|n| !left_out.iter().any(|(out, _)| out == n));
    if model.bundle().is_some_and(|b| b.gguf_shipped().is_some()) {
        for (base, shipped) in
            [("native", "native:shipped"), ("candle", "candle:shipped"), ("llama-cpp", "llama-cpp:shipped")]
        {
            if compiled_in(base) {
                names.push(RuntimeSpec::known(shipped));
            }
        }
    }
    names
}

/// Lossy settings that `all` leaves out for `model`, each with the reason: a bundle whose manifest lacks the tolerance
/// that judges the setting (made by a generator before it). Named explicitly, such a setting is an error saying so;
/// callers print these so that a setting never drops out of a report unseen.
pub fn left_out_of_all(model: &ModelSource) -> Vec<(RuntimeSpec, String)> {
    let Some(b) = model.bundle() else { return Vec::new() };
    let t = b.tolerances();
    [
        ("native:f16", "f16", t.f16.is_none()),
        ("native:bf16", "bf16", t.bf16.is_none()),
        ("llama-cpp:defaults", "llama_cpp_defaults", t.llama_cpp_defaults.is_none()),
    ]
    .into_iter()
    .filter(|&(name, _, lacks)| lacks && default_runtimes().iter().any(|n| n.name() == name))
    .map(|(name, key, _)| {
        let reason = format!(
            "the manifest of {} has no `tolerances.{key}` to judge it (a bundle made by an older fixtures/generate.py: \
             regenerate it, or add the measured figure with fixtures/merge_measured.py)",
            b.name()
        );
        (RuntimeSpec::known(name), reason)
    })
    .collect()
}

/// A `--runtime` value: `all` (the given list, e.g. [`default_runtimes_for`]) or runtimes separated by commas
/// ([`RuntimeSpec::parse_list`]). A name that is unknown, not compiled in or has an unknown option is an error here,
/// before anything runs.
pub fn runtime_list(spec: &str, all: &[RuntimeSpec]) -> Result<Vec<RuntimeSpec>, RegistryError> {
    let specs = if spec.trim() == "all" { all.to_vec() } else { RuntimeSpec::parse_list(spec)? };
    if specs.is_empty() {
        return Err(RegistryError::NoRuntime);
    }
    for spec in &specs {
        check_compiled_in(spec)?;
    }
    Ok(specs)
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

fn check_compiled_in(spec: &RuntimeSpec) -> Result<(), RegistryError> {
    match KNOWN.iter().find(|(known, _)| *known == spec.base()) {
        Some((base, Some(feature))) if !compiled_in(base) => {
            Err(RegistryError::NotCompiledIn { name: spec.name().to_owned(), feature: (*feature).to_owned() })
        }
        _ => Ok(()),
    }
}

/// llama.cpp's settings: parity mode (F32 KV cache, flash attention off, f32 GGUF) unless `defaults` (F16 KV,
/// flash attention: llama.cpp's own defaults), on the file the spec names.
#[cfg(feature = "llama-cpp")]
pub(crate) fn llama_cpp_options(
    spec: LlamaCppSpec,
    settings: &RuntimeSettings,
) -> nano_vllm_llama_cpp::LlamaCppOptions {
    use nano_vllm_llama_cpp::{LlamaCppOptions, Quantization, Weights};
    let mut o = if spec.defaults { LlamaCppOptions::llama_defaults() } else { LlamaCppOptions::parity() };
    o.weights = match spec.file {
        LlamaCppFile::F32 => Weights::F32,
        LlamaCppFile::Q8_0 => Weights::Q8_0,
        LlamaCppFile::Shipped => Weights::Shipped,
        LlamaCppFile::Q4_0 => Weights::Quantized(Quantization::Q4_0Pure),
        LlamaCppFile::Mix(m) => Weights::Quantized(llama_mix(m)),
    };
    o.threads = settings.threads;
    o.ctx_per_seq = settings.max_model_len;
    // Its best configuration for the engine's steps: a sequence id for every sequence the engine may schedule (up to
    // llama.cpp's limit; the report shows a cap), and a batch as large as a step.
    if let Some(seqs) = settings.max_num_seqs {
        o.n_seq_max = seqs.clamp(1, nano_vllm_llama_cpp::MAX_SEQUENCES);
    }
    if let Some(tokens) = settings.max_num_batched_tokens {
        o.n_batch = o.n_batch.max(tokens);
    }
    o
}

/// llama.cpp's quantization of a mix (the same names: a test holds them together).
#[cfg(feature = "llama-cpp")]
fn llama_mix(m: Mix) -> nano_vllm_llama_cpp::Quantization {
    use nano_vllm_llama_cpp::Quantization;
    match m {
        Mix::Q2K => Quantization::Q2K,
        Mix::Q3KM => Quantization::Q3KM,
        Mix::Q4KM => Quantization::Q4KM,
        Mix::Q5KM => Quantization::Q5KM,
        Mix::Q6K => Quantization::Q6K,
        Mix::IQ4NL => Quantization::IQ4NL,
        Mix::IQ4XS => Quantization::IQ4XS,
        Mix::F16 => Quantization::F16,
        Mix::BF16 => Quantization::BF16,
    }
}

/// The GGUF llama.cpp runs for `model`: a bundle's f32, Q8_0 or shipped file, llama.cpp's quantization of the
/// bundle's f32 file (`q4_0`, `q4_k_m`), or a GGUF model itself (any option but `q8_0` runs it as it is).
#[cfg(feature = "llama-cpp")]
pub(crate) fn llama_cpp_file(
    name: &str,
    model: &ModelSource,
    weights: nano_vllm_llama_cpp::Weights,
) -> Result<PathBuf, RegistryError> {
    use nano_vllm_llama_cpp::Weights;
    let no_file =
        |needs: &str| RegistryError::NoFile { name: name.into(), needs: needs.into(), model: model.path().into() };
    match (model.bundle(), weights) {
        (Some(b), Weights::F32) => Ok(b.gguf_f32()),
        (Some(b), Weights::Q8_0) => Ok(b.gguf_q8_0()),
        (_, Weights::Shipped) => model.gguf_shipped().ok_or_else(|| no_file("a shipped GGUF file")),
        (None, Weights::F32) => model.gguf_shipped().ok_or_else(|| no_file("a GGUF file")),
        (None, Weights::Q8_0) => Err(no_file("a bundle's Q8_0 GGUF (model.q8_0.gguf)")),
        (_, Weights::Quantized(q)) => crate::quantized::llama_quantized(model, q).map_err(|e| RegistryError::Load {
            name: name.into(),
            model: model.path().into(),
            source: e.into(),
        }),
    }
}

/// The file llama.cpp's quantizer makes of `model` for a mix spec (`native:<mix>`, `llama-cpp:<mix>`), made if absent;
/// `None` for any other spec.
pub fn mix_file(spec: &RuntimeSpec, model: &ModelSource) -> Option<Result<PathBuf, String>> {
    let mix = match spec.kind() {
        SpecKind::Native(NativeSpec { file: NativeFile::Mix(m), .. })
        | SpecKind::LlamaCpp(LlamaCppSpec { file: LlamaCppFile::Mix(m), .. }) => m,
        _ => return None,
    };
    #[cfg(feature = "llama-cpp")]
    return Some(crate::quantized::llama_quantized(model, llama_mix(mix)));
    #[cfg(not(feature = "llama-cpp"))]
    {
        let _ = model;
        let mix = mix.as_str();
        Some(Err(format!("llama.cpp's {mix} is made by its quantizer: build with --features llama-cpp to make it")))
    }
}

/// The `mix` file of `model` made by llama.cpp's quantizer (needs the llama-cpp feature).
#[cfg(feature = "native")]
fn native_llama_mix(model: &ModelSource, mix: Mix) -> Result<PathBuf, String> {
    #[cfg(feature = "llama-cpp")]
    return crate::quantized::llama_quantized(model, llama_mix(mix));
    #[cfg(not(feature = "llama-cpp"))]
    {
        let _ = model;
        let mix = mix.as_str();
        Err(format!("native:{mix} runs llama.cpp's {mix} of the bundle: build with --features llama-cpp to make it"))
    }
}

/// The HF checkpoint a native or candle runtime loads: with `shipped`, the shipped GGUF (dequantized); else the HF
/// directory, or the GGUF file a GGUF model is.
#[cfg(any(feature = "native", feature = "candle"))]
fn hf_or_gguf(name: &str, model: &ModelSource, shipped: bool) -> Result<PathBuf, RegistryError> {
    let file = if shipped { model.gguf_shipped() } else { model.hf_dir().or_else(|| model.gguf_shipped()) };
    file.ok_or_else(|| RegistryError::NoFile {
        name: name.into(),
        needs: if shipped { "a shipped GGUF file".into() } else { "an HF directory or a GGUF file".into() },
        model: model.path().into(),
    })
}

/// Builds the runtime `spec` names for `model`: each runtime loads the file it reads (native and candle an HF
/// directory or a GGUF, onnx the ONNX graph, llama.cpp a GGUF), and says which file it needs when the model has none.
pub fn build(
    spec: &RuntimeSpec,
    model: &ModelSource,
    settings: &RuntimeSettings,
) -> Result<Box<dyn Runtime>, RegistryError> {
    check_compiled_in(spec)?;
    let name = spec.name();
    let load_err = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Load {
        name: name.to_owned(),
        model: model.path().to_path_buf(),
        source,
    };
    let vocab_size = model.info().vocab_size;
    match spec.kind() {
        SpecKind::Mock(m) => {
            let mut mock = MockRuntime::new(vocab_size);
            if let Some(n) = m.fail_at {
                mock = mock.fail_at_step(n);
            }
            if let Some(n) = m.panic_at {
                mock = mock.panic_at_step(n);
            }
            if let Some(d) = m.step_delay {
                mock = mock.step_delay(d);
            }
            Ok(Box::new(mock))
        }
        #[cfg(feature = "native")]
        SpecKind::Native(NativeSpec { file, dtype }) => {
            use nano_vllm_native::WeightDtype;
            let path = match file {
                // llama.cpp's quantization of the bundle (its quantizer), run as stored: the file llama-cpp:<mix>
                // runs, refused where the bundle's config says what a GGUF cannot.
                NativeFile::Mix(mix) => {
                    if let Some(reason) = model.bundle().and_then(|b| b.beyond_gguf(settings.max_model_len)) {
                        return Err(load_err(reason.into()));
                    }
                    native_llama_mix(model, mix).map_err(|e| load_err(e.into()))?
                }
                NativeFile::Shipped => hf_or_gguf(name, model, true)?,
                NativeFile::Checkpoint => hf_or_gguf(name, model, false)?,
            };
            let weight_dtype = match dtype {
                // A GGUF runs as stored (its block types); an HF directory in f32.
                None if path.is_file() => WeightDtype::Stored,
                None | Some(NativeDtype::F32) => WeightDtype::F32,
                Some(NativeDtype::F16) => WeightDtype::F16,
                Some(NativeDtype::Bf16) => WeightDtype::Bf16,
                Some(NativeDtype::Q8_0) => WeightDtype::Q8_0,
                Some(NativeDtype::Q4_0) => WeightDtype::Q4_0,
            };
            let options = nano_vllm_native::NativeOptions { threads: settings.threads, weight_dtype };
            Ok(Box::new(nano_vllm_native::NativeRuntime::load(&path, &options).map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "onnx")]
        SpecKind::Onnx => {
            let options = nano_vllm_onnx::OnnxOptions { intra_threads: settings.threads, ..Default::default() };
            let runtime = match model.bundle() {
                Some(b) => nano_vllm_onnx::OnnxRuntime::from_bundle(b, &options),
                None => {
                    let path = model.onnx().ok_or_else(|| RegistryError::NoFile {
                        name: name.into(),
                        needs: "an ONNX graph with a KV cache (model.onnx in an HF directory)".into(),
                        model: model.path().into(),
                    })?;
                    nano_vllm_onnx::OnnxRuntime::load(&path, &options)
                }
            };
            Ok(Box::new(runtime.map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "candle")]
        SpecKind::Candle { shipped } => {
            let path = hf_or_gguf(name, model, shipped)?;
            let threads = (settings.threads > 0).then_some(settings.threads);
            let options = nano_vllm_candle::CandleOptions { threads };
            Ok(Box::new(nano_vllm_candle::CandleRuntime::load(&path, &options).map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "llama-cpp")]
        SpecKind::LlamaCpp(llama) => {
            let options = llama_cpp_options(llama, settings);
            let quantized = matches!(options.weights, nano_vllm_llama_cpp::Weights::Quantized(_));
            let runtime = match model.bundle() {
                Some(b) if !quantized => nano_vllm_llama_cpp::LlamaCppRuntime::from_bundle(b, &options),
                // llama.cpp's quantization of the bundle's f32 GGUF: the bundle's config, checked as from_bundle does.
                Some(b) => {
                    nano_vllm_llama_cpp::LlamaCppRuntime::check_bundle_config(b, &options)
                        .map_err(|e| load_err(e.into()))?;
                    nano_vllm_llama_cpp::LlamaCppRuntime::load(llama_cpp_file(name, model, options.weights)?, &options)
                }
                None => {
                    nano_vllm_llama_cpp::LlamaCppRuntime::load(llama_cpp_file(name, model, options.weights)?, &options)
                }
            };
            Ok(Box::new(runtime.map_err(|e| load_err(e.into()))?))
        }
        // Not compiled in: refused by check_compiled_in above.
        #[allow(unreachable_patterns)]
        _ => {
            let _ = (settings, load_err);
            Err(RegistryError::NotCompiledIn { name: name.to_owned(), feature: spec.base().to_owned() })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option names (needed without llama.cpp compiled in) are llama.cpp's mixes, in its order.
    #[cfg(feature = "llama-cpp")]
    #[test]
    fn the_mix_options_are_llama_cpp_s_mixes() {
        let names: Vec<&str> = nano_vllm_llama_cpp::Quantization::MIXES.iter().map(|q| q.as_str()).collect();
        assert_eq!(names, Mix::ALL.map(Mix::as_str));
        assert!(Mix::ALL.iter().all(|&m| llama_mix(m).as_str() == m.as_str()));
    }

    #[test]
    fn unknown_and_not_compiled_in_runtimes_are_explained() {
        let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
        let build = |s: &str| -> Result<Box<dyn Runtime>, RegistryError> {
            build(&RuntimeSpec::parse(s)?, &bundle, &RuntimeSettings::default())
        };
        let err = build("tensorrt").err().unwrap().to_string();
        assert!(err.starts_with("unknown runtime 'tensorrt'; available: ") && err.contains("mock"), "{err}");
        #[cfg(not(feature = "llama-cpp"))]
        {
            let err = build("llama-cpp").err().unwrap().to_string();
            assert_eq!(err, "runtime 'llama-cpp' is not compiled in: build with --features llama-cpp");
        }
        assert!(build("mock").is_ok());
        assert!(build("mock:fail-at=3,delay-us=10").is_ok());
        let err = build("mock:speed=3").err().unwrap().to_string();
        assert!(err.contains("option 'speed=3'"), "{err}");
    }

    #[test]
    fn runtime_lists_name_what_is_wrong_before_anything_runs() {
        let all = default_runtimes();
        assert!(!all.iter().any(|r| r.base() == "mock"));
        assert_eq!(runtime_list("all", &all).unwrap(), all);
        let names = |l| runtime_list(l, &all).unwrap().iter().map(|s| s.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(" mock , mock:delay-us=5 "), ["mock", "mock:delay-us=5"]);
        assert!(runtime_list("mock,native:bogus", &all).unwrap_err().to_string().contains("option 'bogus'"));
        assert_eq!(runtime_list(" , ", &all).unwrap_err().to_string(), "no runtime given");
        assert!(runtime_list("mock,tensorrt", &all).unwrap_err().to_string().starts_with("unknown runtime 'tensorrt'"));
    }

    #[test]
    fn all_leaves_out_settings_the_manifest_cannot_judge_and_says_why() {
        let src = nano_vllm_bundle::fixtures_dir().join("tiny-llama");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let manifest = dir.path().join("manifest.json");
        let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        m["tolerances"].as_object_mut().unwrap().remove("bf16");
        std::fs::write(&manifest, m.to_string()).unwrap();
        let model = ModelSource::from(nano_vllm_bundle::Bundle::open(dir.path()).unwrap());
        let all = default_runtimes_for(&model);
        let left = left_out_of_all(&model);
        if cfg!(feature = "native") {
            assert!(!all.iter().any(|r| r == "native:bf16") && all.iter().any(|r| r == "native:f16"), "{all:?}");
            assert_eq!(left.len(), 1, "{left:?}");
            assert_eq!(left[0].0, "native:bf16");
            assert!(left[0].1.contains("has no `tolerances.bf16`"), "{}", left[0].1);
        }
        // The committed manifest has every tolerance: nothing left out.
        assert!(left_out_of_all(&ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap())).is_empty());
    }
}
