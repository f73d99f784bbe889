//! `nano-vllm quality`: how much worse a runtime setting computes the model, on real text. Teacher forced over a
//! corpus cut into chunks ([`Corpus`]), through the shared engine (every runtime that `bench` runs can be scored),
//! each runtime gets its perplexity and, against a base runtime's distributions at the same positions, the KL
//! divergence, top-1 agreement and RMS Δp of llama.cpp's `llama-perplexity --kl-divergence` ([`score`]).
//!
//! The base runs first; its raw logits of the scored positions go to a file beside the report (f32, as the runtime
//! returned them: the softmax is computed in f64 on reading, so a float32 runtime against a float32 base is compared
//! exactly) and are read back one chunk at a time for each other runtime: memory stays at one group of
//! chunks whatever the corpus.

mod base_file;
mod corpus;
mod report;
pub mod score;

use std::path::{Path, PathBuf};

use nano_vllm_engine::{Config, LlmEngine, LogitsCapture, SamplingParams};
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};

use base_file::BaseWriter;
pub use base_file::{BaseReader, BaseTrailer, chunk_digest};
pub use corpus::{Corpus, CorpusError, DEFAULT_CORPUS};
pub use report::{CorpusMeta, QUALITY_SCHEMA_VERSION, QualityReport, RuntimeQuality};

impl QualityReport {
    /// Reads a `quality.json` written by `nano-vllm quality`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a quality report of `nano-vllm quality`: {e}", path.display()))?;
        if report.schema_version != QUALITY_SCHEMA_VERSION {
            return Err(format!(
                "{}: quality report schema {}, this build reads {QUALITY_SCHEMA_VERSION}",
                path.display(),
                report.schema_version
            ));
        }
        Ok(report)
    }
}
use score::{Perplexity, VsBase, VsBaseRow, log_sum_exp, vs_base};

const BLOCK_SIZE: usize = 16;
/// Captured logits of one engine call stay under this many values (256 MiB of f32): chunks are run in groups of
/// at most 8, fewer for a large vocabulary.
const MAX_GROUP_VALUES: usize = 64 << 20;

/// How to score: the same for every runtime of the run.
#[derive(Debug, Clone, Default)]
pub struct QualitySettings {
    pub runtime: RuntimeSettings,
}

/// What one runtime produced: the NLL of every scored token, and its rows against the base.
struct Scored {
    nll: Vec<f64>,
    vs_base: Vec<VsBaseRow>,
}

/// Where the base's distributions come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    /// `runtimes[index]`, scored first; its rows kept in `save` when given (`--save-base`), else in a temporary file
    /// beside the report while the others run.
    Runtime { index: usize, save: Option<PathBuf> },
    /// Rows saved by an earlier run (`--base-file`).
    File(PathBuf),
}

/// A quality run's rows, and the base as the report names it.
#[derive(Debug)]
pub struct QualityRun {
    pub rows: Vec<RuntimeQuality>,
    pub base: Option<String>,
    /// Where the base's rows were saved (`--save-base`), when they were.
    pub saved_base: Option<PathBuf>,
}

/// Scores every runtime of `runtimes` on `corpus` against `base` (a runtime of the list is scored first, its rows
/// kept in a file while the others run). A runtime that fails to build or to run is an error row; the others go on.
/// A base file that does not fit the corpus is an error before anything runs.
pub fn run(
    model: &ModelSource,
    corpus: &Corpus,
    runtimes: &[RuntimeSpec],
    base: Option<&Base>,
    settings: &QualitySettings,
    work_dir: &Path,
) -> Result<QualityRun, String> {
    let (base_index, base_file, save) = match base {
        Some(Base::Runtime { index, save }) => {
            let temp = work_dir.join(format!(".quality-base-{}.f32", std::process::id()));
            (Some(*index), save.clone().unwrap_or(temp), save.is_some())
        }
        Some(Base::File(path)) => (None, path.clone(), true),
        None => (None, PathBuf::new(), false),
    };
    let mut out: Vec<Option<RuntimeQuality>> = vec![None; runtimes.len()];
    let (mut base_ok, mut base_label, mut saved_base) = (false, None, None);
    let mut leading = Vec::new();
    if let Some(Base::File(path)) = base {
        let t = BaseReader::open(path, corpus)?.trailer;
        let name = format!("{} (saved base)", t.base);
        base_label = Some(format!("{} on {}, saved in {}", t.base, t.model, path.display()));
        leading.push(RuntimeQuality::scored(&name, t.perplexity(corpus), None, true, 0.0));
        base_ok = true;
    }
    let mut order: Vec<usize> = (0..runtimes.len()).collect();
    if let Some(b) = base_index {
        order.retain(|&i| i != b);
        order.insert(0, b);
        base_label = Some(runtimes[b].name().to_owned());
    }
    let against_name = base_label.clone().unwrap_or_default();
    for i in order {
        let spec = &runtimes[i];
        let is_base = Some(i) == base_index;
        let against = (!is_base && base_ok).then_some((base_file.as_path(), against_name.as_str()));
        let write_base = is_base.then(|| BaseWriter::create(&base_file));
        let started = std::time::Instant::now();
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut writer = write_base.transpose()?;
            let s = score_runtime(model, corpus, spec, settings, writer.as_mut(), against.map(|(p, _)| p))?;
            if let Some(w) = writer {
                let trailer = BaseTrailer {
                    base: spec.name().to_owned(),
                    model: model.name().to_owned(),
                    model_sha256: model.model_digest(),
                    corpus: CorpusMeta::from(corpus),
                    chunk_xxh64: corpus.chunks.iter().map(|c| chunk_digest(c)).collect(),
                    vocab_size: 0,
                    nll: s.nll.clone(),
                };
                let path = w.finish(trailer)?;
                if save {
                    saved_base = Some(path);
                }
            }
            Ok::<_, String>(s)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".into());
            Err(format!("panicked: {message}"))
        });
        let seconds = started.elapsed().as_secs_f64();
        let row = match scored {
            Ok(s) => {
                base_ok |= is_base;
                let perplexity = Perplexity::of(&s.nll);
                let vs = against.map(|(_, name)| VsBase::of(name, &s.vs_base));
                eprintln!(
                    "{:<20} ppl {:.4} ± {:.4}{} ({seconds:.1} s)",
                    spec.name(),
                    perplexity.perplexity,
                    perplexity.ci95,
                    vs.as_ref()
                        .map(|v| format!(
                            ", KL {:.3e} ± {:.1e}, top-1 {:.4}",
                            v.mean_kl.mean, v.mean_kl.ci95, v.top1_agreement.mean
                        ))
                        .unwrap_or_default()
                );
                RuntimeQuality::scored(spec.name(), perplexity, vs, is_base, seconds)
            }
            Err(error) => {
                eprintln!("{:<20} failed: {error}", spec.name());
                RuntimeQuality::failed(spec.name(), error, is_base, seconds)
            }
        };
        out[i] = Some(row);
    }
    if base_index.is_some() && !save {
        let _ = std::fs::remove_file(&base_file);
    }
    leading.extend(out.into_iter().flatten());
    Ok(QualityRun { rows: leading, base: base_label, saved_base })
}

