//! The committed bundles load, verify, and hold what fixtures/README.md promises.

use std::collections::BTreeSet;

use nano_vllm_bundle::{
    Bundle, COMMITTED_BUNDLES, FORMAT_VERSION, Format, PromptKind, argmax, fixtures_dir, open_fixture,
};

fn open(name: &str) -> Bundle {
    let bundle = open_fixture(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    bundle.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
    bundle
}

#[test]
fn fixtures_dir_holds_every_committed_bundle() {
    let dir = fixtures_dir();
    for name in COMMITTED_BUNDLES {
        assert!(dir.join(name).join("manifest.json").is_file(), "{name} under {}", dir.display());
    }
}

#[test]
fn every_committed_bundle_opens_and_verifies() {
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let m = bundle.manifest();
        assert_eq!(m.format_version, FORMAT_VERSION);
        assert_eq!(m.name, name);
        assert_eq!(m.origin, "preset");
        assert_eq!(m.generator, format!("python fixtures/generate.py --preset {name}"));
        assert_eq!(m.files.len(), 9, "{name}: one file per format");
        for format in Format::ALL {
            let path = bundle.path(format);
            assert!(path.is_file(), "{name}: {format} at {}", path.display());
        }
        let tools: BTreeSet<&str> = m.tools.keys().map(String::as_str).collect();
        for tool in ["python", "torch", "transformers", "onnx", "onnxruntime", "gguf", "tokenizers", "numpy"] {
            assert!(tools.contains(tool), "{name}: tool version of {tool}");
        }
        let total: u64 = m.files.iter().map(|f| f.size).sum();
        // tiny-gemma3 has 6 layers: llama.cpp makes every 6th Gemma 3 layer global, and one must be.
        assert!(total < 5_000_000, "{name}: bundle is {total} bytes");
    }
}

#[test]
fn model_configs_are_the_documented_ones() {
    // (name, model_type, gguf arch, kv heads, tied head, rope theta, norm)
    let expected = [
        ("tiny-llama", "llama", "llama", 2, false, Some(10_000.0), "rms_norm"),
        ("tiny-qwen2", "qwen2", "qwen2", 2, true, Some(1_000_000.0), "rms_norm"),
        ("tiny-gpt2", "gpt2", "gpt2", 4, true, None, "layer_norm"),
    ];
    for (name, model_type, gguf, kv_heads, tied, theta, norm) in expected {
        let bundle = open(name);
        let c = bundle.config();
        assert_eq!(bundle.manifest().architecture.model_type, model_type);
        assert_eq!(bundle.manifest().architecture.gguf, gguf);
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.head_dim),
            (512, 64, 128, 2, 4, 16),
            "{name}"
        );
        assert_eq!(c.num_kv_heads, kv_heads, "{name}");
        assert_eq!(c.tie_word_embeddings, tied, "{name}");
        assert_eq!(c.rope_theta, theta, "{name}");
        assert_eq!(c.norm, norm, "{name}");
        assert_eq!(c.context_length, 256, "{name}");
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(0), Some(1)), "{name}");
    }
}

/// The families the Llama layer grew for: Qwen3 (explicit head_dim 32 over 4 heads of a 64-wide model, QK-norm),
/// Gemma 3 (5 windowed layers to 1 global, each with its RoPE base, `1 + w` norms, scaled embeddings) and Phi-3
/// (fused q/k/v and gate/up, an untied head).
#[test]
fn qwen3_gemma3_and_phi3_configs_are_the_documented_ones() {
    use nano_vllm_bundle::{HfArchitecture, HfConfig};
    let q = HfConfig::from_dir(fixtures_dir().join("tiny-qwen3")).unwrap();
    assert_eq!(
        (q.architecture, q.num_layers, q.num_heads, q.num_kv_heads, q.head_dim),
        (HfArchitecture::Qwen3, 2, 4, 2, 32)
    );
    assert!(q.extras.qk_norm && !q.extras.sandwich_norms && !q.qkv_bias && q.tie_word_embeddings);
    let g = HfConfig::from_dir(fixtures_dir().join("tiny-gemma3")).unwrap();
    assert_eq!((g.architecture, g.num_layers, g.num_kv_heads, g.head_dim), (HfArchitecture::Gemma3, 6, 1, 16));
    assert_eq!((g.sliding_window, g.full_attention_layers.as_slice()), (Some(48), &[5][..]));
    assert_eq!((g.rope_theta, g.extras.rope_local_theta), (Some(1e6), Some(1e4)));
    assert_eq!(g.extras.embedding_scale, Some(8.0));
    assert!(g.extras.qk_norm && g.extras.sandwich_norms && g.extras.norm_unit_offset);
    assert_eq!(g.activation, nano_vllm_bundle::Activation::GeluTanh);
    assert_eq!(g.attention_scale, 0.25);
    // llama.cpp's gemma3 carries all of it: no refusal at any context.
    assert_eq!(g.beyond_gguf(256), None);
    let p = HfConfig::from_dir(fixtures_dir().join("tiny-phi3")).unwrap();
    assert_eq!((p.architecture, p.num_layers, p.num_kv_heads, p.head_dim), (HfArchitecture::Phi3, 2, 2, 16));
    assert!(!p.tie_word_embeddings && p.sliding_window.is_none() && p.extras == Default::default());
}

