//! The command line: one file per command, named after it. Each parses its arguments, calls the library
//! (`nano_vllm_harness`) and prints; errors are `anyhow` here and nowhere else.

mod bench;
mod gate;
mod generate;
mod parity;
mod quality;
mod report;
mod serve;
mod simulate;
mod workload;

use nano_vllm_models::registry;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nano-vllm", version = version(), about = "Benchmark and conformance harness for LLM inference runtimes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The crate version and the runtimes compiled in.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| format!("{} (runtimes: {})", env!("CARGO_PKG_VERSION"), registry::available().join(", ")))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a workload against runtimes and write reports (results.json, CSVs, Markdown, HTML).
    ///
    /// Examples: nano-vllm bench --runtime native,mock --requests 64
    ///           nano-vllm bench --workload trace.jsonl --mode online --slo ttft=200ms,tpot=50ms
    ///           nano-vllm bench --rate-sweep 5,10,20 --requests 100
    Bench(Box<bench::BenchArgs>),
    /// Write a JSONL workload trace (synthetic, or imported from a local ShareGPT file).
    ///
    /// Example: nano-vllm workload --out trace.jsonl --requests 100 --rate 8 --burstiness 0.5 --input-len normal:64:16
    Workload(workload::WorkloadArgs),
    /// Compare existing runs, A/B with their noise when two, and import other tools' results (vllm bench serve,
    /// llama-bench, GuideLLM JSON) into the same table.
    ///
    /// Example: nano-vllm report reports/runs/a reports/runs/b --out reports/compare
    ///          nano-vllm report reports/runs/a vllm-bench.json llama-bench.json guidellm.json --out reports/all
    Report(report::ReportArgs),
    /// Generate text from prompts through the engine with a runtime, streaming the first prompt's tokens.
    ///
    /// Example: nano-vllm generate --bundle fixtures/tiny-llama --runtime native --prompt "Once upon a time"
    Generate(generate::GenerateArgs),
    /// Check runtimes against bundles' reference logits (through the engine) and the tokenizers against reference ids.
    ///
    /// Examples: nano-vllm parity                       (every runtime, every committed fixture)
    ///           nano-vllm parity --bundle fixtures/bench --runtime native,llama-cpp:q8_0 --out parity.json
    Parity(parity::ParityArgs),
    /// Score runtimes on real text: perplexity per runtime and, against a base runtime, KL divergence, top-1
    /// agreement and RMS Δp (llama-perplexity's figures), teacher forced through the engine over a corpus.
    ///
    /// Examples: nano-vllm quality --model fixtures/smollm2            (every runtime, the built-in corpus)
    ///           nano-vllm quality --model m.gguf --runtime native,llama-cpp --corpus my.txt --ctx 512
    Quality(quality::QualityArgs),
    /// Compare a bench run with this CPU's committed baseline, or instruction counts with theirs; exit non-zero on a
    /// regression beyond ci/gate.toml.
    ///
    /// Examples: nano-vllm gate --baseline reports/baselines --current reports/runs/gate
    ///           nano-vllm gate --instructions reports/runs/instructions.jsonl
    Gate(gate::GateArgs),
    /// Serve a model with a runtime through the engine behind an OpenAI-compatible API (completions, chat,
    /// streaming, /v1/models, /health, /metrics).
    ///
    /// Example: nano-vllm serve --model fixtures/smollm2 --runtime native --port 8000
    Serve(Box<serve::ServeArgs>),
    /// Run the engine on the model-free mock runtime and print scheduling statistics.
    ///
    /// Example: nano-vllm simulate --requests 200 --prompt-len 64 --max-tokens 32 --kv-blocks 256
    Simulate(simulate::SimulateArgs),
}

/// Candle's thread settings where absent (see `registry::thread_env_defaults`).
fn set_thread_env() {
    for (key, value) in registry::thread_env_defaults() {
        // SAFETY: called first thing in main, before any thread is spawned, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var(key, value) };
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> std::process::ExitCode {
    set_thread_env();
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Workload(args) => workload::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Parity(args) => parity::run(&args),
        Command::Quality(args) => quality::run(&args),
        Command::Gate(args) => gate::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Most runtime threads a command accepts: beyond this a machine has no cores for them, and a typo (`--threads
/// 1000000`) would otherwise start that many.
pub const MAX_THREADS: usize = 1024;

/// `--threads`: 0 (one per core) to [`MAX_THREADS`].
fn thread_count(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a thread count: {e}"))?;
    if n > MAX_THREADS {
        return Err(format!("{n} threads: at most {MAX_THREADS} (0: one per core)"));
    }
    Ok(n)
}

/// A whole number in `min..=max`, for resource knobs: a typo (`--kv-blocks 10^15`) is an error naming the bound, not an
/// allocation the machine cannot make.
fn bounded(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a whole number: {e}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}
