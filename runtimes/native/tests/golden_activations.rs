//! The native runtime's rounding of a matmul's input (what its integer products multiply) against the torch emulation
//! that the shipped GGUF's tolerance and order floor are measured with (fixtures/nvfix/ggml_activations.py):
//! fixtures/golden/activations.json holds seeded rows (an outlier, a negative extreme, zero blocks, exact ties, an
//! extreme with both signs) and what the emulation rounds them to, made by fixtures/golden/make_activations.py. Bit for
//! bit: both are ggml's quantize_row_q8_0 / quantize_row_q8_K_ref, f16 and bf16.

use nano_vllm_native::kernels::quant::ActRounding;

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/golden/activations.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rows(v: &serde_json::Value, key: &str) -> Vec<Vec<f32>> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("activations.json: no {key}"))
        .iter()
        .map(|row| row.as_array().expect("a row").iter().map(|x| x.as_f64().expect("a number") as f32).collect())
        .collect()
}

#[test]
fn native_rounds_matmul_inputs_as_the_emulation_does() {
    let g = golden();
    let inputs = rows(&g, "inputs");
    assert_eq!(inputs.len(), 6);
    let mut checked = 0;
    for (key, rounding) in [
        ("q8_0", ActRounding::Q8_0),
        ("q8_k", ActRounding::Q8K),
        ("f16", ActRounding::F16),
        ("bf16", ActRounding::Bf16),
    ] {
        let want = rows(&g, key);
        assert_eq!(want.len(), inputs.len(), "{key}");
        for (i, (x, want)) in inputs.iter().zip(&want).enumerate() {
            assert_eq!(x.len(), 512);
            let got = rounding.apply(x);
            for (j, (g, w)) in got.iter().zip(want).enumerate() {
                // Bit for bit, but for the sign of a zero (torch rounds -0.3 to -0.0, an integer 0 is +0.0), which no
                // product sees.
                let same = g.to_bits() == w.to_bits() || (*g == 0.0 && *w == 0.0);
                assert!(same, "{key} row {i} value {j}: native {g}, emulation {w} (input {})", x[j]);
            }
            checked += got.len();
        }
    }
    assert_eq!(checked, 4 * 6 * 512);
}

#[test]
fn the_golden_rows_hold_the_cases_they_claim() {
    let g = golden();
    let (inputs, q8k, q8_0) = (rows(&g, "inputs"), rows(&g, "q8_k"), rows(&g, "q8_0"));
    // The outlier row: Q8_K's block of 256 around it rounds most values to zero; Q8_0's block of 32 only its own.
    let zero = |r: &[f32]| r[..256].iter().filter(|v| **v == 0.0).count();
    assert!(zero(&q8k[1]) > 200 && zero(&q8_0[1]) < 40, "{} / {}", zero(&q8k[1]), zero(&q8_0[1]));
    // Ties: scaled by exactly 1, 2.5 -> 2, 3.5 -> 4, -0.5 -> -0, 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, 126.5 -> 126.
    assert_eq!(&q8k[4][..8], &[-127.0, 2.0, 4.0, -0.0, 0.0, 2.0, -2.0, 126.0]);
    assert_eq!(&q8_0[4][..8], &[-127.0, 2.0, 4.0, -0.0, 0.0, 2.0, -2.0, 126.0]);
    // A block of zeros stays zero.
    assert!(q8k[3][..256].iter().all(|v| *v == 0.0) && inputs[3][..256].iter().all(|v| *v == 0.0));
}
