//! `nano-vllm parity`: runtimes against a bundle's reference, through the engine, and the bundle's tokenizer against
//! its reference ids.
//!
//! Per runtime ([`check_runtime`]): every engine situation of [`nano_vllm_conformance::Situation`] (alone, batched
//! with prefill chunks next to decodes, prefix-cached, preempted and recomputed), greedy, logits at every computed
//! position, compared with the reference; lossy settings ([`ParityCheck::TeacherForced`]) are judged teacher forced
//! against the distribution tolerance instead. Tolerances come from the bundle's manifest unless overridden
//! ([`ToleranceOverrides`]). Per tokenizer ([`tokenizer::check_tokenizer`]): the bundle's `tokenizer.json` through the
//! tokenizers crate, and each selected runtime's own tokenizer (llama.cpp's GGUF vocabulary), case by case.
//!
//! The report ([`ParityReport`], `parity.json` schema 1) keeps every figure; [`table`] prints one line per runtime
//! and tokenizer.

mod report;
pub mod tokenizer;

pub use report::{
    BundleParity, Figures, PARITY_SCHEMA_VERSION, PairAgreement, ParityReport, RuntimeParity, SituationParity, Status,
    TeacherForced, TokenizerParity, ToleranceUsed, table,
};

use nano_vllm_bundle::gguf::GgufFile;
use nano_vllm_bundle::{Bundle, LogitTolerance, Q8Tolerance};
use nano_vllm_conformance::{
    PromptRun, check_situations, compare, compare_runs, compare_teacher_forced, run_teacher_forced,
};

use nano_vllm_models::model::ModelSource;
use nano_vllm_models::registry::{self, Mix, ParityCheck, RuntimeSettings, RuntimeSpec, SameFile};

/// Tolerances given on the command line, replacing the manifest's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToleranceOverrides {
    pub max_abs_diff: Option<f32>,
    pub argmax_agreement: Option<f64>,
    pub max_mean_kl: Option<f64>,
    pub min_top1_agreement: Option<f64>,
}

impl ToleranceOverrides {
    fn elementwise(&self, manifest: &LogitTolerance) -> LogitTolerance {
        LogitTolerance {
            max_abs_diff: self.max_abs_diff.unwrap_or(manifest.max_abs_diff),
            argmax_agreement: self.argmax_agreement.unwrap_or(manifest.argmax_agreement),
            reason: manifest.reason.clone(),
        }
    }

    fn distribution(&self, manifest: &Q8Tolerance) -> Q8Tolerance {
        Q8Tolerance {
            max_mean_kl: self.max_mean_kl.unwrap_or(manifest.max_mean_kl),
            min_top1_agreement: self.min_top1_agreement.unwrap_or(manifest.min_top1_agreement),
            basis: manifest.basis.clone(),
            order_floor_kl: manifest.order_floor_kl,
            // `--max-abs-diff` overrides the element-wise tolerance only: the lossy settings keep their bound.
            max_abs_diff: manifest.max_abs_diff,
        }
    }
}

/// Checks runtime `name` against `bundle`'s reference. Never panics on a runtime's failure: a runtime that does not
/// build or whose engine run fails is [`Status::Error`] with the reason.
pub fn check_runtime(
    spec: &RuntimeSpec,
    bundle: &Bundle,
    settings: &RuntimeSettings,
    overrides: &ToleranceOverrides,
) -> RuntimeParity {
    check_runtime_keeping_runs(spec, bundle, settings, overrides).0
}

