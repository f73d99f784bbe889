//! `NativeRuntime`: the engine's [`Runtime`] over our own kernels, with the KV cache paged in the engine's blocks.

use std::path::Path;

use nano_vllm_bundle::Bundle;
use nano_vllm_engine::{
    Capabilities, KvCacheKind, KvCacheSpec, PrefixReuse, Runtime, RuntimeError, RuntimeInfo, StepBatch, StepOutput,
};

use crate::error::NativeError;
use crate::forward::{KvPool, Workspace, forward};
use crate::kernels::linear::WeightDtype;
use crate::kernels::quant::{Isa, MAX_INT_TOKENS};
use crate::kernels::team::Team;
use crate::model::Model;

/// Settings of the native runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeOptions {
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Storage of the dense layers' weights (accumulation is always f32): `Stored` keeps a GGUF's block types (for an
    /// HF directory it means f32).
    pub weight_dtype: WeightDtype,
}

/// Our own transformer kernels with paged attention.
#[derive(Debug)]
pub struct NativeRuntime {
    model: Model,
    kv: Option<KvPool>,
    ws: Workspace,
    /// The step's worker threads; `None` with one thread: steps run on the caller's thread, with no hand-off. The
    /// team runs the step's loops; the rayon pool is the one installed around a step (loops outside a team use it).
    pool: Option<(rayon::ThreadPool, Team)>,
    threads: usize,
    /// Whether a GGUF's matrices run as the file stores them (the report then names the file's type, `q4_k_m`, not
    /// the first layer's).
    stored: bool,
}

impl NativeRuntime {
    /// Loads an HF model directory (`config.json`, `model.safetensors` or sharded), or a GGUF file: with
    /// `weight_dtype` `Stored` (the default for a GGUF), each matrix in its block type as the file stores it, mapped;
    /// else dequantized and stored as `weight_dtype`.
    pub fn load(path: impl AsRef<Path>, options: &NativeOptions) -> Result<Self, NativeError> {
        let path = path.as_ref();
        let model = if path.is_file() {
            Model::load_gguf(path, options.weight_dtype == WeightDtype::Stored)?
        } else {
            Model::load(path)?
        };
        let model = model.with_weight_dtype(options.weight_dtype);
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("nano-vllm-native-{i}"))
                .build()
                .map_err(|e| NativeError::ThreadPool { threads, reason: e.to_string() })?;
            let team = Team::new(threads, "nano-vllm-native-team")
                .map_err(|e| NativeError::ThreadPool { threads, reason: e.to_string() })?;
            Some((pool, team))
        } else {
            None
        };
        let stored = options.weight_dtype == WeightDtype::Stored;
        Ok(Self { model, kv: None, ws: Workspace::default(), pool, threads, stored })
    }

    /// Loads a fixture bundle's HF files.
    pub fn from_bundle(bundle: &Bundle, options: &NativeOptions) -> Result<Self, NativeError> {
        Self::load(bundle.hf_dir(), options)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs a step directly (the engine calls this through [`Runtime::execute`]).
    pub fn run(&mut self, batch: &StepBatch) -> Result<StepOutput, NativeError> {
        let kv = self.kv.as_mut().ok_or(NativeError::NotPrepared)?;
        let (model, ws, threads) = (&self.model, &mut self.ws, self.threads);
        let logits = match &self.pool {
            Some((pool, team)) => pool.install(|| team.install(|| forward(model, kv, ws, batch, threads)))?,
            None => forward(model, kv, ws, batch, threads)?,
        };
        Ok(StepOutput { vocab_size: model.config.vocab_size, logits })
    }
}

impl Runtime for NativeRuntime {
    fn info(&self) -> RuntimeInfo {
        let c = &self.model.config;
        RuntimeInfo {
            name: "native".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device: format!("cpu ({} threads)", self.threads),
            dtype: match (self.stored, &self.model.file_type) {
                (true, Some(file_type)) => file_type.clone(),
                _ => self.model.weight_dtype().as_str().into(),
            },
            settings: vec![
                ("architecture".into(), c.architecture.as_str().into()),
                ("kv_cache".into(), "engine-paged f32".into()),
                ("weights".into(), self.model.weight_types()),
                ("unquantized_layers".into(), self.model.unquantized_layers.to_string()),
                ("accumulation".into(), "f32".into()),
                (
                    "matmul".into(),
                    format!(
                        "f32 weights packed at load into panels of 16 outputs, one product at every batch size ({}); \
                         f16/bf16: a row kernel up to {} tokens, packed tiles above",
                        Isa::detect().as_str(),
                        crate::kernels::gemv::MAX_TOKENS
                    ),
                ),
                (
                    "quantized_kernels".into(),
                    format!(
                        "{} (integer products on Q8_0 / Q8_K activations up to {} tokens), dequantized tiles packed \
                         into panels above ({})",
                        if Isa::detect().has_avx2() { "avx2+fma+f16c" } else { "portable" },
                        MAX_INT_TOKENS,
                        Isa::detect().as_str()
                    ),
                ),
                ("threads".into(), self.threads.to_string()),
            ],
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::EnginePaged,
            prefix_reuse: PrefixReuse::SharedBlocks,
            full_position_logits: true,
            kv_bytes_per_token: Some(self.model.config.kv_bytes_per_token_f32()),
            vocab_size: Some(self.model.config.vocab_size),
            ..Capabilities::default()
        }
    }

    fn prepare(&mut self, kv: &KvCacheSpec) -> Result<(), RuntimeError> {
        self.kv = Some(KvPool::new(&self.model, kv.num_blocks, kv.block_size));
        Ok(())
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(self.run(batch)?)
    }
}
