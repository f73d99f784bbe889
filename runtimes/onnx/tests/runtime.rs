//! The runtime on hand-built steps: padding does not move logits, prefix hits are served by copying from the holder,
//! `release` drops keys and values, bad steps are refused with errors naming the sequence, and `info()` says what
//! runs.

mod common;

use common::{Part, max_abs_diff, step, tokens};
use nano_vllm_bundle::open_fixture;
use nano_vllm_engine::{BatchError, KvCacheKind, PrefixReuse, Runtime, StepOutput};
use nano_vllm_onnx::{OnnxError, OnnxOptions, OnnxRuntime, StepGrouping};

fn runtime(bundle: &str, options: &OnnxOptions) -> Option<OnnxRuntime> {
    if !common::library_available("runtime") {
        return None;
    }
    Some(OnnxRuntime::from_bundle(&open_fixture(bundle).unwrap(), options).unwrap())
}

/// Three steps mixing long and short pasts and queries: prefills of 200, 5 and 1 tokens; then a decode of the
/// 200-token sequence next to a 30-token chunk, a decode and a new 64-token prompt; then four decodes.
fn mixed_steps() -> Vec<Vec<Part>> {
    let (a, b, c, d) = (tokens(1, 203, 512), tokens(2, 37, 512), tokens(3, 3, 512), tokens(4, 65, 512));
    vec![
        vec![Part::new(1, &a[..200], 0), Part::new(2, &b[..5], 0), Part::new(3, &c[..1], 0)],
        vec![
            Part::new(1, &a[200..201], 200),
            Part::new(2, &b[5..35], 5),
            Part::new(3, &c[1..2], 1),
            Part::new(4, &d[..64], 0),
        ],
        vec![
            Part::new(1, &a[201..202], 201),
            Part::new(2, &b[35..36], 35),
            Part::new(3, &c[2..3], 2),
            Part::new(4, &d[64..65], 64),
        ],
    ]
}

fn run_steps(rt: &mut OnnxRuntime, steps: &[Vec<Part>]) -> Vec<StepOutput> {
    steps.iter().map(|parts| rt.execute(&step(parts)).unwrap()).collect()
}

#[test]
fn padding_does_not_move_logits() {
    for bundle in ["tiny-llama", "tiny-gpt2"] {
        let options = |grouping| OnnxOptions { grouping, ..common::options() };
        let Some(mut unpadded) = runtime(bundle, &options(StepGrouping::PerSequence)) else { return };
        let reference = run_steps(&mut unpadded, &mixed_steps());
        for grouping in [StepGrouping::OneRun, StepGrouping::Auto] {
            let mut padded = runtime(bundle, &options(grouping)).unwrap();
            let got = run_steps(&mut padded, &mixed_steps());
            for (s, (r, g)) in reference.iter().zip(&got).enumerate() {
                assert_eq!(r.vocab_size, 512);
                assert_eq!(r.num_rows(), g.num_rows());
                let d = max_abs_diff(&r.logits, &g.logits);
                eprintln!("{bundle} {grouping:?} step {s}: {} rows, max |padded - unpadded| {d:.2e}", r.num_rows());
                assert!(d <= 1e-5, "{bundle} {grouping:?} step {s}: {d}");
                for row in 0..r.num_rows() {
                    assert_eq!(nano_vllm_bundle::argmax(r.row(row)), nano_vllm_bundle::argmax(g.row(row)));
                }
            }
            assert_eq!(got[0].num_rows(), 206);
            assert_eq!(got[1].num_rows(), 1 + 30 + 1 + 64);
            assert_eq!((padded.held_tokens(1), padded.held_tokens(2), padded.held_tokens(4)), (202, 36, 65));
        }
    }
}

#[test]
fn logits_rows_follow_logits_indices() {
    let Some(mut rt) = runtime("tiny-qwen2", &common::options()) else { return };
    let t = tokens(5, 12, 512);
    let mut all = Part::new(7, &t, 0);
    all.table = vec![1];
    let full = rt.execute(&step(&[all])).unwrap();
    rt.release(7);
    // Only the last row, then rows in reverse order.
    let mut last = Part::new(7, &t, 0);
    last.all_logits = false;
    let out = rt.execute(&step(&[last])).unwrap();
    assert_eq!(out.num_rows(), 1);
    assert!(max_abs_diff(out.row(0), full.row(11)) <= 1e-6);
    rt.release(7);
    let mut batch = step(&[Part::new(7, &t, 0)]);
    batch.logits_indices.reverse();
    let out = rt.execute(&batch).unwrap();
    for r in 0..12 {
        assert!(max_abs_diff(out.row(r), full.row(11 - r)) <= 1e-6, "row {r}");
    }
}