/// [`check_runtime`], also returning the teacher-forced runs of a lossy setting (for [`PairAgreement`]).
fn check_runtime_keeping_runs(
    spec: &RuntimeSpec,
    bundle: &Bundle,
    settings: &RuntimeSettings,
    overrides: &ToleranceOverrides,
) -> (RuntimeParity, Option<Vec<PromptRun>>) {
    let name = spec.name();
    let (check, elementwise, distribution) = tolerances_for(spec, bundle, overrides);
    let out = RuntimeParity::new(name, check, &elementwise, &distribution);
    let distribution = match distribution {
        Ok(d) => d,
        Err(e) => return (out.error(e), None),
    };
    let reference = match bundle.reference() {
        Ok(r) => r,
        Err(e) => return (out.error(format!("reading the reference: {e}")), None),
    };
    let mut out = out;
    // The engine's context: the model's, cut to what the reference needs (a long-context model's full context
    // would size per-sequence caches for nothing).
    let longest = reference.prompts.iter().map(|p| p.prompt_ids.len() + p.greedy_tokens.len()).max().unwrap_or(1);
    let context = bundle.config().context_length.min(longest.next_multiple_of(256));
    let settings = &RuntimeSettings { max_model_len: Some(context), ..settings.clone() };
    let model = ModelSource::from(bundle.clone());
    let model = &model;
    // The first build shows whether the runtime loads at all (one clear error rather than one per situation).
    if let Err(e) = registry::build(spec, model, settings) {
        return (out.error(e.to_string()), None);
    }
    if let ParityCheck::TeacherForcedMix(mix) = check
        && let Err(e) = mix_types_match(spec, model, bundle, mix)
    {
        return (out.error(e), None);
    }
    // Lossy runtimes run the situations for their mechanics and figures; only teacher forcing judges their logits.
    let teacher_forced = check.is_teacher_forced();
    let situation_tolerance = (!teacher_forced).then_some(&elementwise);
    let make = || registry::build(spec, model, settings);
    let checks = check_situations(name, &reference, context, situation_tolerance, make);
    out.failures.extend(checks.failures);
    out.situations = checks
        .reports
        .iter()
        .map(|(situation, run, figures)| SituationParity {
            situation: situation.as_str().to_owned(),
            steps: run.steps,
            max_batch: run.max_batch,
            prefix_hit_tokens: run.prefix_hit_tokens,
            preemptions: run.preemptions,
            figures: Figures::from(figures),
        })
        .collect();
    // Pooled over every situation: the figures of the runtime on this bundle.
    let pooled = compare(checks.reports.iter().flat_map(|(_, run, _)| &run.prompts), &reference.prompts);
    out.figures = (!checks.reports.is_empty()).then(|| Figures::from(&pooled));

    let mut kept = None;
    if teacher_forced {
        let runs = registry::build(spec, model, settings)
            .map_err(|e| e.to_string())
            .and_then(|rt| run_teacher_forced(rt, &reference, context).map_err(|e| e.to_string()));
        match runs {
            Ok(runs) => {
                let figures = compare_teacher_forced(&runs, &reference.prompts);
                eprintln!("{name:<12} teacher forced | {}", figures.summary());
                if let Err(e) = figures.check(&distribution) {
                    out.failures.push(format!("{name} teacher forced: {e}"));
                }
                out.teacher_forced = Some(TeacherForced::from(&figures));
                kept = Some(runs);
            }
            Err(e) => out.failures.push(format!("{name} teacher forced: {e}")),
        }
    }
    if !out.failures.is_empty() {
        out.status = if out.figures.is_none() { Status::Error } else { Status::Fail };
    }
    (out, kept)
}

/// How closely two runtimes on the same quantized file agree, teacher forced: KL(b || a), held to the larger of a
/// quarter of the smaller of their KLs to the float32 reference and [`PAIR_FLOOR_FACTOR`] times the manifest's
/// `order_floor_kl` of that setting. Two implementations of one quantized model must be much closer to each other than
/// either is to the unquantized model, except that activation rounding makes a deep model's logits sensitive to the
/// f32 summation order (a last-bit difference flips a rounding that later layers carry): the floor measures that, and
/// on the real model it is about the size of the quantization error itself. A half-precision file (F16, BF16) has no
/// measured floor: its pair is held to [`HALF_PAIR_KL_FRACTION`] times the smaller KL, the half type's own error
/// (both runtimes round each product's input to the half type, and a last-bit difference flips some of those
/// roundings: measured 3-40 % of that error on the tiny and bench bundles), not to Q4_0's floor, which is hundreds of
/// times that error.
fn pair_agreement(
    a: &RuntimeParity,
    ra: &[PromptRun],
    b: &RuntimeParity,
    rb: &[PromptRun],
    floor: Option<f64>,
    fraction: f64,
) -> PairAgreement {
    let figures = compare_runs(ra, rb);
    let kl_a = a.teacher_forced.as_ref().map_or(f64::NAN, |t| t.mean_kl);
    let kl_b = b.teacher_forced.as_ref().map_or(f64::NAN, |t| t.mean_kl);
    let max_mean_kl = (fraction * kl_a.min(kl_b)).max(PAIR_FLOOR_FACTOR * floor.unwrap_or(0.0));
    let mut failures = Vec::new();
    if figures.rows == 0 || figures.missing_rows > 0 {
        failures.push(format!("{} of {} rows compared", figures.rows, figures.rows + figures.missing_rows));
    }
    if figures.mean_kl.is_nan() || figures.mean_kl > max_mean_kl {
        failures.push(format!(
            "{} vs {}: mean KL {:.3e} between them exceeds {max_mean_kl:.3e} (the larger of {fraction} x the \
             smaller KL to the reference, {kl_a:.3e} / {kl_b:.3e}, and {PAIR_FLOOR_FACTOR} x the order floor {})",
            a.runtime,
            b.runtime,
            figures.mean_kl,
            floor.map_or("(none)".to_owned(), |f| format!("{f:.3e}"))
        ));
    }
    eprintln!("{:<12} vs {:<16} | {}", a.runtime, b.runtime, figures.summary());
    PairAgreement {
        a: a.runtime.clone(),
        b: b.runtime.clone(),
        figures: TeacherForced::from(&figures),
        a_mean_kl_to_reference: kl_a,
        b_mean_kl_to_reference: kl_b,
        order_floor_kl: floor,
        max_mean_kl,
        status: if failures.is_empty() { Status::Pass } else { Status::Fail },
        failures,
    }
}

