//! How a run's runtimes look in every chart of the HTML report: grouped by the format they compute in (f32 first,
//! then 16-bit, then the quantizations from most bits to fewest), one hue per format from Tableau's 10, its members
//! in shades of that hue from dark to light and, in line charts, every other one dashed. A runtime keeps its colour in
//! every chart of the run, and the legends list the runtimes under their format.

use plotters::style::RGBColor;

use super::RuntimeResult;

/// Tableau's 10 hues, dark and light.
const HUES: [(RGBColor, RGBColor); 10] = [
    (RGBColor(31, 119, 180), RGBColor(174, 199, 232)),
    (RGBColor(255, 127, 14), RGBColor(255, 187, 120)),
    (RGBColor(44, 160, 44), RGBColor(152, 223, 138)),
    (RGBColor(214, 39, 40), RGBColor(255, 152, 150)),
    (RGBColor(148, 103, 189), RGBColor(197, 176, 213)),
    (RGBColor(140, 86, 75), RGBColor(196, 156, 148)),
    (RGBColor(227, 119, 194), RGBColor(247, 182, 210)),
    (RGBColor(127, 127, 127), RGBColor(199, 199, 199)),
    (RGBColor(188, 189, 34), RGBColor(219, 219, 141)),
    (RGBColor(23, 190, 207), RGBColor(158, 218, 229)),
];

/// One runtime's look.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    pub runtime: String,
    /// The format it computes in: results.json's `dtype` (`f32`, `q8_0`, `q4_k_m`, ...).
    pub format: String,
    pub color: RGBColor,
    /// Drawn dashed in line charts (every other member of a format).
    pub dashed: bool,
}

/// Where a format sorts: float32, then bf16 and f16, then quantizations by their bits (the first digit of the name:
/// q8_0, q6_k, q5_k_m, q4_k_m, iq4_xs, q3_k_m, q2_k), anything else last.
fn format_rank(format: &str) -> u32 {
    match format {
        "f32" => 0,
        "bf16" => 1,
        "f16" => 2,
        f => f.chars().find_map(|c| c.to_digit(10)).map_or(99, |bits| 20 - bits.min(9)),
    }
}

/// The styles of `runs`, in chart order: grouped by format, in the run's order within a format.
pub fn styles(runs: &[RuntimeResult]) -> Vec<Style> {
    // By rank, formats of one rank (q4_k_m, q4_1) in the order they first appear, runtimes in the run's order.
    let first = |format: &str| runs.iter().position(|r| r.dtype == format).unwrap_or(0);
    let mut order: Vec<&RuntimeResult> = runs.iter().collect();
    order.sort_by_key(|r| (format_rank(&r.dtype), first(&r.dtype)));
    let mut out: Vec<Style> = Vec::with_capacity(order.len());
    let mut hue = 0;
    let mut k = 0;
    while k < order.len() {
        let format = &order[k].dtype;
        let members = order[k..].iter().take_while(|r| r.dtype == *format).count();
        let (dark, light) = HUES[hue % HUES.len()];
        for (j, r) in order[k..k + members].iter().enumerate() {
            // From the dark shade to 85 % of the way to the light one.
            let t = if members == 1 { 0.0 } else { 0.85 * j as f64 / (members - 1) as f64 };
            let mix = |a: u8, b: u8| (a as f64 + t * (b as f64 - a as f64)).round() as u8;
            out.push(Style {
                runtime: r.runtime.clone(),
                format: format.clone(),
                color: RGBColor(mix(dark.0, light.0), mix(dark.1, light.1), mix(dark.2, light.2)),
                dashed: j % 2 == 1,
            });
        }
        hue += 1;
        k += members;
    }
    out
}

/// The style of `runtime`; a runtime the run does not hold (records of another run) is grey.
pub fn of<'a>(styles: &'a [Style], runtime: &str) -> std::borrow::Cow<'a, Style> {
    match styles.iter().find(|s| s.runtime == runtime) {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(Style {
            runtime: runtime.to_owned(),
            format: String::new(),
            color: RGBColor(127, 127, 127),
            dashed: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(runtime: &str, dtype: &str) -> RuntimeResult {
        let mut r: RuntimeResult = serde_json::from_value(serde_json::json!({
            "runtime": runtime, "version": "", "device": "", "dtype": dtype, "settings": {}, "status": "ok",
            "error": null, "metrics": {}, "requests_csv": "", "output_digest": "",
            "engine": {"steps": 0, "preemptions": 0, "prefix_hit_tokens": 0, "admitted_prompt_tokens": 0,
                       "prefix_hit_rate": 0.0, "peak_kv_blocks": 0, "num_kv_blocks": 0, "mean_batch_seqs": 0.0,
                       "schedule_ms": 0.0, "runtime_ms": 0.0, "postprocess_ms": 0.0,
                       "kv_blocks_timeline": []}
        }))
        .unwrap();
        r.runtime = runtime.into();
        r
    }

    #[test]
    fn groups_by_format_with_one_hue_each() {
        let runs = [
            run("native", "f32"),
            run("native:q8_0", "q8_0"),
            run("native:q4_k_m", "q4_k_m"),
            run("onnx", "f32"),
            run("native:bf16", "bf16"),
            run("llama-cpp:q8_0", "q8_0"),
            run("llama-cpp:shipped", "q4_1"),
            run("llama-cpp:q2_k", "q2_k"),
        ];
        let s = styles(&runs);
        let names: Vec<&str> = s.iter().map(|s| s.runtime.as_str()).collect();
        assert_eq!(
            names,
            [
                "native",
                "onnx",
                "native:bf16",
                "native:q8_0",
                "llama-cpp:q8_0",
                "native:q4_k_m",
                "llama-cpp:shipped",
                "llama-cpp:q2_k"
            ]
        );
        // One hue per format: the first member of each is the hue's dark shade, members differ, dashes alternate.
        assert_eq!(s[0].color, HUES[0].0);
        assert_eq!(s[2].color, HUES[1].0);
        assert_eq!(s[3].color, HUES[2].0);
        assert_ne!(s[3].color, s[4].color);
        assert_eq!((s[3].dashed, s[4].dashed), (false, true));
        assert_eq!(s[5].format, "q4_k_m");
        assert_eq!(s[6].color, HUES[4].0, "q4_1 is a format of its own");
        assert_eq!(of(&s, "not-in-run").color, RGBColor(127, 127, 127));
    }
}