#[test]
fn a_prefix_hit_is_served_by_copying_from_the_holder() {
    let Some(mut rt) = runtime("tiny-llama", &common::options()) else { return };
    let shared = tokens(6, 32, 512);
    let own = tokens(7, 16, 512);
    // Seq 1 holds blocks [10, 11, 12] (40 tokens: the 32 shared ones, then 8 of its own).
    let mut holder = Part::new(1, &[&shared[..], &tokens(8, 8, 512)].concat(), 0);
    holder.table = vec![10, 11, 12];
    rt.execute(&step(&[holder])).unwrap();
    // Seq 2 hits blocks [10, 11]: 32 cached tokens, computes its own 16.
    let mut hit = Part::new(2, &own, 32);
    (hit.cached, hit.table) = (32, vec![10, 11, 20]);
    let served = rt.execute(&step(&[hit.clone()])).unwrap();
    assert_eq!(rt.held_tokens(2), 48);
    // The same 48 tokens from scratch in another sequence.
    let mut scratch = Part::new(3, &[&shared[..], &own[..]].concat(), 0);
    scratch.table = vec![30, 31, 32];
    let full = rt.execute(&step(&[scratch])).unwrap();
    let d = max_abs_diff(&served.logits, &full.logits[32 * 512..]);
    eprintln!("prefix copy vs recompute: max |diff| {d:.2e}");
    assert!(d <= 1e-5, "{d}");

    // No holder of blocks [50, 51]: a typed error naming the sequence.
    let mut orphan = Part::new(4, &own, 32);
    (orphan.cached, orphan.table) = (32, vec![50, 51, 52]);
    let err = rt.step(&step(&[orphan])).unwrap_err();
    assert!(matches!(err, OnnxError::NoPrefixHolder { seq_id: 4, cached_tokens: 32, blocks: 2 }), "{err:?}");

    // Once seq 1 is released, seq 2 (whose table also starts [10, 11]) serves the next hit.
    rt.release(1);
    rt.release(4);
    let mut again = hit.clone();
    again.id = 5;
    assert_eq!(rt.execute(&step(&[again])).unwrap(), served);
}

