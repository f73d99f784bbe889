//! `nano-vllm quality`: perplexity and KL divergence per runtime on a corpus; a table on stdout, `quality.json`, and
//! a non-zero exit when a runtime could not be scored.

use std::path::PathBuf;

use anyhow::{Context, bail};
use nano_vllm_harness::quality::{
    self, Base, Corpus, CorpusMeta, QUALITY_SCHEMA_VERSION, QualityReport, QualitySettings,
};
use nano_vllm_harness::report::write_atomic;
use nano_vllm_models::model::{ModelKind, ModelSource};
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};

#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// The model: a GGUF file, a Hugging Face directory, or a bundle directory.
    #[arg(long, default_value = "fixtures/tiny-llama")]
    model: PathBuf,
    /// Runtimes, comma-separated, or `all` (every runtime that can load the model, as `bench` has it).
    #[arg(long, default_value = "all")]
    runtime: String,
    /// The runtime whose distributions the others are compared with (KL divergence, top-1 agreement, Δp); default:
    /// the first one that computes in float32 (`native` on a bundle or an HF directory; on a GGUF, `native:f32`,
    /// which `all` then scores first, or `candle`: the file's weights dequantized), else the first runtime.
    #[arg(long, conflicts_with = "base_file")]
    base: Option<String>,
    /// Keep the base's logits in FILE for later runs' --base-file (f32: vocabulary x scored tokens x 4 bytes, e.g.
    /// 450 MB for SmolLM2 on the whole built-in corpus).
    #[arg(long, value_name = "FILE", conflicts_with = "base_file")]
    save_base: Option<PathBuf>,
    /// Compare with a base saved by an earlier run's --save-base (llama-perplexity's --kl-divergence-base): the
    /// float32 model scored once, its quantized files later. The corpus must tokenize to the same chunks.
    #[arg(long, value_name = "FILE")]
    base_file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each is scored.
    #[arg(long, default_value_t = 256, value_parser = |s: &str| super::bounded(s, 4, 1 << 20))]
    ctx: usize,
    /// Score at most this many chunks (default: every whole chunk of the corpus).
    #[arg(long, value_parser = |s: &str| super::bounded(s, 1, 1 << 20))]
    chunks: Option<usize>,
    /// A UTF-8 text file to score (default: fixtures/corpus.txt, built in: 17 KB written for this project, public
    /// domain).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Runtime threads (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::thread_count, allow_negative_numbers = true)]
    threads: usize,
    /// Where to write the JSON report (default: reports/runs/quality-<unix time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: &QualityArgs) -> anyhow::Result<()> {
    let model = ModelSource::open(&a.model)?;
    let mut defaults = registry::default_runtimes_for(&model);
    // On a GGUF, `all` scores the file's weights in float32 first, the default base.
    if model.kind() == ModelKind::Gguf && defaults.iter().any(|r| r == "native") {
        defaults.insert(0, RuntimeSpec::parse("native:f32")?);
    }
    let runtimes = registry::runtime_list(&a.runtime, &defaults)?;
    let base = match (&a.base, &a.base_file) {
        (_, Some(file)) => Some(Base::File(file.clone())),
        (None, None) => {
            let index = runtimes.iter().position(|r| r.computes_in_f32(model.kind())).unwrap_or(0);
            Some(Base::Runtime { index, save: a.save_base.clone() })
        }
        (Some(b), None) => {
            let index = runtimes.iter().position(|r| r == b.as_str()).with_context(|| {
                let names: Vec<&str> = runtimes.iter().map(|r| r.name()).collect();
                format!("--base {b} is not one of the runtimes scored ({})", names.join(", "))
            })?;
            Some(Base::Runtime { index, save: a.save_base.clone() })
        }
    };
    let (name, text) = match &a.corpus {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the corpus {}", path.display()))?;
            (path.display().to_string(), text)
        }
        None => ("fixtures/corpus.txt".to_owned(), quality::DEFAULT_CORPUS.to_owned()),
    };
    let tokenizer = model.tokenizer()?;
    let info = model.info();
    let corpus = Corpus::cut(&name, &text, &tokenizer, a.ctx, a.chunks, (info.context_length, info.vocab_size))?;
    eprintln!(
        "{} chunks of {} tokens from {} ({} tokens), {} tokens scored per runtime; runtimes: {}",
        corpus.chunks.len(),
        corpus.ctx,
        corpus.name,
        corpus.tokens,
        corpus.scored_tokens(),
        runtimes.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("reports/runs/quality-{now}.json")));
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let settings = QualitySettings { runtime: RuntimeSettings { threads: a.threads, ..Default::default() } };
    let run = quality::run(&model, &corpus, &runtimes, base.as_ref(), &settings, &dir).map_err(anyhow::Error::msg)?;
    let report = QualityReport {
        schema_version: QUALITY_SCHEMA_VERSION,
        created_unix_s: now,
        git_commit: nano_vllm_harness::machine::git_commit(),
        model: model.name().to_owned(),
        model_sha256: model.model_digest(),
        corpus: CorpusMeta::from(&corpus),
        base: run.base,
        runtimes: run.rows,
    };
    // The table first: a JSON path that cannot be written loses nothing that was measured.
    print!("{}", report.table());
    write_atomic(&out, &serde_json::to_vec_pretty(&report)?)?;
    println!("JSON: {}", out.display());
    if let Some(saved) = &run.saved_base {
        println!("base saved: {} (compare later runs with it: --base-file {})", saved.display(), saved.display());
    }
    let failed: Vec<&str> = report.runtimes.iter().filter(|r| r.error.is_some()).map(|r| r.runtime.as_str()).collect();
    if !failed.is_empty() {
        bail!("{} of {} runtimes could not be scored: {}", failed.len(), report.runtimes.len(), failed.join(", "));
    }
    Ok(())
}