#[test]
fn references_have_the_listed_prompts_and_shapes() {
    let expected = [
        ("single", PromptKind::Single, 1),
        ("short", PromptKind::Short, 7),
        ("long", PromptKind::Long, 224),
        ("prefix_a", PromptKind::SharedPrefix, 65),
        ("prefix_b", PromptKind::SharedPrefix, 72),
        ("prefix_c", PromptKind::SharedPrefix, 84),
    ];
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let reference = bundle.reference().unwrap();
        assert_eq!(reference.vocab_size, 512);
        assert_eq!(reference.prompts.len(), expected.len(), "{name}");
        for ((p, info), (pname, kind, len)) in
            reference.prompts.iter().zip(&bundle.manifest().reference.prompts).zip(expected)
        {
            assert_eq!((p.name.as_str(), p.kind, p.prompt_ids.len()), (pname, kind, len), "{name}");
            assert_eq!(info.prompt_len, len);
            assert_eq!(p.prompt_logits.rows(), len, "{name}/{pname}");
            assert_eq!(p.prompt_logits.vocab(), 512);
            assert_eq!(p.greedy_tokens.len(), 16, "{name}/{pname}");
            assert_eq!(p.greedy_logits.rows(), 16);
            assert!(len + 16 <= bundle.config().context_length);
            assert_eq!(p.teacher_forced_ids().len(), len + 15);
            assert_eq!(p.all_logits().rows(), len + 15);
        }
        let group: Vec<_> = reference.of_kind(PromptKind::SharedPrefix).collect();
        assert_eq!(group.len(), 3, "{name}");
        for p in &group {
            assert_eq!(p.shared_prefix_len, Some(64));
            assert_eq!(p.prompt_ids[..64], group[0].prompt_ids[..64], "{name}/{}", p.name);
            // causal model: the shared positions have the same logits in every member of the group
            assert_eq!(p.prompt_logits.row(63), group[0].prompt_logits.row(63), "{name}/{}", p.name);
        }
        assert_ne!(group[0].prompt_ids[64], group[1].prompt_ids[64], "{name}: suffixes differ");
    }
}

#[test]
fn greedy_tokens_are_the_argmax_of_their_logits() {
    for name in COMMITTED_BUNDLES {
        let reference = open(name).reference().unwrap();
        for p in &reference.prompts {
            for (i, &token) in p.greedy_tokens.iter().enumerate() {
                assert_eq!(p.greedy_logits.argmax(i), token, "{name}/{} step {i}", p.name);
            }
            let last = p.prompt_logits.rows() - 1;
            assert_eq!(
                p.greedy_logits.row(0),
                p.prompt_logits.row(last),
                "{name}/{}: row 0 is the prefill's last",
                p.name
            );
        }
    }
}

#[test]
fn every_reference_row_has_the_recorded_top2_gap() {
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let reference = bundle.reference().unwrap();
        let required = bundle.manifest().reference.min_top2_gap_required;
        assert!(required >= 0.01, "{name}: required gap {required}");
        let mut smallest = f32::INFINITY;
        for (p, info) in reference.prompts.iter().zip(&bundle.manifest().reference.prompts) {
            let mut prompt_min = f32::INFINITY;
            for row in p.prompt_logits.iter_rows().chain(p.greedy_logits.iter_rows()) {
                let top = row[argmax(row) as usize];
                let second = row
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != argmax(row) as usize)
                    .map(|(_, &v)| v)
                    .fold(f32::MIN, f32::max);
                prompt_min = prompt_min.min(top - second);
            }
            assert!(
                (f64::from(prompt_min) - info.min_top2_gap).abs() < 1e-5,
                "{name}/{}: {prompt_min} vs {}",
                p.name,
                info.min_top2_gap
            );
            smallest = smallest.min(prompt_min);
        }
        assert!(f64::from(smallest) >= required, "{name}: smallest gap {smallest} < {required}");
        let measured = bundle.manifest().measured["min_top2_gap"].as_f64().unwrap();
        assert!((f64::from(smallest) - measured).abs() < 1e-4, "{name}: {smallest} vs manifest {measured}");
    }
}