/// See [`pair_agreement`].
const PAIR_FLOOR_FACTOR: f64 = 2.0;
/// See [`pair_agreement`].
const PAIR_KL_FRACTION: f64 = 0.25;
/// See [`pair_agreement`].
const HALF_PAIR_KL_FRACTION: f64 = 1.0;

/// Everything parity checks on the bundle in `dir`: the bundle itself (manifest, checksums), each runtime of
/// `runtime_spec` (`all`, or names), the bundle's tokenizer through the tokenizers crate, the tokenizer built from a
/// shipped GGUF's vocabulary, and the runtimes' own tokenizers.
pub fn check_bundle(
    dir: &std::path::Path,
    runtime_spec: &str,
    settings: &RuntimeSettings,
    overrides: &ToleranceOverrides,
) -> BundleParity {
    let mut out = BundleParity {
        bundle: dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        dir: dir.display().to_string(),
        manifest_sha256: String::new(),
        error: None,
        runtimes: Vec::new(),
        agreement: Vec::new(),
        tokenizers: Vec::new(),
        left_out: Vec::new(),
    };
    let bundle = match Bundle::open(dir).and_then(|b| b.verify().map(|()| b)) {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.bundle = bundle.name().to_owned();
    out.manifest_sha256 = bundle.manifest_sha256().to_owned();
    let model = ModelSource::from(bundle.clone());
    let runtimes = match registry::runtime_list(runtime_spec, &registry::default_runtimes_for(&model)) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    eprintln!("   runtimes: {}", runtimes.iter().map(RuntimeSpec::name).collect::<Vec<_>>().join(", "));
    if runtime_spec.trim() == "all" {
        for (name, why) in registry::left_out_of_all(&model) {
            eprintln!("   left out of all: {name}: {why}");
            out.left_out.push(format!("{name}: {why}"));
        }
    }
    let mut runs = std::collections::HashMap::new();
    for spec in &runtimes {
        // A runtime that panics is that runtime's error; the other runtimes and the report go on.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_runtime_keeping_runs(spec, &bundle, settings, overrides)
        }))
        .map(|(parity, kept)| {
            if let (Some(kept), Some(setting)) = (kept, spec.same_file_setting()) {
                runs.insert((setting, spec.base()), (spec.name().to_owned(), kept));
            }
            parity
        });
        out.runtimes.push(checked.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let (check, elementwise, distribution) = tolerances_for(spec, &bundle, overrides);
            RuntimeParity::new(spec.name(), check, &elementwise, &distribution).error(format!("panicked: {message}"))
        }));
    }
    // Native and llama.cpp on the same quantized file (`native:<s>` beside `llama-cpp:<s>`).
    for setting in SameFile::all() {
        let find = |base: &'static str| {
            let (name, kept) = runs.get(&(setting, base))?;
            Some((out.runtimes.iter().find(|r| &r.runtime == name)?, kept))
        };
        if let (Some((pa, ra)), Some((pb, rb))) = (find("native"), find("llama-cpp")) {
            let tolerances = bundle.tolerances();
            let (floor, fraction) = match setting {
                SameFile::Shipped => (tolerances.shipped.as_ref().and_then(|t| t.order_floor_kl), PAIR_KL_FRACTION),
                SameFile::Q8_0 => (tolerances.q8_0.order_floor_kl, PAIR_KL_FRACTION),
                SameFile::Mix(Mix::F16 | Mix::BF16) => (None, HALF_PAIR_KL_FRACTION),
                // A K-quant mix's own floor (measured on its emulation) where the manifest has one; Q4_0's for the
                // rest (IQ4_NL, IQ4_XS).
                SameFile::Mix(m) => match tolerances.mixes.get(m.as_str()) {
                    Some(own) => (own.tolerance.order_floor_kl, PAIR_KL_FRACTION),
                    None => (tolerances.q4_0.order_floor_kl, PAIR_KL_FRACTION),
                },
                SameFile::Q4_0 => (tolerances.q4_0.order_floor_kl, PAIR_KL_FRACTION),
            };
            let agreement = pair_agreement(pa, ra, pb, rb, floor, fraction);
            out.agreement.push(agreement);
        }
    }
    match bundle.tokenizer_reference() {
        Err(e) => out.tokenizers.push(TokenizerParity {
            tokenizer: "reference".into(),
            cases: 0,
            identical: 0,
            status: Status::Error,
            failures: vec![format!("reading the tokenizer reference: {e}")],
        }),
        Ok(reference) => {
            let label = "tokenizers (tokenizer.json)";
            match tokenizers::Tokenizer::from_file(bundle.tokenizer_json()) {
                Ok(t) => out.tokenizers.push(tokenizer::check_hf_tokenizer(&t, &reference)),
                Err(e) => out.tokenizers.push(TokenizerParity {
                    tokenizer: label.into(),
                    cases: reference.cases.len(),
                    identical: 0,
                    status: Status::Error,
                    failures: vec![format!("{}: {e}", bundle.tokenizer_json().display())],
                }),
            }
            if let Some(shipped) = bundle.gguf_shipped() {
                out.tokenizers.push(tokenizer::check_gguf_vocabulary(&shipped, &reference));
            }
            for spec in &runtimes {
                let Some((label, loaded)) = registry::runtime_tokenizer(spec, &model) else { continue };
                if out.tokenizers.iter().any(|t| t.tokenizer == label) {
                    continue;
                }
                out.tokenizers.push(match loaded {
                    Ok(t) => tokenizer::check_runtime_tokenizer(&label, t.as_ref(), &reference),
                    Err(e) => TokenizerParity {
                        tokenizer: label,
                        cases: reference.cases.len(),
                        identical: 0,
                        status: Status::Error,
                        failures: vec![e.to_string()],
                    },
                });
            }
        }
    }
    out
}

