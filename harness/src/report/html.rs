//! The HTML report: the comparison table and SVG charts drawn with plotters (latency CDFs, percentiles by
//! runtime, KV blocks over time, and throughput against request rate when several rates were run).

use std::fmt::Write;

use plotters::prelude::*;

use super::Results;
use super::chart_style::{self, Style};
use crate::metrics::RequestRecord;

/// Percentiles the percentile charts draw when per-request records are there: enough points to show a tail.
const PERCENTILES: [f64; 13] = [1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart of series, in the order given (grouped by format: [`chart_style::styles`]), the legend beside the
/// data listing them under their format; `None` when there is nothing to draw.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[(Style, Vec<(f64, f64)>)]) -> Option<String> {
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
        let root = SVGBackend::with_string(&mut svg, (860, 400)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        // The legend in a column of its own, right of the data: it never covers a line. Each format a heading.
        let (plot, legend) = root.split_horizontally(640);
        let mut y = 24;
        let mut format = None;
        for (style, _) in series {
            if format != Some(&style.format) && !style.format.is_empty() {
                legend
                    .draw(&Text::new(
                        style.format.clone(),
                        (4, y - 7),
                        ("sans-serif", 12).into_font().style(FontStyle::Bold),
                    ))
                    .ok()?;
                y += 15;
            }
            format = Some(&style.format);
            let line = vec![(10, y), (30, y)];
            if style.dashed {
                legend.draw(&PathElement::new(vec![(10, y), (16, y)], style.color.stroke_width(3))).ok()?;
                legend.draw(&PathElement::new(vec![(22, y), (30, y)], style.color.stroke_width(3))).ok()?;
            } else {
                legend.draw(&PathElement::new(line, style.color.stroke_width(3))).ok()?;
            }
            legend.draw(&Text::new(style.runtime.clone(), (36, y - 7), ("sans-serif", 12))).ok()?;
            y += 15;
        }
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0.min(0.0)..x1 * 1.02, y0.min(0.0)..y1 * 1.05)
            .ok()?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().ok()?;
        for (style, s) in series {
            let stroke = style.color.stroke_width(2);
            if style.dashed {
                chart.draw_series(DashedLineSeries::new(s.iter().copied(), 6, 4, stroke)).ok()?;
            } else {
                chart.draw_series(LineSeries::new(s.iter().copied(), stroke)).ok()?;
            }
        }
        root.present().ok()?;
    }
    Some(svg)
}

/// A horizontal bar chart, one bar a runtime (grouped by format, each in its colour, labelled with its format);
/// `None` when no bar has a value.
fn bar_chart(title: &str, x_label: &str, bars: &[(Style, Option<f64>)]) -> Option<String> {
    let max = bars.iter().filter_map(|(_, v)| *v).fold(0.0f64, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return None;
    }
    let n = bars.len();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 110 + 26 * n as u32)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d(0.0..max * 1.1, (0..n).into_segmented())
            .ok()?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => {
                bars.get(*i).map_or(String::new(), |(s, _)| format!("{} [{}]", s.runtime, s.format))
            }
            _ => String::new(),
        };
        chart.configure_mesh().disable_y_mesh().y_labels(n).y_label_formatter(&name).x_desc(x_label).draw().ok()?;
        for (i, (style, v)) in bars.iter().enumerate() {
            let Some(v) = *v else { continue };
            let bar =
                Rectangle::new([(0.0, SegmentValue::Exact(i)), (v, SegmentValue::Exact(i + 1))], style.color.filled());
            chart.draw_series(std::iter::once(bar)).ok()?;
        }
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

/// [`PERCENTILES`] of `v`.
fn percentiles(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    PERCENTILES.iter().map(|&p| (p, crate::metrics::percentile(&v, p))).collect()
}