#[test]
fn logits_are_in_the_range_of_a_large_init_model() {
    for name in COMMITTED_BUNDLES {
        let reference = open(name).reference().unwrap();
        let max = reference.prompts.iter().flat_map(|p| p.prompt_logits.as_slice()).fold(0f32, |m, v| m.max(v.abs()));
        assert!((3.0..20.0).contains(&max), "{name}: max |logit| {max}");
    }
}

#[test]
fn tokenizer_references_cover_the_documented_cases() {
    let mut tokenizer_hashes = BTreeSet::new();
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let t = bundle.tokenizer_reference().unwrap();
        assert_eq!(t.cases.len(), bundle.manifest().tokenizer_reference.cases);
        assert!(!t.add_special_tokens && !t.default_adds_bos && !t.default_adds_eos);
        for case in ["empty", "ascii_sentence", "digits", "spaces_run", "newlines", "cjk", "emoji", "latin_accents"] {
            assert!(t.case(case).is_some(), "{name}: case {case}");
        }
        assert!(t.case("empty").unwrap().ids.is_empty());
        for case in &t.cases {
            assert_eq!(case.decoded, case.text, "{name}/{}: byte-level BPE round-trips", case.name);
            assert!(case.text.is_empty() || !case.ids.is_empty(), "{name}/{}", case.name);
        }
        let special = &t.case("special_token_text").unwrap().ids;
        assert!(special.contains(&0) && special.contains(&1), "{name}: `<s>` and `</s>` in text match ids 0 and 1");
        let cjk = t.case("cjk").unwrap();
        assert!(cjk.ids.len() > cjk.text.chars().count(), "{name}: CJK falls back to byte tokens");
        tokenizer_hashes.insert(bundle.manifest().file("tokenizer.json").unwrap().sha256.clone());
    }
    assert_eq!(tokenizer_hashes.len(), 1, "the three bundles share one tokenizer");
}

#[test]
fn tolerances_are_set_and_llama_cpp_override_is_for_ggmls_gelu_table_only() {
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let t = bundle.tolerances();
        // 5x the model's own f32-vs-f64 noise, rounded up to 1, 2 or 5: tiny-phi3's is 2.0e-5.
        let f32_tolerance = if name == "tiny-phi3" { 2e-4 } else { 1e-4 };
        assert_eq!(t.f32.max_abs_diff, f32_tolerance, "{name}");
        assert_eq!(t.f32.argmax_agreement, 1.0);
        assert!(t.q8_0.max_mean_kl > 0.0 && t.q8_0.max_mean_kl <= 0.05, "{name}: {}", t.q8_0.max_mean_kl);
        assert!((0.8..1.0).contains(&t.q8_0.min_top1_agreement), "{name}: {}", t.q8_0.min_top1_agreement);
        let measured = &bundle.manifest().measured;
        let onnx = measured["onnx_vs_transformers"]["max_abs_diff_single"].as_f64().unwrap();
        assert!(onnx < 1e-4 && onnx > 0.0, "{name}: onnx diff {onnx}");
        assert_eq!(measured["gguf_f32_weights_bit_identical"], true);
        let q8_kl = measured["q8_0"]["weights_and_activations"]["mean_kl"].as_f64().unwrap();
        assert!(q8_kl < t.q8_0.max_mean_kl, "{name}: measured KL inside its tolerance");
        // ggml looks GELU up in an f16 table: GPT-2's MLP and Gemma's gate.
        if name == "tiny-gpt2" || name == "tiny-gemma3" {
            let over = t.llama_cpp_f32.as_ref().expect("a llama.cpp f32 override");
            assert!(over.max_abs_diff > t.f32.max_abs_diff && over.reason.is_some());
            assert_eq!(t.llama_cpp_f32().max_abs_diff, over.max_abs_diff);
        } else {
            assert!(t.llama_cpp_f32.is_none(), "{name}");
            assert_eq!(t.llama_cpp_f32(), &t.f32);
        }
    }
}

