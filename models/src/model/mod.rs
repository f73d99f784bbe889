//! The model a command runs, as users have it: a fixture bundle (every format, with references), a Hugging Face
//! directory (`config.json`, safetensors, `tokenizer.json`, maybe `model.onnx` and a chat template), or a GGUF file
//! (weights, vocabulary and chat template in one file). [`ModelSource`] says which files exist for which runtime,
//! what the model's limits are, and gives its tokenizer ([`tokenizer`]) and chat template ([`chat`]).

pub mod chat;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nano_vllm_bundle::gguf::{GgufError, GgufFile};
use nano_vllm_bundle::{Bundle, BundleError, Format, HfConfig};
use sha2::{Digest, Sha256};

/// Why a model could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    #[error(
        "{}: not a model: expected a GGUF file, a Hugging Face directory (config.json) or a bundle directory \
         (manifest.json){reason}",
        path.display()
    )]
    Unrecognized { path: PathBuf, reason: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "{}: no tokenizer: an HF directory needs tokenizer.json (a GGUF carries its vocabulary)",
        dir.display()
    )]
    NoTokenizer { dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    ChatTemplate { path: PathBuf, reason: String },
}

/// What kind of files a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Bundle,
    HfDir,
    Gguf,
}

/// The model's limits and special tokens, whatever its files.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub vocab_size: usize,
    pub context_length: usize,
    pub bos_token_id: Option<u32>,
    /// Tokens that end a generation (EOS, and a chat template's end-of-turn token).
    pub eos_token_ids: Vec<u32>,
}

/// A model's files. See the module docs.
#[derive(Debug, Clone)]
pub struct ModelSource {
    name: String,
    path: PathBuf,
    kind: ModelKind,
    bundle: Option<Bundle>,
    /// A GGUF model's parsed file (metadata, vocabulary, tensor index), parsed once.
    gguf: Option<Arc<GgufFile>>,
    info: ModelInfo,
}

impl From<Bundle> for ModelSource {
    fn from(bundle: Bundle) -> Self {
        let c = bundle.config();
        let info = ModelInfo {
            vocab_size: c.vocab_size,
            context_length: c.context_length,
            bos_token_id: c.bos_token_id,
            eos_token_ids: c.eos_token_id.into_iter().collect(),
        };
        Self {
            name: bundle.name().to_owned(),
            path: bundle.dir().to_path_buf(),
            kind: ModelKind::Bundle,
            info,
            bundle: Some(bundle),
            gguf: None,
        }
    }
}

