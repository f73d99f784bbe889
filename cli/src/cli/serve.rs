//! `nano-vllm serve`: a model, a runtime and the engine behind an OpenAI-compatible API on tokio and axum. The
//! engine runs on a thread of its own (`nano_vllm_serve::engine_loop`); SIGINT or SIGTERM stop accepting,
//! let the requests in flight finish (up to `--shutdown-timeout`), abort the rest and exit 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use nano_vllm_engine::LlmEngine;
use nano_vllm_models::model::ModelSource;
use nano_vllm_models::model::chat::ChatTemplate;
use nano_vllm_models::registry::{self, RuntimeSettings, RuntimeSpec};
use nano_vllm_serve::{self as serve, AppState, ServeSettings, ServedModel, ServerMetrics};

use super::bench::EngineArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The model: a GGUF file, a Hugging Face directory or a bundle directory.
    #[arg(long, alias = "bundle")]
    model: PathBuf,
    /// The runtime (`nano-vllm --version` lists those compiled in), with options as in `bench --runtime`.
    #[arg(long, default_value = "native", value_parser = RuntimeSpec::parse)]
    runtime: RuntimeSpec,
    /// The model name clients send (default: the model's directory or file name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Address to bind; the default answers this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000, allow_negative_numbers = true)]
    port: u16,
    /// Requests to /v1/* must carry `Authorization: Bearer KEY`; others get 401.
    #[arg(long, env = "NANO_VLLM_API_KEY")]
    api_key: Option<String>,
    /// Most requests in the server at once (waiting, running or streaming); past it, 429 at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000), allow_negative_numbers = true)]
    max_pending: u32,
    /// A Jinja chat template for /v1/chat/completions, replacing the model's (or giving one to a model without).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Threads that tokenize prompts and render chat templates, off the two async workers that serve connections
    /// (vLLM's flag of this name).
    #[arg(long, default_value_t = 1, value_parser = |s: &str| super::bounded(s, 1, 256), allow_negative_numbers = true)]
    renderer_num_workers: usize,
    /// A line on stderr when each request arrives and when it ends, with its id (as vLLM's flag of this name).
    #[arg(long)]
    enable_log_requests: bool,
    /// After SIGINT/SIGTERM, seconds to let requests in flight finish before they are aborted.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    shutdown_timeout: u64,
    /// Engine settings. `--max-model-len` defaults to the model's context, at most 2048 tokens.
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(a: &ServeArgs) -> anyhow::Result<()> {
    let model = ModelSource::open(&a.model)?;
    let tokenizer = model.tokenizer()?;
    let info = model.info().clone();
    let context = info.context_length;
    let max_model_len = match a.engine.max_model_len {
        Some(n) if n > context => bail!("--max-model-len {n} exceeds the model's context ({context})"),
        Some(n) => n,
        None => context.min(2048),
    };
    let chat_template = match &a.chat_template {
        Some(path) => {
            let source = std::fs::read_to_string(path)
                .with_context(|| format!("--chat-template {}: cannot read it", path.display()))?;
            let model_template = model.chat_template()?;
            let (bos_token, eos_token) = model_template.map(|t| (t.bos_token, t.eos_token)).unwrap_or_default();
            Some(ChatTemplate { source, bos_token, eos_token })
        }
        None => model.chat_template()?,
    };
    let chat_stop_ids: Vec<u32> =
        chat_template.as_ref().and_then(|t| tokenizer.token_to_id(&t.eos_token)).into_iter().collect();
    let config = a.engine.config(max_model_len, info.eos_token_ids.clone())?;
    let settings = RuntimeSettings {
        threads: a.engine.threads,
        max_model_len: Some(max_model_len),
        max_num_seqs: Some(config.max_num_seqs()),
        max_num_batched_tokens: Some(config.max_num_batched_tokens()),
    };
    let runtime = registry::build(&a.runtime, &model, &settings)?;
    let engine = LlmEngine::new(config.clone(), runtime)?;
    let runtime_info = engine.runtime_info().clone();
    let name = a.served_model_name.clone().unwrap_or_else(|| model.name().to_owned());
    let served = ServedModel {
        name: name.clone(),
        tokenizer,
        chat_template,
        chat_stop_ids,
        vocab_size: info.vocab_size,
        max_model_len,
        block_size: config.block_size(),
        num_kv_blocks: engine.num_kv_blocks(),
        runtime: runtime_info.name.clone(),
    };
    let metrics = ServerMetrics::new(&name).context("metrics")?;
    let cancel = Arc::new(AtomicBool::new(false));
    let (handle, engine_thread) =
        serve::engine_loop::spawn(engine, metrics.clone(), a.max_pending as usize, cancel.clone())
            .context("starting the engine thread")?;
    let settings = ServeSettings {
        api_key: a.api_key.clone(),
        tokenizer_workers: a.renderer_num_workers,
        log_requests: a.enable_log_requests,
    };
    let state = Arc::new(AppState::new(served, handle, metrics, settings).context("starting the tokenizer pool")?);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let addr = format!("{}:{}", a.host, a.port);
    let listener =
        tokio.block_on(tokio::net::TcpListener::bind(&addr)).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("the listener's address")?;
    eprintln!(
        "serving {name} ({}, {} {} on {}) at http://{bound}/v1 (max_model_len {max_model_len}, {} KV blocks of {}, \
         {} tokenizer worker(s))",
        model.path().display(),
        runtime_info.name,
        runtime_info.dtype,
        runtime_info.device,
        state.model.num_kv_blocks,
        state.model.block_size,
        state.pool.workers(),
    );
    let grace = Duration::from_secs(a.shutdown_timeout);
    tokio.block_on(serve::serve(listener, state, shutdown_signal(), grace)).context("serving")?;
    eprintln!("shutting down");
    // In-flight requests past the grace period: abort them, and let the engine thread go.
    cancel.store(true, std::sync::atomic::Ordering::Release);
    tokio.shutdown_timeout(Duration::from_secs(1));
    engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
