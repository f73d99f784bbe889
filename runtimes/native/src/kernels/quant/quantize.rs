//! f32 weights quantized at load (`native:q8_0`, `native:q4_0`), with ggml's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`), so a checkpoint quantized here holds the same bytes as
//! llama.cpp's (and gguf-py's) Q8_0 / Q4_0 files of it.

use half::f16;
use nano_vllm_bundle::gguf::GgmlType;

/// `x` (whole blocks of 32) as Q8_0 blocks: `d = amax / 127` (stored f16), `q = round(x / d)` (half away from zero).
pub fn q8_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "q8_0: {} values are not whole blocks", x.len());
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// `x` as Q4_0 blocks: `d = max / -8` where `max` is the value of largest magnitude (stored f16), nibble
/// `min(15, trunc(x / d + 8.5))`; element `j` in the low nibble of byte `j`, `j + 16` in its high nibble.
pub fn q4_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "q4_0: {} values are not whole blocks", x.len());
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks_exact(32) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        let nib = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        out.extend((0..16).map(|j| nib(b[j]) | (nib(b[j + 16]) << 4)));
    }
    out
}

/// Quantizes `x` to `ty` (Q8_0 or Q4_0).
pub fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::Q8_0 => q8_0(x),
        GgmlType::Q4_0 => q4_0(x),
        other => panic!("quantize: {other} is not quantized at load (Q8_0, Q4_0)"),
    }
}