impl ModelSource {
    /// Opens `path`: a bundle directory (`manifest.json`), an HF directory (`config.json`) or a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(ModelError::NotFound { path: path.into() });
        }
        let name = path.file_stem().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        if path.is_dir() {
            if path.join(nano_vllm_bundle::MANIFEST_FILE).is_file() {
                return Ok(Bundle::open(path)?.into());
            }
            if !path.join("config.json").is_file() {
                return Err(ModelError::Unrecognized { path: path.into(), reason: String::new() });
            }
            let config = HfConfig::from_dir(path)?;
            let mut eos_token_ids = config.eos_token_ids.clone();
            eos_token_ids.extend(generation_eos(path));
            eos_token_ids.sort_unstable();
            eos_token_ids.dedup();
            let info = ModelInfo {
                vocab_size: config.vocab_size,
                context_length: config.max_position_embeddings,
                bos_token_id: config.bos_token_id,
                eos_token_ids,
            };
            return Ok(Self { name, path: path.into(), kind: ModelKind::HfDir, bundle: None, gguf: None, info });
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
        if read.is_err() || &magic != b"GGUF" {
            let reason = format!("; {} does not start with the GGUF magic", path.display());
            return Err(ModelError::Unrecognized { path: path.into(), reason });
        }
        let file = GgufFile::open(path)?;
        let info = gguf_info(&file)?;
        Ok(Self { name, path: path.into(), kind: ModelKind::Gguf, bundle: None, gguf: Some(Arc::new(file)), info })
    }

    /// The bundle's name, or the file or directory name.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn kind(&self) -> ModelKind {
        self.kind
    }
    pub fn bundle(&self) -> Option<&Bundle> {
        self.bundle.as_ref()
    }
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// A GGUF model's parsed file.
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.gguf.as_deref()
    }

    /// The HF directory (config.json + safetensors), if the model has one.
    pub fn hf_dir(&self) -> Option<PathBuf> {
        match self.kind {
            ModelKind::Bundle | ModelKind::HfDir => Some(self.path.clone()),
            ModelKind::Gguf => None,
        }
    }

    /// The ONNX graph: a bundle's, or `model.onnx` in an HF directory.
    pub fn onnx(&self) -> Option<PathBuf> {
        match (&self.bundle, self.kind) {
            (Some(b), _) => Some(b.onnx()),
            (None, ModelKind::HfDir) => Some(self.path.join("model.onnx")).filter(|p| p.is_file()),
            _ => None,
        }
    }

    /// The GGUF as shipped: the file itself, or a bundle's shipped GGUF.
    pub fn gguf_shipped(&self) -> Option<PathBuf> {
        match (&self.bundle, self.kind) {
            (Some(b), _) => b.gguf_shipped(),
            (None, ModelKind::Gguf) => Some(self.path.clone()),
            _ => None,
        }
    }

    /// The model's tokenizer: `tokenizer.json`, or the GGUF's vocabulary and merges.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, ModelError> {
        let json = match (&self.bundle, self.kind) {
            (Some(b), _) => b.tokenizer_json(),
            (None, ModelKind::Bundle | ModelKind::HfDir) => self.path.join("tokenizer.json"),
            // The file parsed when the model was opened (its vocabulary is the largest part of the header).
            (None, _) if let Some(file) = &self.gguf => {
                return tokenizer::from_gguf(file)
                    .map_err(|reason| ModelError::Tokenizer { path: self.path.clone(), reason });
            }
            (None, ModelKind::Gguf) => unreachable!("a GGUF model keeps its parsed file"),
        };
        if !json.is_file() {
            return Err(ModelError::NoTokenizer { dir: self.path.clone() });
        }
        tokenizers::Tokenizer::from_file(&json).map_err(|e| ModelError::Tokenizer { path: json, reason: e.to_string() })
    }

    /// The model's chat template, if it has one (`chat_template.jinja`, `tokenizer_config.json`, or the GGUF's
    /// `tokenizer.chat_template`).
    pub fn chat_template(&self) -> Result<Option<chat::ChatTemplate>, ModelError> {
        let dir = match (&self.bundle, self.kind) {
            (Some(b), _) => {
                let config = b.optional(Format::TokenizerConfig);
                let jinja = b.optional(Format::ChatTemplate);
                return chat::ChatTemplate::from_hf_files(jinja.as_deref(), config.as_deref());
            }
            (None, ModelKind::Bundle | ModelKind::HfDir) => &self.path,
            (None, _) if let Some(file) = &self.gguf => return Ok(chat::ChatTemplate::from_gguf(file)),
            (None, ModelKind::Gguf) => unreachable!("a GGUF model keeps its parsed file"),
        };
        let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        chat::ChatTemplate::from_hf_files(
            existing("chat_template.jinja").as_deref(),
            existing("tokenizer_config.json").as_deref(),
        )
    }

    /// A bundle's [`nano_vllm_bundle::Bundle::model_sha256`]: its files alone, not its manifest's tolerances.
    pub fn model_digest(&self) -> Option<String> {
        self.bundle.as_ref().map(|b| b.model_sha256())
    }

    /// Identifies the model's files for reports: a bundle's manifest sha256 (it lists every file's checksum), else
    /// the sha256 of the small files (config, tokenizer, the GGUF's first MiB) and every file's size.
    pub fn digest(&self) -> String {
        if let Some(b) = &self.bundle {
            return b.manifest_sha256().to_owned();
        }
        let mut h = Sha256::new();
        let mut files: Vec<PathBuf> = match self.kind {
            ModelKind::Gguf => vec![self.path.clone()],
            _ => std::fs::read_dir(&self.path).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())).collect(),
        };
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            let size = f.metadata().map_or(0, |m| m.len());
            h.update(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
            h.update(size.to_le_bytes());
            if let Ok(file) = std::fs::File::open(f) {
                let mut head = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::Read::take(file, 1 << 20), &mut head);
                h.update(&head);
            }
        }
        hex::encode(h.finalize())
    }
}

/// `eos_token_id` of `generation_config.json` (an id or a list), when present.
fn generation_eos(dir: &Path) -> Vec<u32> {
    let Ok(bytes) = std::fs::read(dir.join("generation_config.json")) else { return Vec::new() };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    match &v["eos_token_id"] {
        serde_json::Value::Array(a) => {
            a.iter().filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect()
        }
        x => x.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
    }
}

/// A GGUF's limits from its metadata, whatever its architecture (llama.cpp may run one the HF runtimes do not).
fn gguf_info(file: &GgufFile) -> Result<ModelInfo, ModelError> {
    let arch = file.str("general.architecture")?;
    let tokens = file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(<[_]>::len);
    let bad = |key: String, reason: &str| {
        ModelError::Gguf(GgufError::Metadata { path: file.path().into(), key, reason: reason.into() })
    };
    let vocab_key = format!("{arch}.vocab_size");
    let vocab_size = match (file.get(&vocab_key), tokens) {
        (Some(v), _) => {
            v.as_u64().map(|n| n as usize).ok_or_else(|| bad(vocab_key.clone(), "is not an unsigned integer"))?
        }
        (None, Some(n)) => n,
        (None, None) => file.tensor("token_embd.weight").map_or(0, |t| t.shape()[0]),
    };
    if vocab_size == 0 {
        return Err(bad(vocab_key, "missing (and no token list nor token_embd.weight)"));
    }
    let context_length = file.u64(&format!("{arch}.context_length"))? as usize;
    if context_length == 0 {
        return Err(bad(format!("{arch}.context_length"), "is 0"));
    }
    let id = |key: &str| file.get(key).and_then(|v| v.as_u64()).and_then(|n| u32::try_from(n).ok());
    Ok(ModelInfo {
        vocab_size,
        context_length,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: [id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.eot_token_id")]
            .into_iter()
            .flatten()
            .collect(),
    })
}
