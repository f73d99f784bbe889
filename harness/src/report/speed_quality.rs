//! Speed beside quality: a `bench` run's throughput and latency joined by runtime name with a `quality` run's
//! perplexity and KL divergence, the settings on the Pareto front (none both faster and closer to the base), a
//! summary that names the fastest setting and the most exact one, and the chart of the two (output tok/s against
//! mean KL divergence).

use std::fmt::Write as _;

use plotters::prelude::*;

use super::Results;
use super::chart_style::{self, Style};
use crate::quality::QualityReport;

/// One runtime setting measured both ways.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub runtime: String,
    pub output_throughput: f64,
    pub median_tpot_ms: Option<f64>,
    pub perplexity: f64,
    /// Mean KL(base || runtime); 0 for the base itself.
    pub mean_kl: f64,
    pub top1_agreement: Option<f64>,
    pub is_base: bool,
}

/// The columns of the speed-and-quality table, Markdown's and HTML's.
pub const HEADER: [&str; 7] =
    ["runtime", "output tok/s", "median TPOT ms", "perplexity", "mean KL", "top-1 agreement", "Pareto front"];

impl Point {
    /// The table's cells of this point (not escaped), [`HEADER`]'s order.
    pub fn cells(&self, on_front: bool) -> [String; 7] {
        [
            self.runtime.clone(),
            format!("{:.1}", self.output_throughput),
            self.median_tpot_ms.map_or("-".into(), |v| format!("{v:.2}")),
            format!("{:.4}", self.perplexity),
            if self.is_base { "base".into() } else { format!("{:.3e}", self.mean_kl) },
            self.top1_agreement.map_or("-".into(), |v| format!("{v:.4}")),
            if on_front { "yes" } else { "" }.into(),
        ]
    }
}

/// The runtimes in both runs (the first bench run that has each), in the bench run's order.
pub fn join(results: &[Results], quality: &QualityReport) -> Vec<Point> {
    let mut points: Vec<Point> = Vec::new();
    for run in results.iter().flat_map(|r| &r.runs) {
        if points.iter().any(|p| p.runtime == run.runtime) {
            continue;
        }
        let (Some(q), Some(tput)) =
            (quality.runtimes.iter().find(|q| q.runtime == run.runtime), run.metric("output_throughput"))
        else {
            continue;
        };
        let Some(ppl) = q.perplexity else { continue };
        let mean_kl = match &q.vs_base {
            Some(v) => v.mean_kl.mean,
            None if q.is_base => 0.0,
            None => continue,
        };
        points.push(Point {
            runtime: run.runtime.clone(),
            output_throughput: tput,
            median_tpot_ms: run.metric("median_tpot_ms"),
            perplexity: ppl.perplexity,
            mean_kl,
            top1_agreement: q.vs_base.as_ref().map(|v| v.top1_agreement.mean),
            is_base: q.is_base,
        });
    }
    points
}

/// Indices of the points on the Pareto front: no other point is at least as fast and at least as close to the base,
/// and better in one of the two. Sorted by KL.
pub fn pareto(points: &[Point]) -> Vec<usize> {
    let dominated = |i: usize| {
        points.iter().any(|q| {
            let p = &points[i];
            q.output_throughput >= p.output_throughput
                && q.mean_kl <= p.mean_kl
                && (q.output_throughput > p.output_throughput || q.mean_kl < p.mean_kl)
        })
    };
    let mut front: Vec<usize> = (0..points.len()).filter(|&i| !dominated(i)).collect();
    front.sort_by(|&a, &b| points[a].mean_kl.total_cmp(&points[b].mean_kl));
    front
}

/// The Markdown section: the summary, then one row per setting.
pub fn markdown(points: &[Point], quality: &QualityReport) -> String {
    let mut s = String::from("## Speed and quality\n\n");
    if points.is_empty() {
        s.push_str("No runtime is in both the bench run and the quality run.\n");
        return s;
    }
    let _ = writeln!(s, "{}\n", summary(points, quality));
    let _ = writeln!(s, "| {} |\n|---|---:|---:|---:|---:|---:|---|", HEADER.join(" | "));
    let front = pareto(points);
    for (i, p) in points.iter().enumerate() {
        let _ = writeln!(s, "| {} |", p.cells(front.contains(&i)).join(" | "));
    }
    s
}

