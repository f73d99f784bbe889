//! `nano-vllm`: the harness binary.

mod generate;
mod registry;
mod simulate;

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
    /// Generate text from prompts through the engine with a runtime, streaming the first prompt's tokens.
    ///
    /// Example: nano-vllm generate --bundle fixtures/tiny-llama --runtime native --prompt "Once upon a time"
    Generate(generate::GenerateArgs),
    /// Run the engine on the model-free mock runtime and print scheduling statistics.
    ///
    /// Example: nano-vllm simulate --requests 200 --prompt-len 64 --max-tokens 32 --kv-blocks 256
    Simulate(simulate::SimulateArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(args) => generate::run(&args),
        Command::Simulate(args) => simulate::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
