//! Loading: errors that name what is wrong (missing tensor, wrong shape or dtype, unsupported architecture,
//! truncated or absent files), f16/bf16 conversion, sharded checkpoints, Mistral's sliding window, and the step
//! errors a caller can provoke.

mod util;

use candle_core::{DType, Tensor};
use nano_vllm_bundle::open_fixture;
use nano_vllm_candle::{CandleError, CandleOptions, CandleRuntime};
use nano_vllm_engine::{KvCacheKind, PrefixReuse, Runtime, StepBatch};
use util::{edit_config, edit_weights, hf_copy, load, load_err, max_abs_diff, prefill, read_tensors, write_tensors};

#[test]
fn missing_tensor_is_named_with_its_file() {
    let (_tmp, dir) = hf_copy("tiny-llama");
    edit_weights(&dir, |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let err = load_err(&dir);
    let file = dir.join("model.safetensors");
    assert_eq!(err, format!("{}: tensor `model.layers.1.mlp.up_proj.weight` is missing", file.display()));
}

#[test]
fn missing_bias_of_qwen2_and_layer_norm_of_gpt2_are_named() {
    let (_tmp, dir) = hf_copy("tiny-qwen2");
    edit_weights(&dir, |t| {
        t.remove("model.layers.0.self_attn.k_proj.bias");
    });
    assert!(load_err(&dir).ends_with("tensor `model.layers.0.self_attn.k_proj.bias` is missing"));
    let (_tmp, dir) = hf_copy("tiny-gpt2");
    edit_weights(&dir, |t| {
        t.remove("transformer.h.1.ln_2.bias");
    });
    assert!(load_err(&dir).ends_with("tensor `transformer.h.1.ln_2.bias` is missing"));
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let (_tmp, dir) = hf_copy("tiny-gpt2");
    edit_weights(&dir, |t| {
        // A c_attn weight saved the nn.Linear way round: [3 * 64, 64] instead of Conv1D's [64, 3 * 64].
        let w = t["transformer.h.0.attn.c_attn.weight"].t().unwrap().contiguous().unwrap();
        t.insert("transformer.h.0.attn.c_attn.weight".into(), w);
    });
    let err = load_err(&dir);
    let file = dir.join("model.safetensors");
    assert_eq!(
        err,
        format!(
            "{}: tensor `transformer.h.0.attn.c_attn.weight` has shape [192, 64], expected [64, 192]",
            file.display()
        )
    );
}

#[test]
fn integer_tensor_is_a_dtype_error() {
    let (_tmp, dir) = hf_copy("tiny-llama");
    edit_weights(&dir, |t| {
        let w = t["model.norm.weight"].to_dtype(DType::I64).unwrap();
        t.insert("model.norm.weight".into(), w);
    });
    let err = load_err(&dir);
    assert!(err.contains("tensor `model.norm.weight` has dtype I64, expected a float dtype"), "{err}");
    assert!(err.starts_with(&dir.join("model.safetensors").display().to_string()), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let (_tmp, dir) = hf_copy("tiny-llama");
    edit_config(&dir, |c| c["model_type"] = "falcon".into());
    let err = load_err(&dir);
    assert!(err.contains("'falcon' is not supported") && err.contains("config.json"), "{err}");
}

#[test]
fn truncated_safetensors_is_named() {
    let (_tmp, dir) = hf_copy("tiny-llama");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(err.starts_with(&format!("{}: not a valid safetensors file", file.display())), "{err}");
    // A header cut short too.
    std::fs::write(&file, &bytes[..20]).unwrap();
    let err = load_err(&dir);
    assert!(err.starts_with(&format!("{}: not a valid safetensors file", file.display())), "{err}");
}

#[test]
fn a_directory_without_weights_or_config_is_named() {
    let (_tmp, dir) = hf_copy("tiny-llama");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_eq!(
        load_err(&dir),
        format!("{}: no weights (neither model.safetensors nor model.safetensors.index.json)", dir.display())
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn f16_and_bf16_checkpoints_are_converted_to_f32() {
    let short = open_fixture("tiny-llama").unwrap().reference().unwrap().prompts[1].prompt_ids.clone();
    let (_tmp, dir) = hf_copy("tiny-llama");
    let original = read_tensors(&dir.join("model.safetensors"));
    for dtype in [DType::F16, DType::BF16] {
        // The same values once stored in `dtype`, once as f32: the runtime must compute the same logits.
        let half: std::collections::HashMap<String, Tensor> =
            original.iter().map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap())).collect();
        let rounded: std::collections::HashMap<String, Tensor> =
            half.iter().map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).unwrap())).collect();
        write_tensors(&half, &dir.join("model.safetensors"));
        let from_half = prefill(&mut load(&dir), &short);
        write_tensors(&rounded, &dir.join("model.safetensors"));
        let from_f32 = prefill(&mut load(&dir), &short);
        assert_eq!(from_half, from_f32, "{dtype:?}");
        // And rounding the weights moved the logits, so the check is not vacuous.
        write_tensors(&original, &dir.join("model.safetensors"));
        let exact = prefill(&mut load(&dir), &short);
        assert!(max_abs_diff(&exact, &from_half) > 1e-4, "{dtype:?}");
    }
}