#[test]
fn release_drops_keys_and_values_and_a_stale_step_is_refused() {
    let Some(mut rt) = runtime("tiny-gpt2", &common::options()) else { return };
    let t = tokens(9, 10, 512);
    rt.execute(&step(&[Part::new(1, &t[..9], 0), Part::new(2, &t[..4], 0)])).unwrap();
    assert_eq!((rt.num_held_sequences(), rt.held_tokens(1), rt.held_tokens(2)), (2, 9, 4));
    rt.release(1);
    assert_eq!((rt.num_held_sequences(), rt.held_tokens(1)), (1, 0));
    let err = rt.step(&step(&[Part::new(1, &t[9..], 9)])).unwrap_err();
    assert!(matches!(err, OnnxError::KvMismatch { seq_id: 1, expected: 9, held: 0 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "sequence 1: the step says 9 tokens are computed, but the runtime holds keys and values for 0"
    );
    // A recompute from position 0 (as after preemption) starts over.
    rt.execute(&step(&[Part::new(2, &t[..6], 0)])).unwrap();
    assert_eq!(rt.held_tokens(2), 6);
}

#[test]
fn bad_steps_are_refused_with_the_sequence_named() {
    let Some(mut rt) = runtime("tiny-llama", &common::options()) else { return };
    let err = rt.step(&step(&[Part::new(3, &[5, 512, 7], 0)])).unwrap_err();
    assert!(
        matches!(err, OnnxError::Batch(BatchError::TokenOutOfRange { seq_id: 3, token: 512, vocab_size: 512 })),
        "{err:?}"
    );

    let mut batch = step(&[Part::new(3, &[5, 6, 7], 0)]);
    batch.positions[1] = 9;
    let err = rt.step(&batch).unwrap_err().to_string();
    assert_eq!(err, "step batch: sequence 3: token 1 is at position 9, expected 1 (computed tokens + index)");

    let mut batch = step(&[Part::new(3, &[5, 6, 7], 0), Part::new(4, &[8], 0)]);
    batch.logits_indices[0] = 3;
    let err = rt.step(&batch).unwrap_err().to_string();
    assert_eq!(err, "step batch: sequence 3: logits index 3 is not one of its tokens 0..3");
    assert_eq!(rt.num_held_sequences(), 0, "a refused step changes nothing");
}

#[test]
fn info_and_capabilities_describe_the_runtime() {
    let Some(rt) = runtime("tiny-llama", &OnnxOptions::default()) else { return };
    let info = rt.info();
    assert_eq!(info.name, "onnx");
    assert!(info.version.starts_with("ort 2.0.0-rc.15, ONNX Runtime 1."), "{}", info.version);
    assert_eq!(info.dtype, "f32");
    let setting = |k: &str| info.settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(setting("prefix_reuse"), Some("copy-from-holder"));
    assert_eq!(setting("layers"), Some("2"));
    assert!(setting("library").is_some_and(|l| l.contains("libonnxruntime")));
    eprintln!("{info:#?}");
    let caps = rt.capabilities();
    assert_eq!(caps.kv_cache, KvCacheKind::RuntimeOwned);
    assert_eq!(caps.prefix_reuse, PrefixReuse::CopyFromHolder);
    assert!(caps.full_position_logits);
    assert_eq!(caps.vocab_size, Some(512));
    // 2 layers x (key + value) x 2 KV heads x head dim 16 x 4 bytes.
    assert_eq!(caps.kv_bytes_per_token, Some(512));
}

/// ci/setup.sh's venv holds the pinned wheel's library, and it is the one this process loads unless ORT_DYLIB_PATH
/// names another (which ci/test.sh refuses: the test command measures the pinned library).
#[test]
fn the_setup_scripts_library_is_found() {
    if !common::library_available("the_setup_scripts_library_is_found") {
        return;
    }
    let venv = nano_vllm_onnx::library::locate_venv().unwrap();
    assert!(venv.ends_with("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"), "{}", venv.display());
    let lib = nano_vllm_onnx::library::load(None).unwrap();
    match std::env::var_os(nano_vllm_onnx::library::DYLIB_ENV) {
        None => {
            assert_eq!(lib.path(), venv);
            assert_eq!(lib.version(), "1.31.1");
        }
        Some(other) => assert_eq!(lib.path(), std::path::Path::new(&other), "ORT_DYLIB_PATH decides what loads"),
    }
}

/// Decode runs over the same sequences feed the previous run's present back as their past; a release or a new
/// member breaks the chain (the past is written again), and the logits equal unpadded one-sequence runs throughout.
#[test]
fn decode_carry_over_matches_unpadded_runs() {
    let Some(mut carried) = runtime("tiny-llama", &common::options()) else { return };
    let unpadded_options = OnnxOptions { grouping: StepGrouping::PerSequence, ..common::options() };
    let mut unpadded = runtime("tiny-llama", &unpadded_options).unwrap();
    let t: Vec<Vec<u32>> = (0..4).map(|i| tokens(20 + i, 40, 512)).collect();
    let mut steps = vec![vec![Part::new(1, &t[1][..20], 0), Part::new(2, &t[2][..7], 0), Part::new(3, &t[3][..1], 0)]];
    let mut computed = [0, 20, 7, 1];
    let decode = |ids: &[u64], computed: &mut [usize; 4]| -> Vec<Part> {
        ids.iter()
            .map(|&id| {
                let c = computed[id as usize];
                computed[id as usize] += 1;
                Part::new(id, &t[id as usize][c..c + 1], c)
            })
            .collect()
    };
    // Steps 1-3: all three decode (carried from step 2 on).
    for _ in 0..3 {
        steps.push(decode(&[1, 2, 3], &mut computed));
    }
    // Step 4: seq 2 has been released; step 5: carried again.
    let release_before = steps.len();
    steps.push(decode(&[1, 3], &mut computed));
    steps.push(decode(&[1, 3], &mut computed));
    // Step 6: a new prompt joins (its own run); the decode run over [1, 3] is still carried. Step 7: seq 0 decodes
    // too: a new member, written again.
    let mut joined = vec![Part::new(0, &t[0][..5], 0)];
    computed[0] = 5;
    joined.extend(decode(&[1, 3], &mut computed));
    steps.push(joined);
    steps.push(decode(&[1, 3, 0], &mut computed));
    steps.push(decode(&[1, 3, 0], &mut computed));

    for (s, parts) in steps.iter().enumerate() {
        if s == release_before {
            carried.release(2);
            unpadded.release(2);
        }
        let batch = step(parts);
        let (a, b) = (carried.execute(&batch).unwrap(), unpadded.execute(&batch).unwrap());
        let d = max_abs_diff(&a.logits, &b.logits);
        assert!(d <= 1e-5, "step {s}: {d}");
    }
    // Runs: step 0 three (20 and 7 tokens apart: 2 x 20 > 1.25 x 27; the one-token prompt with the single-token
    // rows), steps 1-5 one each, step 6 two, steps 7-8 one each: 12. Carried: steps 2, 3, 5, 6 and 8.
    assert_eq!(carried.run_counts(), (12, 5));
    assert_eq!(carried.held_tokens(1), 20 + 8);
}