/// One paragraph: the fastest setting, the most exact one (the base excluded), and the front.
pub fn summary(points: &[Point], quality: &QualityReport) -> String {
    let fastest = points.iter().max_by(|a, b| a.output_throughput.total_cmp(&b.output_throughput));
    let exact = points.iter().filter(|p| !p.is_base).min_by(|a, b| a.mean_kl.total_cmp(&b.mean_kl));
    let base = points.iter().find(|p| p.is_base);
    let mut s = format!(
        "Quality on {} ({} tokens scored) against {}. ",
        quality.corpus.name,
        quality.corpus.scored_tokens,
        quality.base.as_deref().unwrap_or("no base")
    );
    if let Some(f) = fastest {
        let _ = write!(
            s,
            "Fastest: **{}**, {:.1} output tok/s{}, mean KL {:.2e}, perplexity {:.3}{}. ",
            f.runtime,
            f.output_throughput,
            base.filter(|b| b.runtime != f.runtime && b.output_throughput > 0.0)
                .map(|b| format!(" ({:.2}x {})", f.output_throughput / b.output_throughput, b.runtime))
                .unwrap_or_default(),
            f.mean_kl,
            f.perplexity,
            base.map(|b| format!(" ({:+.2} % of the base's)", 100.0 * (f.perplexity / b.perplexity - 1.0)))
                .unwrap_or_default()
        );
    }
    if let Some(e) = exact {
        let _ = write!(
            s,
            "Most exact besides the base: **{}**, mean KL {:.2e}, {:.1} output tok/s. ",
            e.runtime, e.mean_kl, e.output_throughput
        );
    }
    let front: Vec<&str> = pareto(points).into_iter().map(|i| points[i].runtime.as_str()).collect();
    let _ = write!(s, "On the Pareto front (none faster and closer to the base): {}.", front.join(", "));
    s
}

/// The chart: output tok/s against mean KL (log scale; the base, KL 0, on the left edge), every point labelled and
/// coloured as `styles` colour its runtime (by format, the legend beside the data), the Pareto front drawn through its
/// points, which are ringed. `None` when there is nothing to draw.
pub fn chart_svg(points: &[Point], styles: &[Style]) -> Option<String> {
    if points.is_empty() {
        return None;
    }
    let kls: Vec<f64> = points.iter().map(|p| p.mean_kl).filter(|&k| k > 0.0).collect();
    let kl_min = kls.iter().copied().fold(f64::INFINITY, f64::min);
    let kl_max = kls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if kl_min.is_finite() { (kl_min / 10.0, kl_max * 3.0) } else { (1e-6, 1.0) };
    let edge = lo * 1.5;
    let x = |p: &Point| if p.mean_kl > 0.0 { p.mean_kl } else { edge };
    let y_max = points.iter().map(|p| p.output_throughput).fold(0.0, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 520)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (plot, legend) = root.split_horizontally(880);
        let mut y = 40;
        let mut formats: Vec<&Style> = Vec::new();
        for p in points {
            if let Some(s) = styles.iter().find(|s| s.runtime == p.runtime)
                && !formats.iter().any(|f| f.format == s.format)
            {
                formats.push(s);
            }
        }
        formats.sort_by_key(|f| styles.iter().position(|s| s.format == f.format));
        for f in formats {
            legend.draw(&(EmptyElement::at((10, y)) + Circle::new((0, 0), 5, f.color.filled()))).ok()?;
            legend.draw(&Text::new(f.format.clone(), (20, y - 7), ("sans-serif", 12))).ok()?;
            y += 17;
        }
        legend.draw(&(EmptyElement::at((10, y)) + Circle::new((0, 0), 8, RED.stroke_width(2)))).ok()?;
        legend.draw(&Text::new("Pareto front", (22, y - 7), ("sans-serif", 12))).ok()?;
        let mut chart = ChartBuilder::on(&plot)
            .caption("Speed against quality (up and left is better)", ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..y_max.max(1.0))
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("mean KL divergence to the base (log scale; the base at the left edge)")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_desc("output tok/s")
            .draw()
            .ok()?;
        let front = pareto(points);
        let line = front.iter().map(|&i| (x(&points[i]), points[i].output_throughput));
        chart.draw_series(LineSeries::new(line, RED.stroke_width(2))).ok()?;
        for (i, p) in points.iter().enumerate() {
            let color = chart_style::of(styles, &p.runtime).color;
            let ring = if front.contains(&i) { RED.stroke_width(2) } else { TRANSPARENT.stroke_width(0) };
            let at = (x(p), p.output_throughput);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Circle::new((0, 0), 8, ring)
                        + Circle::new((0, 0), 5, color.filled())
                        + Text::new(p.runtime.clone(), (9, -14), ("sans-serif", 12)),
                ))
                .ok()?;
        }
        root.present().ok()?;
    }
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(runtime: &str, tput: f64, kl: f64) -> Point {
        Point {
            runtime: runtime.into(),
            output_throughput: tput,
            median_tpot_ms: None,
            perplexity: 10.0 + kl,
            mean_kl: kl,
            top1_agreement: None,
            is_base: kl == 0.0,
        }
    }

    #[test]
    fn the_front_keeps_only_settings_nothing_beats_both_ways() {
        let points = [
            point("native", 100.0, 0.0),
            point("onnx", 90.0, 1e-9),            // slower and further: dominated by native
            point("native:q8_0", 150.0, 4e-3),    // faster, further: on the front
            point("llama-cpp:q8_0", 140.0, 4e-3), // as far as native:q8_0 and slower: dominated
            point("native:q4_0", 200.0, 0.35),
        ];
        let names: Vec<&str> = pareto(&points).into_iter().map(|i| points[i].runtime.as_str()).collect();
        assert_eq!(names, ["native", "native:q8_0", "native:q4_0"]);
        let svg = chart_svg(&points, &[]).unwrap();
        assert!(svg.contains("Speed against quality") && svg.contains("native:q4_0"), "{svg}");
    }
}
