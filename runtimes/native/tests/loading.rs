//! Bad model directories give errors that name the file and the tensor or field, never a panic.

use std::collections::HashMap;
use std::path::Path;

use nano_vllm_bundle::fixtures_dir;
use nano_vllm_native::{Embedding, NativeError, NativeOptions, NativeRuntime};
use safetensors::{Dtype, SafeTensors, serialize, tensor::TensorView};

/// Copies tiny-llama's config and weights into a temp dir, letting `edit` change the tensors first.
fn damaged(edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) -> tempfile::TempDir {
    let src = fixtures_dir().join("tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> =
        st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.path().join("model.safetensors"), serialize(views, None).unwrap()).unwrap();
    dir
}

fn load(dir: &Path) -> NativeError {
    NativeRuntime::load(dir, &NativeOptions { threads: 1, ..Default::default() }).unwrap_err()
}

#[test]
fn missing_tensor_is_named() {
    let dir = damaged(|t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let err = load(dir.path());
    assert!(matches!(&err, NativeError::MissingTensor { name, .. } if name == "model.layers.1.mlp.up_proj.weight"));
    assert!(err.to_string().contains("tensor `model.layers.1.mlp.up_proj.weight` is missing"), "{err}");
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = damaged(|t| {
        let e = t.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        e.1 = vec![64, 32];
    });
    let err = load(dir.path()).to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("k_proj.weight")
            && err.contains("[64, 32]")
            && err.contains("[32, 64]"),
        "{err}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = damaged(|t| {
        let e = t.get_mut("model.norm.weight").unwrap();
        e.0 = Dtype::I32;
    });
    let err = load(dir.path()).to_string();
    assert!(err.contains("model.norm.weight") && err.contains("I32"), "{err}");
}

#[test]
fn bf16_weights_load_and_match_f32_closely() {
    // The same model stored in bf16: loads (widened to f32); the error is bf16 rounding, not a failure.
    let dir = damaged(|t| {
        for (dtype, _, bytes) in t.values_mut() {
            *dtype = Dtype::BF16;
            *bytes = bytes
                .chunks_exact(4)
                .flat_map(|b| half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes())
                .collect();
        }
    });
    let rt = NativeRuntime::load(dir.path(), &NativeOptions { threads: 1, ..Default::default() }).unwrap();
    let f32_rt =
        NativeRuntime::load(fixtures_dir().join("tiny-llama"), &NativeOptions { threads: 1, ..Default::default() })
            .unwrap();
    let (Embedding::F32(a), Embedding::F32(b)) = (&rt.model().embed, &f32_rt.model().embed) else {
        panic!("safetensors embeddings are f32")
    };
    let (a, b) = (a.unpack(), b.unpack());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= y.abs() / 128.0 + 1e-30));
    assert_ne!(a, b);
}

#[test]
fn truncated_file_is_an_error_naming_it() {
    let dir = damaged(|_| {});
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path()).to_string();
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn unsupported_architecture_and_missing_config_are_named() {
    let dir = damaged(|_| {});
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"llama\"", "\"falcon\"");
    std::fs::write(&cfg, text).unwrap();
    let err = load(dir.path()).to_string();
    assert!(err.contains("config.json") && err.contains("'falcon' is not supported"), "{err}");
    std::fs::remove_file(&cfg).unwrap();
    let err = load(dir.path()).to_string();
    assert!(err.contains("config.json") && err.contains("missing"), "{err}");
}

#[test]
fn sharded_checkpoints_load() {
    // Split tiny-llama's tensors over two shards with an index; the model must equal the single-file one.
    let src = fixtures_dir().join("tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut weight_map = serde_json::Map::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (name, view) in st.tensors() {
        let shard = if name.contains("layers.1") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), shard.into());
        if shard.starts_with("model-00002") { b.push((name, view)) } else { a.push((name, view)) }
    }
    std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), serialize(a, None).unwrap()).unwrap();
    std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), serialize(b, None).unwrap()).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = NativeRuntime::load(dir.path(), &NativeOptions { threads: 1, ..Default::default() }).unwrap();
    let single = NativeRuntime::load(&src, &NativeOptions { threads: 1, ..Default::default() }).unwrap();
    assert_eq!(sharded.model().layers[1].qkv.w, single.model().layers[1].qkv.w);
    assert_eq!(sharded.model().weight_bytes(), single.model().weight_bytes());
}

#[test]
fn a_gguf_loads_and_computes_what_the_safetensors_compute() {
    use nano_vllm_engine::{KvCacheSpec, Runtime, SeqBatchEntry, StepBatch};
    let step = || StepBatch {
        block_size: 16,
        seqs: vec![SeqBatchEntry {
            seq_id: 0,
            query_start: 0,
            query_len: 5,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            block_table_start: 0,
            block_table_len: 1,
            logits_start: 0,
            num_logits: 5,
            samples: true,
            is_prefill: true,
        }],
        token_ids: vec![5, 17, 9, 300, 2],
        positions: (0..5).collect(),
        slot_mapping: (0..5).collect(),
        block_tables: vec![0],
        logits_indices: (0..5).collect(),
    };
    let options = NativeOptions { threads: 1, ..Default::default() };
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let dir = fixtures_dir().join(name);
        let mut hf = NativeRuntime::load(&dir, &options).unwrap();
        let mut gguf = NativeRuntime::load(dir.join("model.f32.gguf"), &options).unwrap();
        let kv = KvCacheSpec { num_blocks: 2, block_size: 16 };
        hf.prepare(&kv).unwrap();
        gguf.prepare(&kv).unwrap();
        // The f32 GGUF holds the same weights bit for bit, so the logits are identical.
        assert_eq!(hf.execute(&step()).unwrap(), gguf.execute(&step()).unwrap(), "{name}");
    }
    // A truncated GGUF is named with what no longer fits.
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures_dir().join("tiny-llama/model.f32.gguf")).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = NativeRuntime::load(&cut, &options).unwrap_err().to_string();
    assert!(err.contains("cut.gguf") && err.contains("lies outside the file"), "{err}");
}

