//! Runtimes by name. The one place that knows which runtimes are compiled in: a known runtime built without its
//! feature is a "not compiled in" error naming the feature, an unknown name lists the available ones. Also the one
//! place that knows which of a model's files each runtime loads (see [`build`]).

use std::path::PathBuf;

use nano_vllm_engine::{MockRuntime, Runtime};

use crate::model::ModelSource;

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
        "runtime '{name}': option '{option}' is not known (native: f32, f16, bf16, q8_0, q4_0, shipped, or one of llama.cpp's \
         mixes q2_k, q3_k_m, q4_k_m, q5_k_m, q6_k, iq4_nl, iq4_xs; candle: shipped; mock: fail-at=N, panic-at=N, \
         delay-us=N; llama-cpp: defaults, q8_0, q4_0, f32, shipped, or a mix)"
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
pub fn default_runtimes() -> Vec<String> {
    let mut names: Vec<String> = available().into_iter().filter(|r| *r != "mock").map(str::to_owned).collect();
    if names.iter().any(|n| n == "native") {
        names.extend(["native:q8_0".into(), "native:q4_0".into(), "native:f16".into(), "native:bf16".into()]);
    }
    if names.iter().any(|n| n == "llama-cpp") {
        names.extend(["llama-cpp:q8_0".into(), "llama-cpp:q4_0".into(), "llama-cpp:defaults".into()]);
        // llama.cpp's Q4_K_M of the bundle, run by both.
        if names.iter().any(|n| n == "native") {
            names.push("native:q4_k_m".into());
        }
        names.push("llama-cpp:q4_k_m".into());
    }
    names
}

/// What `all` means for `model`: the runtimes that can load its files. A bundle: [`default_runtimes`], and with a
/// shipped GGUF the runtimes that read it (`native:shipped` and `llama-cpp:shipped` run it as stored,
/// `candle:shipped` dequantizes it). An HF directory: native, candle, and onnx when it has `model.onnx`. A GGUF: llama.cpp, and
/// native and candle for the architectures they implement (Llama, Qwen2, Qwen3, Gemma 3, Phi-3, GPT-2).
pub fn default_runtimes_for(model: &ModelSource) -> Vec<String> {
    use crate::model::ModelKind;
    let hf_arch = |arch: &str| matches!(arch, "llama" | "qwen2" | "qwen3" | "gemma3" | "phi3" | "gpt2");
    let mut names = match model.kind() {
        ModelKind::Bundle => default_runtimes(),
        ModelKind::HfDir => {
            let mut names = vec!["native", "candle"];
            if model.onnx().is_some() {
                names.push("onnx");
            }
            names.into_iter().filter(|n| compiled_in(n)).map(str::to_owned).collect()
        }
        ModelKind::Gguf => {
            let arch = model.gguf().and_then(|f| f.str("general.architecture").ok()).unwrap_or("");
            ["native", "candle", "llama-cpp"]
                .into_iter()
                .filter(|n| compiled_in(n) && (*n == "llama-cpp" || hf_arch(arch)))
                .map(str::to_owned)
                .collect()
        }
    };
    let left_out = left_out_of_all(model);
    names.retain(|n| !left_out.iter().any(|(name, _)| name == n));
    if model.bundle().is_some_and(|b| b.gguf_shipped().is_some()) {
        for base in ["native", "candle", "llama-cpp"] {
            if compiled_in(base) {
                names.push(format!("{base}:shipped"));
            }
        }
    }
    names
}

/// Lossy settings that `all` leaves out for `model`, each with the reason: a bundle whose manifest lacks the tolerance
/// that judges the setting (made by a generator before it). Named explicitly, such a setting is an error saying so;
/// callers print these so that a setting never drops out of a report unseen.
pub fn left_out_of_all(model: &ModelSource) -> Vec<(String, String)> {
    let Some(b) = model.bundle() else { return Vec::new() };
    let t = b.tolerances();
    [
        ("native:f16", "f16", t.f16.is_none()),
        ("native:bf16", "bf16", t.bf16.is_none()),
        ("llama-cpp:defaults", "llama_cpp_defaults", t.llama_cpp_defaults.is_none()),
    ]
    .into_iter()
    .filter(|&(name, _, lacks)| lacks && default_runtimes().iter().any(|n| n == name))
    .map(|(name, key, _)| {
        let reason = format!(
            "the manifest of {} has no `tolerances.{key}` to judge it (a bundle made by an older fixtures/generate.py: \
             regenerate it, or add the measured figure with fixtures/merge_measured.py)",
            b.name()
        );
        (name.to_owned(), reason)
    })
    .collect()
}

