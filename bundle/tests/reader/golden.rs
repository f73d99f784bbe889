//! The dequantizer against gguf-py's (llama.cpp's own Python package): fixtures/golden/dequantize.json holds seeded
//! blocks of every common block type and the values gguf-py 0.19.0 gives them (made by
//! fixtures/golden/make_dequantize.py). Every type this reader dequantizes must match them, and it dequantizes all
//! of them.

use nano_vllm_bundle::gguf::{GgmlType, dequantize};

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/dequantize.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn by_name(name: &str) -> Option<GgmlType> {
    (0..64).filter_map(GgmlType::from_id).find(|t| t.name() == name)
}

#[test]
fn every_type_this_reader_dequantizes_matches_gguf_py() {
    let doc = golden();
    let types = doc["types"].as_object().unwrap();
    let mut checked = Vec::new();
    for (name, case) in types {
        let Some(ty) = by_name(name) else { continue };
        assert_eq!(case["block_size"].as_u64().unwrap() as usize, ty.block_size(), "{name}");
        assert_eq!(case["block_bytes"].as_u64().unwrap() as usize, ty.block_bytes(), "{name}");
        if !ty.can_dequantize() {
            continue;
        }
        let hex = case["bytes_hex"].as_str().unwrap();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = Vec::new();
        dequantize(ty, &bytes, &mut got);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // The same products in float32; only an operation's order may differ (a last-bit rounding).
            let tol = 2.0 * f32::EPSILON * w.abs().max(f32::MIN_POSITIVE);
            assert!((g - w).abs() <= tol, "{name} element {i} (block {}): {g} vs gguf-py {w}", i / ty.block_size());
        }
        checked.push(name.as_str());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "BF16", "F16", "IQ4_NL", "IQ4_XS", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K",
            "Q8_0"
        ]
    );
}
