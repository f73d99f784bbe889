//! The Markdown comparison table: one row per runtime (per workload), with ratios against a baseline runtime.

use std::fmt::Write;

use super::Results;

/// A table of the headline figures; `baseline` (default: the first runtime) gets ratio 1.00.
pub fn comparison(results: &[Results], baseline: Option<&str>) -> String {
    let mut out = String::new();
    for res in results {
        let w = &res.metadata.workload;
        let _ = writeln!(
            out,
            "### {} on {} ({} mode, {} requests{}{})\n",
            w.source,
            res.metadata.bundle.name,
            w.mode,
            w.num_requests,
            w.request_rate.map(|r| format!(", {r} req/s")).unwrap_or_default(),
            w.max_concurrency
                .map(|n| format!(", at most {n} in flight per row: arrivals gated by the client, TTFT from release"))
                .unwrap_or_default()
        );
        let base = baseline.and_then(|b| res.runs.iter().find(|r| r.runtime == b)).or(res.runs.first());
        let base_name = base.map_or("-", |b| b.runtime.as_str());
        let _ = writeln!(
            out,
            "| runtime | measured | dtype | status | failed | req/s | output tok/s | x {base_name} | median TTFT ms | p99 TTFT ms | median TPOT ms | p99 TPOT ms | median ITL ms | median E2EL ms | preemptions | prefix hit rate | seqs/step |"
        );
        let _ = writeln!(out, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for run in &res.runs {
            let f = |k: &str| run.metric(k).map_or("-".to_string(), |v| format!("{v:.2}"));
            let ratio = match (run.metric("output_throughput"), base.and_then(|b| b.metric("output_throughput"))) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let status = match &run.error {
                Some(e) => format!("failed: {}", e.replace('|', "/")),
                None => run.status.clone(),
            };
            let RowCells { measured, failed, preemptions, hit_rate, seqs } =
                RowCells::of(run, res.metadata.engine.max_num_seqs);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.runtime,
                measured,
                run.dtype,
                status,
                failed,
                f("request_throughput"),
                f("output_throughput"),
                ratio,
                f("median_ttft_ms"),
                f("p99_ttft_ms"),
                f("median_tpot_ms"),
                f("p99_tpot_ms"),
                f("median_itl_ms"),
                f("median_e2el_ms"),
                preemptions,
                hit_rate,
                seqs
            );
        }
        if res.runs.iter().any(|r| r.is_http()) {
            let _ = writeln!(
                out,
                "\nHTTP rows: a server measured by this harness's client on the same machine (vLLM `bench serve` \
                 definitions: TTFT from the scheduled send to the first content chunk; output tokens from the \
                 server's usage, else the model's tokenizer). In-process rows: a runtime driven by this harness's \
                 engine. Engine settings above apply to in-process rows only; a server schedules with its own."
            );
        }
        if let Some(p) = &res.metadata.provenance {
            let _ = writeln!(out, "\nProvenance: {}.", p.describe());
        }
        let _ = writeln!(out, "\nRuntime settings (what changes a runtime's speed):\n");
        for run in &res.runs {
            let settings: Vec<String> = run
                .settings
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "model" | "cpu_features" | "kv_cache" | "prefix_reuse"))
                .map(|(k, v)| format!("{k}={}", v.replace('|', "/")))
                .collect();
            let _ = writeln!(out, "- **{}** ({}): {}", run.runtime, run.device, settings.join(", "));
        }
        out.push('\n');
    }
    out
}

/// The cells of a row that depend on how the row was measured (in process or over HTTP).
#[derive(Debug)]
pub struct RowCells {
    pub measured: String,
    /// Failed requests, with their kinds.
    pub failed: String,
    pub preemptions: String,
    pub hit_rate: String,
    pub seqs: String,
}

impl RowCells {
    pub fn of(run: &super::RuntimeResult, engine_max_num_seqs: usize) -> Self {
        let n = run.metric("failed").map_or("-".to_string(), |v| format!("{v:.0}"));
        let failed = if run.failures.is_empty() {
            n
        } else {
            let kinds: Vec<String> = run.failures.iter().map(|(k, c)| format!("{k} {c}")).collect();
            format!("{n} ({})", kinds.join(", "))
        };
        if run.is_http() || !run.tool.is_empty() {
            // A server's scheduler is its own, and so is another tool's: the engine's figures exist only for runtimes
            // this harness drove.
            let dash = || "-".to_string();
            let measured = with_tool(if run.is_http() { "HTTP" } else { "in-process" }, run);
            Self { measured, failed, preemptions: dash(), hit_rate: dash(), seqs: dash() }
        } else {
            Self {
                measured: with_tool("in-process", run),
                failed,
                preemptions: run.engine.preemptions.to_string(),
                hit_rate: format!("{:.1}%", 100.0 * run.engine.prefix_hit_rate),
                seqs: seqs_per_step(run, engine_max_num_seqs),
            }
        }
    }
}

/// How a row was measured, with the tool when it was imported (`HTTP (vllm bench serve)`).
fn with_tool(measured: &str, run: &super::RuntimeResult) -> String {
    if run.tool.is_empty() { measured.to_owned() } else { format!("{measured} ({})", run.tool) }
}

/// Mean sequences per engine step, and the runtime's cap when it holds fewer sequences than the engine's
/// `max_num_seqs` (llama.cpp's `n_seq_max`): such a runtime runs more, smaller steps.
pub fn seqs_per_step(run: &super::RuntimeResult, engine_max_num_seqs: usize) -> String {
    let cap = run.settings.get("n_seq_max").and_then(|v| v.parse::<usize>().ok()).filter(|&n| n < engine_max_num_seqs);
    match cap {
        Some(n) => format!("{:.1} (capped at {n} of {engine_max_num_seqs})", run.engine.mean_batch_seqs),
        None => format!("{:.1}", run.engine.mean_batch_seqs),
    }
}