/// The whole page.
pub fn render(
    results: &[Results],
    records: &[super::Records],
    quality: Option<&crate::quality::QualityReport>,
) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>nano-vllm report</title><style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}</style></head><body><h1>nano-vllm report</h1>",
    );
    // Speed beside quality first: the summary on top names the fastest setting and the most exact one.
    if let Some(q) = quality {
        html.push_str(&speed_quality_section(results, q));
    }
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
        let styles = chart_style::styles(&res.runs);
        // Named series in chart order: the run's runtimes grouped by format, then any others by name.
        let ordered = |mut series: Vec<(String, Vec<(f64, f64)>)>| -> Vec<(Style, Vec<(f64, f64)>)> {
            let rank = |name: &str| styles.iter().position(|s| s.runtime == name).unwrap_or(usize::MAX);
            series.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
            series.into_iter().map(|(name, pts)| (chart_style::of(&styles, &name).into_owned(), pts)).collect()
        };
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
            charts.push(line_chart(title, "ms", "fraction of requests", &ordered(series)));
        }
        for metric in ["ttft", "tpot"] {
            let series: Vec<(String, Vec<(f64, f64)>)> = res
                .runs
                .iter()
                .map(|run| {
                    // From the per-request records where the run has them (p1 .. p99), else the summary's three.
                    let recs = records.iter().find(|(name, _)| *name == run.runtime).map(|(_, r)| r);
                    let values: Vec<f64> = recs.map_or_else(Vec::new, |recs| {
                        recs.iter().filter_map(|r| if metric == "ttft" { r.ttft_ms() } else { r.tpot_ms() }).collect()
                    });
                    let pts = if values.len() >= 2 {
                        percentiles(values)
                    } else {
                        [50.0, 90.0, 99.0]
                            .iter()
                            .filter_map(|&p| {
                                let key =
                                    if p == 50.0 { format!("median_{metric}_ms") } else { format!("p{p}_{metric}_ms") };
                                run.metric(&key).map(|v| (p, v))
                            })
                            .collect()
                    };
                    (run.runtime.clone(), pts)
                })
                .collect();
            charts.push(line_chart(
                &format!("{} percentiles by runtime", metric.to_uppercase()),
                "percentile",
                "ms",
                &ordered(series),
            ));
        }
        for (metric, title, unit) in [
            ("output_throughput", "Output throughput by runtime", "output tok/s"),
            ("median_tpot_ms", "Median TPOT by runtime", "ms"),
        ] {
            let bars: Vec<(Style, Option<f64>)> = styles
                .iter()
                .map(|s| (s.clone(), res.runs.iter().find(|r| r.runtime == s.runtime).and_then(|r| r.metric(metric))))
                .collect();
            charts.push(bar_chart(title, unit, &bars));
        }
        let kv: Vec<(String, Vec<(f64, f64)>)> = res
            .runs
            .iter()
            .map(|r| (r.runtime.clone(), r.engine.kv_blocks_timeline.iter().map(|p| (p[0], p[1])).collect()))
            .collect();
        charts.push(line_chart("KV blocks in use", "s", "blocks", &ordered(kv)));
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
        let styles = results.first().map(|r| chart_style::styles(&r.runs)).unwrap_or_default();
        let rank = |name: &str| styles.iter().position(|s| s.runtime == name).unwrap_or(usize::MAX);
        let mut series: Vec<_> = by_runtime
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                (chart_style::of(&styles, &k).into_owned(), v)
            })
            .collect();
        series.sort_by_key(|(s, _)| rank(&s.runtime));
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

/// Speed beside quality: the summary, the chart and the table of [`super::speed_quality`].
fn speed_quality_section(results: &[Results], q: &crate::quality::QualityReport) -> String {
    use super::speed_quality::{HEADER, chart_svg, join, pareto, summary};
    let points = join(results, q);
    let mut html = String::from("<h2>Speed and quality</h2>");
    if points.is_empty() {
        html.push_str("<p>No runtime is in both the bench run and the quality run.</p>");
        return html;
    }
    let bold = escape(&summary(&points, q));
    // The summary's **name** marks, as HTML.
    let mut parts = bold.split("**");
    let mut para = parts.next().unwrap_or_default().to_owned();
    for (k, part) in parts.enumerate() {
        let _ = write!(para, "{}{part}", if k % 2 == 0 { "<b>" } else { "</b>" });
    }
    let _ = write!(html, "<p>{para}</p>");
    let styles = results.first().map(|r| chart_style::styles(&r.runs)).unwrap_or_default();
    if let Some(svg) = chart_svg(&points, &styles) {
        html.push_str(&svg);
    }
    let cells = |tag: &str, cells: &mut dyn Iterator<Item = String>| {
        cells.map(|c| format!("<{tag}>{}</{tag}>", escape(&c))).collect::<String>()
    };
    let _ = write!(html, "<table><tr>{}</tr>", cells("th", &mut HEADER.iter().map(|h| (*h).to_owned())));
    let front = pareto(&points);
    for (i, p) in points.iter().enumerate() {
        let _ = write!(html, "<tr>{}</tr>", cells("td", &mut p.cells(front.contains(&i)).into_iter()));
    }
    html.push_str("</table>");
    html
}