/// Whether the file llama.cpp made for `mix` holds the tensor types the bundle's tolerance of that mix was measured
/// on (the generator's emulation of llama.cpp's choice): another llama.cpp may choose otherwise, and its file is then
/// another model than the one the tolerance bounds.
fn mix_types_match(spec: &RuntimeSpec, model: &ModelSource, bundle: &Bundle, mix: Mix) -> Result<(), String> {
    let (Some(tolerance), Some(path)) = (bundle.tolerances().mixes.get(mix.as_str()), registry::mix_file(spec, model))
    else {
        return Ok(());
    };
    let path = path?;
    let file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let differences = tolerance.type_differences(file.tensors().iter().map(|t| (t.name.as_str(), t.ggml_type.name())));
    if differences.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 5;
    let more = differences.len().saturating_sub(SHOWN);
    Err(format!(
        "{}: {} tensor{} differ{} in type from the bundle's emulation of llama.cpp's {}, which its tolerance was \
         measured on (this llama.cpp chooses types otherwise: regenerate the bundle): {}{}",
        path.display(),
        differences.len(),
        if differences.len() == 1 { "" } else { "s" },
        if differences.len() == 1 { "s" } else { "" },
        mix.as_str(),
        differences.iter().take(SHOWN).map(ToString::to_string).collect::<Vec<_>>().join("; "),
        if more > 0 { format!(" (and {more} more)") } else { String::new() }
    ))
}