/// Each committed bundle carries a tolerance of its own for each of llama.cpp's K-quant mixes, measured on the
/// generator's emulation, with the tensor types it was measured on: on the tiny bundles' 64-wide rows every K-quant
/// falls back to a 32-block type (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, Q2_K and Q3_K to Q4_0), a tied head's
/// embeddings are Q8_0, norms stay F32. Finer mixes measure closer to the reference.
#[test]
fn k_quant_mixes_have_their_own_tolerances_and_type_plans() {
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        let t = bundle.tolerances();
        let mixes: Vec<&str> = t.mixes.keys().map(String::as_str).collect();
        assert_eq!(mixes, ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k"], "{name}");
        let measured = &bundle.manifest().measured;
        let kl = |mix: &str| measured[mix]["mean_kl"].as_f64().unwrap();
        for (mix, m) in &t.mixes {
            assert!(kl(mix) > 0.0 && kl(mix) < m.tolerance.max_mean_kl, "{name} {mix}: {} inside", kl(mix));
            assert!(m.tolerance.order_floor_kl.is_some_and(|f| f > 0.0 && f < kl(mix)), "{name} {mix}");
            assert!(m.tolerance.basis.contains("emulated"), "{name} {mix}");
            let types: std::collections::BTreeSet<&str> = m.tensor_types.values().map(String::as_str).collect();
            assert!(
                types.iter().all(|t| ["F32", "Q4_0", "Q5_0", "Q5_1", "Q8_0"].contains(t)),
                "{name} {mix}: {types:?}"
            );
            let main = match mix.as_str() {
                "q2_k" | "q3_k_m" => "Q4_0",
                "q4_k_m" => "Q5_0",
                "q5_k_m" => "Q5_1",
                _ => "Q8_0",
            };
            assert!(types.contains(main), "{name} {mix}: {types:?}");
            if !m.tensor_types.contains_key("output.weight") {
                // A tied head: the embeddings take the output's type, Q8_0 where the row is not whole 256-blocks.
                assert_eq!(m.tensor_types["token_embd.weight"], "Q8_0", "{name} {mix}");
            }
        }
        assert!(kl("q6_k") < kl("q4_k_m") && kl("q4_k_m") < kl("q2_k"), "{name}");
    }
}

#[test]
fn model_files_have_the_expected_headers() {
    for name in COMMITTED_BUNDLES {
        let bundle = open(name);
        for path in [bundle.gguf_f32(), bundle.gguf_q8_0()] {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..4], b"GGUF", "{}", path.display());
            assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3, "GGUF version 3");
        }
        let onnx = std::fs::read(bundle.onnx()).unwrap();
        assert!(onnx.windows(b"past_key_values.1.value".len()).any(|w| w == b"past_key_values.1.value"));
        assert!(onnx.windows(b"present.0.key".len()).any(|w| w == b"present.0.key"));
        let st = std::fs::read(bundle.safetensors()).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st).unwrap();
        let embed = if name == "tiny-gpt2" { "transformer.wte.weight" } else { "model.embed_tokens.weight" };
        assert_eq!(st.tensor(embed).unwrap().shape(), &[512, 64], "{name}");
        assert_eq!(st.tensor(embed).unwrap().dtype(), safetensors::Dtype::F32);
        assert_eq!(st.names().contains(&"lm_head.weight"), !bundle.config().tie_word_embeddings, "{name}");
        assert_eq!(bundle.hf_dir(), bundle.dir());
        assert!(bundle.config_json().ends_with("config.json") && bundle.tokenizer_json().ends_with("tokenizer.json"));
    }
}

/// `fixtures/bench` is not committed: `ci/setup.sh` builds it (`fixtures/generate.py --preset bench`) into its cache
/// and links it, as it does the real model's bundle.
#[test]
#[ignore = "needs the generated fixtures/bench (ci/setup.sh); ci/test.sh runs it with --ignored"]
fn bench_bundle_opens_and_verifies() {
    let bundle = open("bench");
    let c = bundle.config();
    assert_eq!((c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.vocab_size), (512, 8, 8, 4, 16384));
    assert!((30_000_000..120_000_000).contains(&c.parameters), "{} parameters", c.parameters);
    let reference = bundle.reference().unwrap();
    assert_eq!(reference.prompts.len(), 2);
    for p in &reference.prompts {
        for (i, &token) in p.greedy_tokens.iter().enumerate() {
            assert_eq!(p.greedy_logits.argmax(i), token);
        }
    }
}

/// A bundle's identity: the manifest's sha256 names the manifest (and through it every file); the model's,
/// `model_sha256`, only the files, so re-derived tolerances leave it (and the regression baseline) unchanged. All
/// differ in both.
#[test]
fn manifest_and_model_sha256_identify_the_bundle() {
    let hashes: BTreeSet<String> = COMMITTED_BUNDLES.iter().map(|n| open(n).manifest_sha256().to_owned()).collect();
    assert_eq!(hashes.len(), COMMITTED_BUNDLES.len());
    let models: BTreeSet<String> = COMMITTED_BUNDLES.iter().map(|n| open(n).model_sha256()).collect();
    assert_eq!(models.len(), COMMITTED_BUNDLES.len());
    // The tiny-llama files the wall-clock baseline (reports/baselines/) was recorded with.
    assert_eq!(open("tiny-llama").model_sha256(), "c83cff3ccd0474165a70cb4df89d899b3de02fce5ffb14ffd90d81260645acf8");
}
