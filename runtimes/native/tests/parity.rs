//! Parity of the native runtime with transformers, through the engine, on every committed fixture: alone, in mixed
//! batches, with prefix-cache hits, and preempted and recomputed. Tolerances come from each bundle's manifest
//! (f32: max |diff| 1e-4, 100% argmax agreement, greedy continuation identical).

use nano_vllm_bundle::{COMMITTED_BUNDLES, open_fixture};
use nano_vllm_conformance::check_situations;
use nano_vllm_native::{NativeOptions, NativeRuntime};

fn check_bundle(name: &str) {
    let bundle = open_fixture(name).unwrap();
    bundle.verify().unwrap();
    let reference = bundle.reference().unwrap();
    let make = || {
        NativeRuntime::from_bundle(&bundle, &NativeOptions { threads: 2, ..Default::default() })
            .map(|r| Box::new(r) as Box<dyn nano_vllm_engine::Runtime>)
    };
    let checks = check_situations(name, &reference, bundle.config().context_length, &bundle.tolerances().f32, make);
    assert!(checks.failures.is_empty(), "{}", checks.failures.join("\n"));
}

#[test]
fn tiny_llama_parity() {
    check_bundle("tiny-llama");
}

#[test]
fn tiny_qwen2_parity() {
    check_bundle("tiny-qwen2");
}

#[test]
fn tiny_qwen3_parity() {
    check_bundle("tiny-qwen3");
}

#[test]
fn tiny_gemma3_parity() {
    check_bundle("tiny-gemma3");
}

#[test]
fn tiny_phi3_parity() {
    check_bundle("tiny-phi3");
}

#[test]
fn tiny_gpt2_parity() {
    check_bundle("tiny-gpt2");
}

#[test]
fn every_committed_bundle_is_covered() {
    assert_eq!(COMMITTED_BUNDLES, ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"]);
}

/// f16 and bf16 weight storage (f32 accumulation), teacher forced on every committed fixture: held to the
/// manifest's `f16` / `bf16` tolerance (mean KL, top-1 agreement, max |diff|), and to the figures the generator
/// measured for the same rounding in torch: the same mean KL within a tenth, the same largest difference within a
/// fifth (the one logit where it occurs moves with f32 summation order).
#[test]
fn half_precision_weight_storage_meets_the_manifest() {
    use nano_vllm_conformance::{compare_teacher_forced, run_teacher_forced};
    use nano_vllm_native::WeightDtype;
    for name in COMMITTED_BUNDLES {
        let bundle = open_fixture(name).unwrap();
        let reference = bundle.reference().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.dir().join("manifest.json")).unwrap()).unwrap();
        let tolerances = bundle.tolerances();
        for (dtype, tol) in [(WeightDtype::F16, &tolerances.f16), (WeightDtype::Bf16, &tolerances.bf16)] {
            let tol = tol.as_ref().unwrap_or_else(|| panic!("{name}: no {} tolerance", dtype.as_str()));
            let options = NativeOptions { threads: 2, weight_dtype: dtype };
            let runtime = NativeRuntime::from_bundle(&bundle, &options).unwrap();
            assert_eq!(runtime.model().weight_dtype(), dtype);
            let runs = run_teacher_forced(Box::new(runtime), &reference, bundle.config().context_length).unwrap();
            let f = compare_teacher_forced(&runs, &reference.prompts);
            eprintln!("{name:<11} {:<5} {}", dtype.as_str(), f.summary());
            f.check(tol).unwrap_or_else(|e| panic!("{name} {dtype:?}: {e}"));
            let measured = &manifest["measured"][dtype.as_str()];
            let (kl, max) = (measured["mean_kl"].as_f64().unwrap(), measured["max_abs_diff"].as_f64().unwrap());
            assert!((f.mean_kl - kl).abs() <= 0.1 * kl, "{name} {dtype:?}: mean KL {} vs measured {kl}", f.mean_kl);
            let diff = f64::from(f.max_abs_diff);
            assert!((diff - max).abs() <= 0.2 * max, "{name} {dtype:?}: max |diff| {diff} vs measured {max}");
        }
    }
}

/// Weights quantized at load (`native:q8_0`, `native:q4_0`), teacher forced on every committed fixture: held to the
/// manifest's tolerance of that type, and to the figure the generator measured for it in torch (the same rounding of
/// weights and activations), within a tenth: the kernels compute that model, not merely something close enough.
#[test]
fn quantized_weight_storage_meets_the_manifest() {
    use nano_vllm_conformance::{compare_teacher_forced, run_teacher_forced};
    use nano_vllm_native::WeightDtype;
    for name in COMMITTED_BUNDLES {
        let bundle = open_fixture(name).unwrap();
        let reference = bundle.reference().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.dir().join("manifest.json")).unwrap()).unwrap();
        for (dtype, tol) in
            [(WeightDtype::Q8_0, &bundle.tolerances().q8_0), (WeightDtype::Q4_0, &bundle.tolerances().q4_0)]
        {
            let options = NativeOptions { threads: 2, weight_dtype: dtype };
            let runtime = NativeRuntime::from_bundle(&bundle, &options).unwrap();
            assert_eq!(runtime.model().weight_dtype(), dtype);
            let runs = run_teacher_forced(Box::new(runtime), &reference, bundle.config().context_length).unwrap();
            let f = compare_teacher_forced(&runs, &reference.prompts);
            eprintln!("{name:<11} {:<5} {}", dtype.as_str(), f.summary());
            f.check(tol).unwrap();
            let measured = manifest["measured"][dtype.as_str()]["weights_and_activations"]["mean_kl"].as_f64().unwrap();
            assert!(
                (f.mean_kl - measured).abs() <= 0.1 * measured,
                "{name} {dtype:?}: {} vs measured {measured}",
                f.mean_kl
            );
        }
    }
}