/// How runtime `name` is judged on `bundle`, and the tolerances (the manifest's, overridden); the distribution
/// tolerance is an error for the shipped GGUF of a bundle that has none.
fn tolerances_for(
    spec: &RuntimeSpec,
    bundle: &Bundle,
    overrides: &ToleranceOverrides,
) -> (ParityCheck, LogitTolerance, Result<Q8Tolerance, String>) {
    let check = spec.parity_check();
    let tolerances = bundle.tolerances();
    let elementwise = match check {
        ParityCheck::LlamaCppElementwise => overrides.elementwise(tolerances.llama_cpp_f32()),
        _ => overrides.elementwise(&tolerances.f32),
    };
    let own = |t: &Option<Q8Tolerance>, what: &str| {
        t.as_ref().map(|t| overrides.distribution(t)).ok_or_else(|| {
            format!("the bundle's manifest has no {what} tolerance (made by an older generator: regenerate it)")
        })
    };
    let distribution = match check {
        ParityCheck::ShippedTeacherForced => tolerances
            .shipped
            .as_ref()
            .map(|t| overrides.distribution(t))
            .ok_or_else(|| "the bundle has no shipped GGUF tolerance (not made with --from-gguf)".to_owned()),
        ParityCheck::TeacherForcedQ4_0 => Ok(overrides.distribution(&tolerances.q4_0)),
        ParityCheck::TeacherForcedMix(m) => {
            tolerances.mixes.get(m.as_str()).map(|t| overrides.distribution(&t.tolerance)).ok_or_else(|| {
                format!(
                    "the bundle's manifest has no {} tolerance (made by an older generator, or with --mixes leaving it \
                     out: regenerate it)",
                    m.as_str()
                )
            })
        }
        ParityCheck::TeacherForcedF16 => own(&tolerances.f16, "f16"),
        ParityCheck::TeacherForcedBf16 => own(&tolerances.bf16, "bf16"),
        ParityCheck::LlamaCppDefaults => own(&tolerances.llama_cpp_defaults, "llama_cpp_defaults"),
        _ => Ok(overrides.distribution(&tolerances.q8_0)),
    };
    (check, elementwise, distribution)
}

impl RuntimeParity {
    /// A passing result with no figures yet.
    fn new(
        name: &str,
        check: ParityCheck,
        elementwise: &LogitTolerance,
        distribution: &Result<Q8Tolerance, String>,
    ) -> Self {
        Self {
            runtime: name.to_owned(),
            check: check.as_str().to_owned(),
            tolerance: match distribution {
                Ok(d) if check.is_teacher_forced() => ToleranceUsed::distribution(d),
                _ => ToleranceUsed::elementwise(elementwise),
            },
            status: Status::Pass,
            failures: Vec::new(),
            figures: None,
            situations: Vec::new(),
            teacher_forced: None,
        }
    }

    fn error(mut self, message: String) -> Self {
        self.status = Status::Error;
        self.failures.push(format!("{}: {message}", self.runtime));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let manifest = LogitTolerance { max_abs_diff: 1e-4, argmax_agreement: 1.0, reason: Some("r".into()) };
        let o = ToleranceOverrides { max_abs_diff: Some(5e-3), ..Default::default() };
        let t = o.elementwise(&manifest);
        assert_eq!((t.max_abs_diff, t.argmax_agreement, t.reason.as_deref()), (5e-3, 1.0, Some("r")));
        let q = Q8Tolerance {
            max_mean_kl: 0.02,
            min_top1_agreement: 0.9,
            basis: "b".into(),
            order_floor_kl: None,
            max_abs_diff: None,
        };
        let o = ToleranceOverrides { min_top1_agreement: Some(0.5), ..Default::default() };
        let t = o.distribution(&q);
        assert_eq!((t.max_mean_kl, t.min_top1_agreement), (0.02, 0.5));
    }

    /// The mock is not the model: it runs every situation (mechanics pass) and fails the tolerance, naming it.
    #[test]
    fn a_runtime_that_is_not_the_model_fails_with_its_figures() {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        let mock = RuntimeSpec::parse("mock").unwrap();
        let r = check_runtime(&mock, &bundle, &RuntimeSettings::default(), &ToleranceOverrides::default());
        assert_eq!(r.status, Status::Fail, "{:?}", r.failures);
        assert_eq!(r.situations.len(), 4);
        assert!(r.failures.iter().all(|f| f.contains("max |diff|")), "{:?}", r.failures);
        let f = r.figures.unwrap();
        assert!(f.rows > 0 && f.max_abs_diff > 1.0 && !f.greedy_match, "{f:?}");
    }

    #[test]
    fn a_runtime_that_does_not_build_is_an_error_not_a_panic() {
        let bundle = nano_vllm_bundle::open_fixture("tiny-llama").unwrap();
        // tiny-llama ships no GGUF.
        let spec = RuntimeSpec::parse("candle:shipped").unwrap();
        let r = check_runtime(&spec, &bundle, &RuntimeSettings::default(), &ToleranceOverrides::default());
        assert_eq!(r.status, Status::Error);
        assert!(r.failures[0].contains("runtime 'candle:shipped' needs a shipped GGUF file"), "{:?}", r.failures);
        assert!(r.figures.is_none() && r.situations.is_empty());
    }
}