/// Runs `spec` over every chunk: the NLL of each scored token; with `write_base`, the scored rows' logits written
/// there; with `against`, each row compared with the base's rows read from that file.
fn score_runtime(
    model: &ModelSource,
    corpus: &Corpus,
    spec: &RuntimeSpec,
    settings: &QualitySettings,
    mut writer: Option<&mut BaseWriter>,
    against: Option<&Path>,
) -> Result<Scored, String> {
    let ctx = corpus.ctx;
    let runtime_settings = RuntimeSettings {
        max_model_len: Some(ctx + 1),
        max_num_seqs: Some(1),
        max_num_batched_tokens: Some(ctx),
        ..settings.runtime.clone()
    };
    let runtime = registry::build(spec, model, &runtime_settings).map_err(|e| e.to_string())?;
    let group = (MAX_GROUP_VALUES / (ctx * model.info().vocab_size.max(1))).clamp(1, 8);
    // One chunk a step (llama-perplexity's batch of one context); a group of chunks per engine call.
    let config = Config::builder()
        .block_size(BLOCK_SIZE)
        .max_model_len(ctx + 1)
        .max_num_seqs(1)
        .num_kv_blocks(group * (ctx + 1).div_ceil(BLOCK_SIZE))
        .max_num_batched_tokens(ctx)
        .eos_token_ids(Vec::new())
        .enable_prefix_caching(false)
        .enable_chunked_prefill(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut engine = LlmEngine::new(config, runtime).map_err(|e| e.to_string())?;
    let params = SamplingParams { ignore_eos: true, logits: LogitsCapture::All, ..SamplingParams::greedy(1) };
    let mut reader = against.map(|p| BaseReader::open(p, corpus)).transpose()?;
    let (first, rows_per_chunk) = (corpus.first_scored, ctx - 1 - corpus.first_scored);
    let mut scored = Scored { nll: Vec::new(), vs_base: Vec::new() };
    let mut base_row = Vec::new();
    for chunks in corpus.chunks.chunks(group) {
        let sequences = engine.generate(chunks.to_vec(), &params).map_err(|e| e.to_string())?;
        for (ids, seq) in chunks.iter().zip(&sequences) {
            let captured = seq.logits().ok_or("the runtime returned no logits")?;
            let vocab = captured.vocab_size;
            if let Some(r) = &reader
                && r.trailer.vocab_size != vocab
            {
                return Err(format!(
                    "rows of {vocab} logits, the base's have {} (a padded vocabulary cannot be compared)",
                    r.trailer.vocab_size
                ));
            }
            for j in first..first + rows_per_chunk {
                let k = captured.positions.iter().position(|&p| p as usize == j).ok_or_else(|| {
                    format!("no logits at position {j} of a chunk (the runtime must return every position's)")
                })?;
                let row = &captured.values[k * vocab..(k + 1) * vocab];
                let (lse, next) = (log_sum_exp(row), ids[j + 1] as usize);
                scored.nll.push(lse - row[next] as f64);
                if let Some(w) = writer.as_mut() {
                    w.push_row(row)?;
                }
                if let Some(r) = reader.as_mut() {
                    r.read_row(&mut base_row)?;
                    scored.vs_base.push(vs_base(&base_row, row, (log_sum_exp(&base_row), lse), next));
                }
            }
        }
    }
    Ok(scored)
}