fn step(n: usize) -> nano_vllm_engine::StepBatch {
    use nano_vllm_engine::{SeqBatchEntry, StepBatch};
    StepBatch {
        block_size: 16,
        seqs: vec![SeqBatchEntry {
            seq_id: 0,
            query_start: 0,
            query_len: n,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            block_table_start: 0,
            block_table_len: 2,
            logits_start: 0,
            num_logits: n,
            samples: true,
            is_prefill: true,
        }],
        token_ids: (0..n as u32).map(|i| (i * 37 + 5) % 500).collect(),
        positions: (0..n as u32).collect(),
        slot_mapping: (0..n as u32).collect(),
        block_tables: vec![0, 1],
        logits_indices: (0..n as u32).collect(),
    }
}

/// A quantized GGUF runs as stored: its blocks as the file holds them, q and k rows in ggml's order (rotated
/// as ggml rotates them). Quantizing the f32 checkpoint at load (`native:q8_0`) gives the same blocks byte for byte
/// (ggml's reference quantizer), so the two compute the same logits up to the order of the attention sums.
#[test]
fn a_quantized_gguf_runs_as_stored_and_equals_quantizing_at_load() {
    use nano_vllm_engine::{KvCacheSpec, Runtime};
    use nano_vllm_native::WeightDtype;
    use nano_vllm_native::kernels::linear::Weights;
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let dir = fixtures_dir().join(name);
        let stored = NativeOptions { threads: 1, weight_dtype: WeightDtype::Stored };
        let mut gguf = NativeRuntime::load(dir.join("model.q8_0.gguf"), &stored).unwrap();
        let at_load = NativeOptions { threads: 1, weight_dtype: WeightDtype::Q8_0 };
        let mut hf = NativeRuntime::load(&dir, &at_load).unwrap();
        let (g, h) = (gguf.model(), hf.model());
        // Every matrix Q8_0 (the GGUF keeps q, k, v and gate, up as separate parts; at load they are stacked).
        for m in [g, h] {
            assert!(m.weight_types().starts_with("Q8_0 x ") && !m.weight_types().contains(','), "{name}");
        }
        assert_eq!(g.weight_bytes(), h.weight_bytes(), "{name}");
        assert_eq!(g.rope_adjacent, name != "tiny-qwen2" && name != "tiny-gpt2", "{name}");
        // The output projection is not permuted: the same blocks.
        let (Weights::Quant(a), Weights::Quant(b)) = (&g.layers[0].o.w, &h.layers[0].o.w) else { panic!("quantized") };
        assert_eq!(a, b, "{name}: quantizing at load gives the GGUF's Q8_0 blocks");
        let kv = KvCacheSpec { num_blocks: 2, block_size: 16 };
        gguf.prepare(&kv).unwrap();
        hf.prepare(&kv).unwrap();
        // Both paths of the kernels: 5 tokens (integer dot products), 20 (dequantized tiles packed into panels).
        for n in [5, 20] {
            let (x, y) = (gguf.execute(&step(n)).unwrap(), hf.execute(&step(n)).unwrap());
            let worst = x.logits.iter().zip(&y.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name} {n} tokens: stored vs quantized at load differ by {worst}");
        }
    }
}

/// A quantized GGUF's blocks are copied at load, not kept mapped: rewriting or truncating the file while the model
/// serves (a new version copied over it) cannot fault the process (SIGBUS), and the logits stay those of the file
/// as loaded.
#[test]
fn a_gguf_rewritten_after_load_does_not_touch_the_loaded_model() {
    use nano_vllm_engine::{KvCacheSpec, Runtime};
    use nano_vllm_native::WeightDtype;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.q8_0.gguf");
    std::fs::copy(fixtures_dir().join("tiny-llama/model.q8_0.gguf"), &path).unwrap();
    let stored = NativeOptions { threads: 1, weight_dtype: WeightDtype::Stored };
    let mut rt = NativeRuntime::load(&path, &stored).unwrap();
    let kv = KvCacheSpec { num_blocks: 2, block_size: 16 };
    rt.prepare(&kv).unwrap();
    let before = rt.execute(&step(5)).unwrap().logits;
    // Truncated to nothing, then rewritten with other bytes.
    std::fs::File::create(&path).unwrap();
    std::fs::write(&path, vec![0xA5u8; 4096]).unwrap();
    rt.prepare(&kv).unwrap();
    let after = rt.execute(&step(5)).unwrap().logits;
    assert_eq!(before, after);
}

/// A GGUF as stored reports what the file says it was quantized to (`general.file_type`, as llama.cpp reports it),
/// so that reports group it with llama.cpp's run of the same file; converted at load, the dtype it was converted to.
#[test]
fn a_gguf_reports_its_file_type_as_its_dtype() {
    use nano_vllm_engine::Runtime;
    use nano_vllm_native::WeightDtype;
    let dir = fixtures_dir().join("tiny-llama");
    for (file, dtype, want) in [
        ("model.q8_0.gguf", WeightDtype::Stored, "q8_0"),
        ("model.f32.gguf", WeightDtype::Stored, "f32"),
        ("model.q8_0.gguf", WeightDtype::F32, "f32"),
        ("model.f32.gguf", WeightDtype::Bf16, "bf16"),
    ] {
        let rt = NativeRuntime::load(dir.join(file), &NativeOptions { threads: 1, weight_dtype: dtype }).unwrap();
        assert_eq!(rt.info().dtype, want, "{file} {dtype:?}");
    }
}
