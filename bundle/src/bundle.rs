//! A fixture bundle on disk: a directory with `manifest.json` and the files it lists.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{BundleError, read_file};
use crate::format::Format;
use crate::hf_config::HfConfig;
use crate::manifest::{Manifest, ModelConfig, Tolerances};
use crate::reference::Reference;
use crate::tokenizer_reference::TokenizerReference;

/// The manifest's file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// An opened bundle: its directory and parsed manifest. Opening reads only manifest.json; call
/// [`Bundle::verify`] to check the other files' sizes and checksums.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    /// Lower-case hex sha256 of manifest.json as read (the manifest lists every other file's checksum, so this
    /// identifies the whole bundle).
    manifest_sha256: String,
}

impl Bundle {
    /// Read and validate `dir/manifest.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST_FILE);
        let bytes = read_file(&path)?;
        let manifest = Manifest::parse(&path, &bytes)?;
        let manifest_sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Self { dir, manifest, manifest_sha256 })
    }

    /// Check that every file the manifest lists exists with the listed size and sha256.
    pub fn verify(&self) -> Result<(), BundleError> {
        for entry in &self.manifest.files {
            let path = self.dir.join(&entry.path);
            let mut file = std::fs::File::open(&path).map_err(|e| BundleError::io(&path, e))?;
            let actual = file.metadata().map_err(|e| BundleError::io(&path, e))?.len();
            if actual != entry.size {
                return Err(BundleError::SizeMismatch { path, expected: entry.size, actual });
            }
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).map_err(|e| BundleError::io(&path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let digest = hex::encode(hasher.finalize());
            if digest != entry.sha256 {
                return Err(BundleError::ChecksumMismatch { path, expected: entry.sha256.clone(), actual: digest });
            }
        }
        self.check_config_agrees()
    }

    /// The manifest's model shape must be `config.json`'s: bench sizes the engine from the one and the runtimes build
    /// the model from the other, so a difference would surface mid-run as an error naming neither. Checked when the
    /// bundle lists a config.json.
    fn check_config_agrees(&self) -> Result<(), BundleError> {
        if !self.manifest.files.iter().any(|f| f.path == "config.json") {
            return Ok(());
        }
        let path = self.config_json();
        let hf = HfConfig::from_file(&path)?;
        let m = &self.manifest.config;
        let pairs = [
            ("context_length", m.context_length, "max_position_embeddings", hf.max_position_embeddings),
            ("vocab_size", m.vocab_size, "vocab_size", hf.vocab_size),
            ("hidden_size", m.hidden_size, "hidden_size", hf.hidden_size),
            ("num_layers", m.num_layers, "num_hidden_layers", hf.num_layers),
            ("num_heads", m.num_heads, "num_attention_heads", hf.num_heads),
            ("num_kv_heads", m.num_kv_heads, "num_key_value_heads", hf.num_kv_heads),
        ];
        for (field, ours, key, theirs) in pairs {
            if ours != theirs {
                return Err(BundleError::InvalidField {
                    path: self.dir.join(MANIFEST_FILE),
                    field: format!("config.{field}"),
                    reason: format!(
                        "{ours}, but {} has `{key}` {theirs}: the two describe different models",
                        path.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 (lower-case hex) of manifest.json: it lists every file's checksum, so equal hashes, the same bundle.
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    /// sha256 (lower-case hex) of the model's files alone: of the manifest's file list (`path size sha256` lines,
    /// sorted by path). Unlike [`Self::manifest_sha256`] it stays the same when only the manifest's tolerances,
    /// measured figures or tool versions change, so runs of the same files stay comparable (the gate's identity).
    pub fn model_sha256(&self) -> String {
        let mut files: Vec<_> = self.manifest.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        for f in files {
            h.update(format!("{} {} {}\n", f.path, f.size, f.sha256).as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// What the bundle's `config.json` asks for that its GGUF files cannot carry ([`HfConfig::beyond_gguf`]) at a
    /// context of `context` positions (default: the model's), prefixed with the file; `None` also when the config
    /// cannot be read, since a runtime of the GGUF then has nothing else to go by.
    pub fn beyond_gguf(&self, context: Option<usize>) -> Option<String> {
        let path = self.config_json();
        let config = HfConfig::from_file(&path).ok()?;
        let reason = config.beyond_gguf(context.unwrap_or(config.max_position_embeddings))?;
        Some(format!("{}: {reason}", path.display()))
    }

    /// The bundle's name (`tiny-llama`, ...).
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.manifest.config
    }

    /// The parity-check tolerances.
    pub fn tolerances(&self) -> &Tolerances {
        &self.manifest.tolerances
    }

    /// Path of the file holding `format`.
    pub fn path(&self, format: Format) -> PathBuf {
        // `Manifest::parse` rejects manifests lacking any format of `Format::ALL`.
        self.dir.join(self.manifest.format_file(format).unwrap_or(format.key()))
    }

    /// The directory to hand to a Hugging Face style loader (config.json, model.safetensors, tokenizer.json).
    pub fn hf_dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`.
    pub fn config_json(&self) -> PathBuf {
        self.path(Format::Config)
    }

    /// `model.safetensors` (float32).
    pub fn safetensors(&self) -> PathBuf {
        self.path(Format::Safetensors)
    }

    /// `tokenizer.json`.
    pub fn tokenizer_json(&self) -> PathBuf {
        self.path(Format::Tokenizer)
    }

    /// `model.onnx` (KV-cache I/O, weights embedded).
    pub fn onnx(&self) -> PathBuf {
        self.path(Format::Onnx)
    }

    /// `model.f32.gguf`.
    pub fn gguf_f32(&self) -> PathBuf {
        self.path(Format::GgufF32)
    }

    /// `model.q8_0.gguf`.
    pub fn gguf_q8_0(&self) -> PathBuf {
        self.path(Format::GgufQ8_0)
    }

    /// An optional file ([`Format::OPTIONAL`]), when the bundle has it.
    pub fn optional(&self, format: Format) -> Option<PathBuf> {
        self.manifest.format_file(format).map(|name| self.dir.join(name))
    }

    /// The GGUF the bundle was made from, as shipped (e.g. Q4_1), when it was made with `--from-gguf`.
    pub fn gguf_shipped(&self) -> Option<PathBuf> {
        self.optional(Format::GgufShipped)
    }

    /// Load and check `reference.safetensors` against the manifest.
    pub fn reference(&self) -> Result<Reference, BundleError> {
        Reference::load(&self.path(Format::Reference), &self.manifest)
    }

    /// Load and check `tokenizer_reference.json`.
    pub fn tokenizer_reference(&self) -> Result<TokenizerReference, BundleError> {
        TokenizerReference::load(&self.path(Format::TokenizerReference), self.manifest.config.vocab_size)
    }
}
