//! The GGUF reader on the committed bundles' GGUF files: read as HF checkpoints, they hold exactly the safetensors'
//! weights (f32) or their Q8_0 rounding, with the same config; and damaged files are errors naming the problem.

use nano_vllm_bundle::gguf::{GgmlType, GgufError, GgufFile, GgufModel};
use nano_vllm_bundle::{COMMITTED_BUNDLES, HfConfig, open_fixture};
use safetensors::SafeTensors;

/// Every tensor of the bundle's safetensors, as f32.
fn safetensors_of(name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bundle = open_fixture(name).unwrap();
    let bytes = std::fs::read(bundle.safetensors()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_f32_gguf_reads_back_as_the_hf_checkpoint() {
    for name in COMMITTED_BUNDLES {
        let bundle = open_fixture(name).unwrap();
        let model = GgufModel::open(bundle.gguf_f32()).unwrap();
        let hf = HfConfig::from_dir(bundle.hf_dir()).unwrap();
        let c = &model.config;
        assert_eq!(
            (c.architecture, c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim),
            (hf.architecture, hf.vocab_size, hf.hidden_size, hf.num_layers, hf.num_heads, hf.num_kv_heads, hf.head_dim),
            "{name}"
        );
        assert_eq!(
            (c.intermediate_size, c.max_position_embeddings, c.tie_word_embeddings, c.qkv_bias, c.activation),
            (hf.intermediate_size, hf.max_position_embeddings, hf.tie_word_embeddings, hf.qkv_bias, hf.activation),
            "{name}"
        );
        assert_eq!(c.rope_theta, hf.rope_theta, "{name}");
        assert!((c.norm_eps - hf.norm_eps).abs() < 1e-9 * hf.norm_eps.max(1.0), "{name}");
        for (tensor, shape, want) in safetensors_of(name) {
            let got = model.tensor(&tensor, &shape).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(got == want, "{name}: {tensor} differs from the safetensors");
        }
    }
}

#[test]
fn the_q8_0_gguf_reads_back_within_its_rounding() {
    let model = GgufModel::open(open_fixture("tiny-llama").unwrap().gguf_q8_0()).unwrap();
    let mut quantized = 0;
    for (tensor, shape, want) in safetensors_of("tiny-llama") {
        let got = model.tensor(&tensor, &shape).unwrap();
        // Q8_0: |error| <= d / 2 with d = amax / 127 over each block of 32.
        let amax = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // (The block scale is an f16, so allow a little over half a step.)
        assert!(worst <= amax / 127.0 * 0.6 + 1e-6, "{tensor}: {worst} (amax {amax})");
        quantized += usize::from(worst > 0.0);
    }
    assert!(quantized >= 10, "the 2-D weights are quantized ({quantized})");
    let f = GgufFile::open(open_fixture("tiny-llama").unwrap().gguf_q8_0()).unwrap();
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ggml_type, GgmlType::Q8_0);
    assert_eq!(f.tensor("blk.0.attn_norm.weight").unwrap().ggml_type, GgmlType::F32);
}

#[test]
fn damaged_gguf_files_are_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(open_fixture("tiny-llama").unwrap().gguf_f32()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let err = |bytes: &[u8]| GgufFile::open(write("x.gguf", bytes)).unwrap_err().to_string();
    assert!(err(b"GGU").contains("truncated: the magic needs 4 bytes at offset 0"), "{}", err(b"GGU"));
    assert!(err(b"PK\x03\x04....").contains("not a GGUF file"));
    let mut v1 = good.clone();
    v1[4] = 1;
    assert!(err(&v1).contains("GGUF version 1 is not supported"));
    // A tensor count no file could hold.
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&huge).contains("the tensor count is 18446744073709551615, more than"), "{}", err(&huge));
    // Truncated in the tensor data: the tensor that no longer fits is named.
    let e = err(&good[..good.len() - 100]);
    assert!(e.contains("lies outside the file") && e.contains("tensor `"), "{e}");
    // Cut inside the metadata (the token list): named as truncated, or as a count that no longer fits.
    let e = err(&good[..4000]);
    assert!(e.contains("x.gguf: truncated") || e.contains("more than the"), "{e}");
    // An architecture no HF runtime implements.
    let mut other = good.clone();
    let at = other.windows(5).position(|w| w == b"llama").unwrap();
    other[at..at + 5].copy_from_slice(b"mamba");
    let e = GgufModel::open(write("mamba.gguf", &other)).unwrap_err();
    assert!(matches!(e, GgufError::UnsupportedArchitecture { .. }), "{e}");
    assert!(e.to_string().contains("architecture 'mamba' is not supported"), "{e}");
    assert!(matches!(GgufFile::open(dir.path().join("missing.gguf")), Err(GgufError::Io { .. })));
}