/// A `--runtime` value: `all` ([`default_runtimes`]) or comma-separated names. A name that is unknown or not
/// compiled in is an error here, before anything runs (its options are checked when it is built).
pub fn runtime_list(spec: &str, all: &[String]) -> Result<Vec<String>, RegistryError> {
    let names: Vec<String> = if spec.trim() == "all" {
        all.to_vec()
    } else {
        spec.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    };
    if names.is_empty() {
        return Err(RegistryError::NoRuntime);
    }
    for name in &names {
        let base = name.split(':').next().unwrap_or(name);
        match KNOWN.iter().find(|(known, _)| *known == base) {
            Some((_, Some(feature))) if !compiled_in(base) => {
                return Err(RegistryError::NotCompiledIn { name: name.clone(), feature: (*feature).to_owned() });
            }
            Some(_) => {}
            None => return Err(RegistryError::Unknown { name: name.clone() }),
        }
    }
    Ok(names)
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

/// The model-free mock, with options: `mock`, `mock:fail-at=N` (its N-th step fails), `mock:panic-at=N` (its N-th
/// step panics), `mock:delay-us=N` (each step sleeps N microseconds, at most 10 s), combinable as
/// `mock:fail-at=9,delay-us=200`.
fn mock(spec: &str, vocab: usize) -> Result<MockRuntime, RegistryError> {
    let mut m = MockRuntime::new(vocab);
    let Some(options) = spec.strip_prefix("mock:") else { return Ok(m) };
    for opt in options.split(',') {
        let bad = || RegistryError::BadOption { name: spec.to_owned(), option: opt.to_owned() };
        let (key, value) = opt.split_once('=').ok_or_else(bad)?;
        let n: u64 = value.parse().map_err(|_| bad())?;
        m = match key {
            "fail-at" => m.fail_at_step(n as usize),
            "panic-at" => m.panic_at_step(n as usize),
            // At most 10 s a step: a stand-in for a runtime, not a way to stall a run for days.
            "delay-us" if n <= 10_000_000 => m.step_delay(std::time::Duration::from_micros(n)),
            _ => return Err(bad()),
        };
    }
    Ok(m)
}

/// llama.cpp's settings: `llama-cpp` is parity mode (F32 KV cache, flash attention off, f32 GGUF); options
/// `llama-cpp:defaults` (F16 KV, flash attention: llama.cpp's own defaults), `llama-cpp:q8_0` (the Q8_0 GGUF) and
/// `llama-cpp:shipped` (the GGUF as shipped) combine as `llama-cpp:defaults,q8_0`.
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
            "shipped" => o.weights = Weights::Shipped,
            "q4_0" => o.weights = Weights::Quantized(nano_vllm_llama_cpp::Quantization::Q4_0Pure),
            mix => match nano_vllm_llama_cpp::Quantization::mix(mix) {
                Some(q) => o.weights = Weights::Quantized(q),
                None => return Err(RegistryError::BadOption { name: spec.to_owned(), option: opt.to_owned() }),
            },
        }
    }
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
    Ok(o)
}

