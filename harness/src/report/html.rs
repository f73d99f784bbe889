//! The HTML report: the comparison table and SVG charts drawn with plotters (latency CDFs, percentiles by
//! runtime, KV blocks over time, and throughput against request rate when several rates were run).

use std::fmt::Write;

use plotters::prelude::*;

use super::Results;
use crate::metrics::RequestRecord;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart of named series; `None` when there is nothing to draw.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Option<String> {
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() || !y0.is_finite() {
        return None;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0.min(0.0)..x1 * 1.02, y0.min(0.0)..y1 * 1.05)
            .ok()?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().ok()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
                .ok()?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// An empirical CDF of values.
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.into_iter().enumerate().map(|(i, x)| (x, (i + 1) as f64 / n)).collect()
}

/// The whole page.
pub fn render(results: &[Results], records: &[super::Records]) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>nano-vllm report</title><style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}</style></head><body><h1>nano-vllm report</h1>",
    );
    for (k, res) in results.iter().enumerate() {
        let records: &[(String, Vec<RequestRecord>)] = records.get(k).map_or(&[], |r| r.as_slice());
        let m = &res.metadata;
        let _ = write!(
            html,
            "<h2>{} on {}</h2><p>{} mode, {} requests (+{} warm-up), workload sha256 {}…, engine: max_num_seqs {}, max_num_batched_tokens {}, block_size {}, {} KV blocks, prefix caching {}, chunked prefill {}. Machine: {} ({} cores), commit {}.</p>",
            escape(&m.workload.source),
            escape(&m.bundle.name),
            m.workload.mode,
            m.workload.num_requests,
            m.workload.warmup,
            &m.workload.sha256[..m.workload.sha256.len().min(12)],
            m.engine.max_num_seqs,
            m.engine.max_num_batched_tokens,
            m.engine.block_size,
            m.engine.num_kv_blocks,
            m.engine.prefix_caching,
            m.engine.chunked_prefill,
            escape(&m.cpu_model),
            m.cores,
            m.git_commit.as_deref().unwrap_or("unknown")
        );
        if let Some(p) = &m.provenance {
            let _ = write!(html, "<p><small>Provenance: {}.</small></p>", escape(&p.describe()));
        }
        html.push_str("<table><tr><th>runtime</th><th>measured</th><th>status</th><th>failed</th><th>req/s</th><th>output tok/s</th><th>median TTFT ms</th><th>p99 TTFT ms</th><th>median TPOT ms</th><th>p99 TPOT ms</th><th>median ITL ms</th><th>median E2EL ms</th><th>preemptions</th><th>prefix hit rate</th><th>seqs/step</th><th>settings</th></tr>");
        for run in &res.runs {
            let f = |k: &str| run.metric(k).map_or("-".to_string(), |v| format!("{v:.2}"));
            let status = run.error.as_ref().map_or(run.status.clone(), |e| format!("failed: {}", escape(e)));
            let cells = super::markdown::RowCells::of(run, m.engine.max_num_seqs);
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
                escape(&run.runtime),
                cells.measured,
                escape(&cells.failed),
                f("request_throughput"),
                f("output_throughput"),
                f("median_ttft_ms"),
                f("p99_ttft_ms"),
                f("median_tpot_ms"),
                f("p99_tpot_ms"),
                f("median_itl_ms"),
                f("median_e2el_ms"),
                cells.preemptions,
                cells.hit_rate,
                escape(&cells.seqs),
                escape(
                    &run.settings
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "model" | "cpu_features" | "kv_cache" | "prefix_reuse"))
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            );
        }
        html.push_str("</table><div class=\"charts\">");
        let mut charts = Vec::new();
        for (metric, title) in [("ttft", "TTFT CDF"), ("e2el", "E2E latency CDF")] {
            let series: Vec<(String, Vec<(f64, f64)>)> = records
                .iter()
                .map(|(name, recs)| {
                    let v =
                        recs.iter().filter_map(|r| if metric == "ttft" { r.ttft_ms() } else { r.e2el_ms() }).collect();
                    (name.clone(), cdf(v))
                })
                .collect();
            charts.push(line_chart(title, "ms", "fraction of requests", &series));
        }
        for metric in ["ttft", "tpot"] {
            let series: Vec<(String, Vec<(f64, f64)>)> = res
                .runs
                .iter()
                .map(|run| {
                    let pts = [50.0, 90.0, 99.0]
                        .iter()
                        .filter_map(|&p| {
                            let key =
                                if p == 50.0 { format!("median_{metric}_ms") } else { format!("p{p}_{metric}_ms") };
                            run.metric(&key).map(|v| (p, v))
                        })
                        .collect();
                    (run.runtime.clone(), pts)
                })
                .collect();
            charts.push(line_chart(
                &format!("{} percentiles by runtime", metric.to_uppercase()),
                "percentile",
                "ms",
                &series,
            ));
        }
        let kv: Vec<(String, Vec<(f64, f64)>)> = res
            .runs
            .iter()
            .map(|r| (r.runtime.clone(), r.engine.kv_blocks_timeline.iter().map(|p| (p[0], p[1])).collect()))
            .collect();
        charts.push(line_chart("KV blocks in use", "s", "blocks", &kv));
        for svg in charts.into_iter().flatten() {
            html.push_str(&svg);
        }
        html.push_str("</div>");
    }
    // Throughput against request rate, across runs at different rates (a sweep).
    let mut by_runtime: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for res in results {
        if let Some(rate) = res.metadata.workload.request_rate {
            for run in &res.runs {
                if let Some(t) = run.metric("output_throughput") {
                    by_runtime.entry(run.runtime.clone()).or_default().push((rate, t));
                }
            }
        }
    }
    if by_runtime.values().any(|v| v.len() > 1) {
        let series: Vec<_> = by_runtime
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                (k, v)
            })
            .collect();
        if let Some(svg) =
            line_chart("Output throughput against request rate", "request rate (req/s)", "output tok/s", &series)
        {
            html.push_str("<h2>Request-rate sweep</h2>");
            html.push_str(&svg);
        }
    }
    html.push_str("</body></html>\n");
    html
}