#[test]
fn sharded_checkpoint_loads_and_computes_the_same() {
    let reference = open_fixture("tiny-qwen2").unwrap().reference().unwrap();
    let short = &reference.prompts[1];
    let (_tmp, dir) = hf_copy("tiny-qwen2");
    let single = prefill(&mut load(&dir), &short.prompt_ids);
    assert!(max_abs_diff(&single, short.prompt_logits.as_slice()) < 1e-4);

    let tensors = read_tensors(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let subset: std::collections::HashMap<String, Tensor> =
            part.iter().map(|&n| (n.clone(), tensors[n].clone())).collect();
        write_tensors(&subset, &dir.join(&file));
        for n in part {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let write_index = |map: &serde_json::Map<String, serde_json::Value>| {
        let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
    };
    write_index(&weight_map);
    assert_eq!(prefill(&mut load(&dir), &short.prompt_ids), single);

    // A tensor the index does not list is named with the index; a missing shard with its path.
    let mut without = weight_map.clone();
    without.remove("model.norm.weight");
    write_index(&without);
    assert_eq!(load_err(&dir), format!("{}: tensor `model.norm.weight` is missing", index.display()));
    write_index(&weight_map);
    let shard2 = dir.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard2).unwrap();
    assert!(load_err(&dir).starts_with(&format!("{}: cannot read", shard2.display())));
}

#[test]
fn mistral_sliding_window_limits_what_a_position_sees() {
    // tiny-llama's weights as a Mistral with a window of 4: with 2 layers, position p depends on positions
    // p - 6 ..= p only. Two prompts agreeing on their last 7 tokens then have the same last logits.
    let (_tmp, dir) = hf_copy("tiny-llama");
    edit_config(&dir, |c| {
        c["model_type"] = "mistral".into();
        c["sliding_window"] = 4.into();
    });
    let mut rt = load(&dir);
    assert_eq!(rt.config().sliding_window, Some(4));
    let vocab = rt.config().vocab_size;
    let tail = [40u32, 41, 42, 43, 44, 45, 46];
    let a: Vec<u32> = [7u32, 8, 9].iter().chain(&tail).copied().collect();
    let b: Vec<u32> = [300u32, 200, 100].iter().chain(&tail).copied().collect();
    let (la, lb) = (prefill(&mut rt, &a), prefill(&mut rt, &b));
    let last = |l: &[f32]| l[l.len() - vocab..].to_vec();
    assert_eq!(last(&la), last(&lb));
    // Position 8 (window reaching position 2) still sees the difference.
    assert!(max_abs_diff(&la[8 * vocab..9 * vocab], &lb[8 * vocab..9 * vocab]) > 1e-3);
    // Without the window (plain Llama) the last logits differ too, and equal the Llama model's.
    let (_tmp2, llama_dir) = hf_copy("tiny-llama");
    let mut llama = load(&llama_dir);
    let (ma, mb) = (prefill(&mut llama, &a), prefill(&mut llama, &b));
    assert!(max_abs_diff(&last(&ma), &last(&mb)) > 1e-3);
    // Positions inside the window match the Llama model exactly.
    assert_eq!(la[..4 * vocab], ma[..4 * vocab]);
}

#[test]
fn capabilities_and_info_describe_a_paged_f32_runtime() {
    let bundle = open_fixture("tiny-llama").unwrap();
    let mut rt = CandleRuntime::from_bundle(&bundle, &CandleOptions { threads: Some(1) }).unwrap();
    let caps = rt.capabilities();
    assert_eq!((caps.kv_cache, caps.prefix_reuse), (KvCacheKind::EnginePaged, PrefixReuse::SharedBlocks));
    assert!(caps.full_position_logits);
    // 2 layers x (k + v) x 2 KV heads x 16 dims x 4 bytes.
    assert_eq!(caps.kv_bytes_per_token, Some(2 * 2 * 2 * 16 * 4));
    assert_eq!(caps.vocab_size, Some(512));
    let info = rt.info();
    assert_eq!((info.name.as_str(), info.device.as_str(), info.dtype.as_str()), ("candle", "cpu (1 thread)", "f32"));
    assert!(info.version.starts_with("candle-core 0.11."), "{}", info.version);
    let setting = |key: &str| info.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(setting("threads").as_deref(), Some("1"));
    assert_eq!(setting("kv_cache").as_deref(), Some("paged f32 (not prepared)"));
    assert!(setting("RAYON_NUM_THREADS").is_some() && setting("CANDLE_NUM_THREADS").is_some());
    let err = rt.step(&StepBatch::default()).unwrap_err();
    assert!(matches!(err, CandleError::NotPrepared), "{err}");
    rt.prepare(&nano_vllm_engine::KvCacheSpec { num_blocks: 4, block_size: 16 }).unwrap();
    let kv = rt.info().settings.into_iter().find(|(k, _)| k == "kv_cache").unwrap().1;
    assert_eq!(kv, "paged f32, 64 slots in blocks of 16");
    let err = CandleRuntime::from_bundle(&bundle, &CandleOptions { threads: Some(0) }).unwrap_err();
    assert!(err.to_string().contains("at least one thread"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let bundle = open_fixture("tiny-gpt2").unwrap();
    let long = &bundle.reference().unwrap().prompts[2];
    let run = |threads| {
        let mut rt = CandleRuntime::from_bundle(&bundle, &CandleOptions { threads: Some(threads) }).unwrap();
        prefill(&mut rt, &long.prompt_ids)
    };
    let (one, two) = (run(1), run(2));
    assert!(max_abs_diff(&one, &two) < 1e-5);
    assert!(max_abs_diff(&one, long.prompt_logits.as_slice()) < 1e-4);
}

#[test]
fn a_gguf_loads_and_computes_what_the_safetensors_compute() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let bundle = open_fixture(name).unwrap();
        let mut hf = load(bundle.hf_dir());
        let mut gguf = load(&bundle.gguf_f32());
        let tokens = [5, 17, 9, 300, 2];
        // The f32 GGUF holds the same weights bit for bit.
        assert_eq!(prefill(&mut hf, &tokens), prefill(&mut gguf, &tokens), "{name}");
    }
    let err = CandleRuntime::load(open_fixture("tiny-llama").unwrap().onnx(), &CandleOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.onnx") && err.contains("not a GGUF file"), "{err}");
}