/// The GGUF llama.cpp runs for `model`: a bundle's f32, Q8_0 or shipped file, llama.cpp's quantization of the
/// bundle's f32 file (`q4_0`, `q4_k_m`), or a GGUF model itself (any option but `q8_0` runs it as it is).
#[cfg(feature = "llama-cpp")]
fn llama_cpp_file(
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

/// llama.cpp's quantization mixes by option name (`q4_k_m`, ...): the files `native:<mix>` and `llama-cpp:<mix>`
/// run, made by llama.cpp's quantizer.
pub const LLAMA_MIXES: [&str; 7] = ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs"];

/// The `mix` file of `model` made by llama.cpp's quantizer (needs the llama-cpp feature).
#[cfg(feature = "native")]
fn native_llama_mix(model: &ModelSource, mix: &str) -> Result<PathBuf, String> {
    #[cfg(feature = "llama-cpp")]
    return crate::quantized::llama_quantized(
        model,
        nano_vllm_llama_cpp::Quantization::mix(mix).ok_or_else(|| format!("{mix} is not a llama.cpp mix"))?,
    );
    #[cfg(not(feature = "llama-cpp"))]
    {
        let _ = model;
        Err(format!("native:{mix} runs llama.cpp's {mix} of the bundle: build with --features llama-cpp to make it"))
    }
}

/// Splits `base:opt,opt` into its options, checking each against `known`.
fn options<'a>(spec: &'a str, base: &str, known: &[&str]) -> Result<Vec<&'a str>, RegistryError> {
    let opts: Vec<&str> =
        spec.strip_prefix(base).and_then(|r| r.strip_prefix(':')).map(|r| r.split(',').collect()).unwrap_or_default();
    match opts.iter().find(|o| !known.contains(o)) {
        Some(bad) => Err(RegistryError::BadOption { name: spec.to_owned(), option: (*bad).to_owned() }),
        None => Ok(opts),
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

/// Builds the runtime `name` for `model`: each runtime loads the file it reads (native and candle an HF directory or
/// a GGUF, onnx the ONNX graph, llama.cpp a GGUF), and says which file it needs when the model has none.
pub fn build(name: &str, model: &ModelSource, settings: &RuntimeSettings) -> Result<Box<dyn Runtime>, RegistryError> {
    let load_err = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Load {
        name: name.to_owned(),
        model: model.path().to_path_buf(),
        source,
    };
    let vocab_size = model.info().vocab_size;
    match name {
        "mock" => Ok(Box::new(MockRuntime::new(vocab_size))),
        spec if spec.starts_with("mock:") => Ok(Box::new(mock(spec, vocab_size)?)),
        #[cfg(feature = "native")]
        spec if spec == "native" || spec.starts_with("native:") => {
            use nano_vllm_native::WeightDtype;
            let known: Vec<&str> =
                ["f32", "f16", "bf16", "q8_0", "q4_0", "shipped"].into_iter().chain(LLAMA_MIXES).collect();
            let opts = options(spec, "native", &known)?;
            let mix = opts.iter().copied().find(|o| LLAMA_MIXES.contains(o));
            let dtypes: Vec<&str> =
                opts.iter().copied().filter(|o| *o != "shipped" && !LLAMA_MIXES.contains(o)).collect();
            let path = if let Some(mix) = mix {
                // llama.cpp's quantization of the bundle (its quantizer), run as stored: the file llama-cpp:<mix>
                // runs, refused where the bundle's config says what a GGUF cannot.
                if let Some(reason) = model.bundle().and_then(|b| b.beyond_gguf(settings.max_model_len)) {
                    return Err(load_err(reason.into()));
                }
                native_llama_mix(model, mix).map_err(|e| load_err(e.into()))?
            } else {
                hf_or_gguf(name, model, opts.contains(&"shipped"))?
            };
            let weight_dtype = match dtypes.as_slice() {
                // A GGUF runs as stored (its block types); an HF directory in f32.
                [] if path.is_file() => WeightDtype::Stored,
                [] | ["f32"] => WeightDtype::F32,
                ["f16"] => WeightDtype::F16,
                ["bf16"] => WeightDtype::Bf16,
                ["q8_0"] => WeightDtype::Q8_0,
                [_] => WeightDtype::Q4_0,
                [_, second, ..] => {
                    return Err(RegistryError::BadOption { name: spec.to_owned(), option: (*second).to_owned() });
                }
            };
            let options = nano_vllm_native::NativeOptions { threads: settings.threads, weight_dtype };
            Ok(Box::new(nano_vllm_native::NativeRuntime::load(&path, &options).map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "onnx")]
        spec if spec == "onnx" || spec.starts_with("onnx:") => {
            options(spec, "onnx", &[])?;
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
        spec if spec == "candle" || spec.starts_with("candle:") => {
            let opts = options(spec, "candle", &["shipped"])?;
            let path = hf_or_gguf(name, model, !opts.is_empty())?;
            let threads = (settings.threads > 0).then_some(settings.threads);
            let options = nano_vllm_candle::CandleOptions { threads };
            Ok(Box::new(nano_vllm_candle::CandleRuntime::load(&path, &options).map_err(|e| load_err(e.into()))?))
        }
        #[cfg(feature = "llama-cpp")]
        spec if spec == "llama-cpp" || spec.starts_with("llama-cpp:") => {
            let options = llama_cpp_options(spec, settings)?;
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
    /// Q8_0 weights (alone or with other lossy options): teacher forced on the reference tokens, held to the bundle's
    /// `q8_0` distribution tolerance (mean KL, top-1 agreement); the situations still run and report.
    TeacherForced,
    /// Q4_0 weights (`native:q4_0`, `llama-cpp:q4_0`), and llama.cpp's mixes (`native:q4_k_m`, `llama-cpp:q4_k_m`,
    /// and the others of [`LLAMA_MIXES`], with no torch emulation of their own, bounded by Q4_0's): teacher forced,
    /// held to the bundle's `q4_0` tolerance.
    TeacherForcedQ4_0,
    /// llama.cpp on the shipped GGUF (quantized kernels): teacher forced, held to the bundle's `shipped` tolerance.
    ShippedTeacherForced,
    /// f16 weights (`native:f16`): teacher forced, held to the bundle's `f16` tolerance (mean KL, top-1 agreement
    /// and max |diff|, from the generator's torch emulation of the same rounding).
    TeacherForcedF16,
    /// bf16 weights (`native:bf16`): teacher forced, held to the bundle's `bf16` tolerance.
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

/// How parity judges the runtime `name` (see [`ParityCheck`]).
pub fn parity_check(name: &str) -> ParityCheck {
    if let Some(options) = name.strip_prefix("native:") {
        let options: Vec<&str> = options.split(',').collect();
        let has = |o: &str| options.contains(&o);
        return if has("q4_0") || LLAMA_MIXES.iter().any(|m| has(m)) {
            ParityCheck::TeacherForcedQ4_0
        } else if has("q8_0") {
            ParityCheck::TeacherForced
        } else if has("f16") {
            ParityCheck::TeacherForcedF16
        } else if has("bf16") {
            ParityCheck::TeacherForcedBf16
        } else if has("shipped") && !has("f32") {
            // The shipped GGUF as stored: its quantized kernels.
            ParityCheck::ShippedTeacherForced
        } else {
            ParityCheck::Elementwise
        };
    }
    match name.strip_prefix("llama-cpp") {
        Some(options) if options.contains("shipped") => ParityCheck::ShippedTeacherForced,
        Some(options) if options.contains("q4_0") || LLAMA_MIXES.iter().any(|m| options.contains(m)) => {
            ParityCheck::TeacherForcedQ4_0
        }
        Some(options) if options.contains("q8_0") => ParityCheck::TeacherForced,
        Some(options) if options.contains("defaults") => ParityCheck::LlamaCppDefaults,
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

/// The tokenizer of runtime `name` when it brings its own (llama.cpp: the vocabulary of the GGUF file it runs), labelled
/// with that file; `None` when the runtime uses the model's `tokenizer.json` (or is not compiled in).
pub fn runtime_tokenizer(name: &str, model: &ModelSource) -> Option<(String, LoadedTokenizer)> {
    #[cfg(feature = "llama-cpp")]
    if name == "llama-cpp" || name.starts_with("llama-cpp:") {
        let file = llama_cpp_options(name, &RuntimeSettings { max_model_len: Some(256), ..Default::default() })
            .and_then(|options| Ok((llama_cpp_file(name, model, options.weights)?, options)));
        let (path, options) = match file {
            Ok(f) => f,
            Err(e) => return Some((format!("llama-cpp ({name})"), Err(e))),
        };
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let label = format!("llama-cpp ({file} vocabulary)");
        let loaded = nano_vllm_llama_cpp::LlamaCppRuntime::load(&path, &options)
            .map(|r| Box::new(r) as Box<dyn RuntimeTokenizer>)
            .map_err(|e| RegistryError::Load { name: name.to_owned(), model: path.clone(), source: e.into() });
        return Some((label, loaded));
    }
    let _ = (name, model);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option names (needed without llama.cpp compiled in) are llama.cpp's mixes, in its order.
    #[cfg(feature = "llama-cpp")]
    #[test]
    fn the_mix_options_are_llama_cpp_s_mixes() {
        let names: Vec<&str> = nano_vllm_llama_cpp::Quantization::MIXES.iter().map(|q| q.as_str()).collect();
        assert_eq!(names, LLAMA_MIXES);
        assert!(LLAMA_MIXES.iter().all(|m| parity_check(&format!("native:{m}")) == ParityCheck::TeacherForcedQ4_0));
    }

    #[test]
    fn unknown_and_not_compiled_in_runtimes_are_explained() {
        let bundle = ModelSource::from(nano_vllm_bundle::open_fixture("tiny-llama").unwrap());
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

    #[test]
    fn runtime_lists_name_what_is_wrong_before_anything_runs() {
        let all = default_runtimes();
        assert!(!all.iter().any(|r| r == "mock"));
        assert_eq!(runtime_list("all", &all).unwrap(), all);
        assert_eq!(runtime_list(" mock , mock:delay-us=5 ", &all).unwrap(), ["mock", "mock:delay-us=5"]);
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
