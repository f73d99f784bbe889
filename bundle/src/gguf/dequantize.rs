//! Dequantization to f32 of the GGUF block types this project reads, as ggml's `dequantize_row_*` (`ggml-quants.c`)
//! computes it: every scale an IEEE half, every block little-endian. fixtures/golden/dequantize.json (gguf-py's
//! values) holds every type to it (bundle/tests/reader/golden.rs).

use half::{bf16, f16};

use super::GgmlType;

/// The 16 values of IQ4_NL / IQ4_XS nibbles (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `ty`) to f32, appending to `out`.
///
/// # Panics
/// If `bytes` is not whole blocks or the type cannot be dequantized ([`GgmlType::can_dequantize`]): callers check
/// both (`GgufFile::dequantize` does, from the file's tensor infos).
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    assert!(
        bytes.len().is_multiple_of(ty.block_bytes()),
        "dequantize: {} bytes are not whole {ty} blocks",
        bytes.len()
    );
    let n_blocks = bytes.len() / ty.block_bytes();
    out.reserve(n_blocks * ty.block_size());
    let blocks = bytes.chunks_exact(ty.block_bytes());
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        // d, then 16 bytes: element j in the low nibble of byte j, element j + 16 in its high nibble; x = (q - 8) d.
        GgmlType::Q4_0 => {
            for b in blocks {
                let (d, qs) = (half_at(b, 0), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        // d, m, then nibbles as Q4_0; x = q d + m.
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m, qs) = (half_at(b, 0), half_at(b, 2), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        // d, 32 high bits, then nibbles: element j's fifth bit is bit j of qh, element j + 16's bit j + 16.
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let q5_1 = ty == GgmlType::Q5_1;
            for b in blocks {
                let d = half_at(b, 0);
                let (m, at) = if q5_1 { (half_at(b, 2), 4) } else { (0.0, 2) };
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let qs = &b[at + 4..at + 20];
                let value = |q: u32| if q5_1 { q as f32 * d + m } else { (q as i32 - 16) as f32 * d };
                out.extend(qs.iter().enumerate().map(|(j, &q)| value((q & 0x0F) as u32 | ((qh >> j) & 1) << 4)));
                out.extend(qs.iter().enumerate().map(|(j, &q)| value((q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4)));
            }
        }
        // d, then 32 signed bytes; x = q d.
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = half_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        // d, dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, then 128 bytes: each 32 bytes hold two
        // sub-blocks (low nibbles, then high); x = d sc q - dmin m.
        GgmlType::Q4K => {
            for b in blocks {
                let (d, dmin, scales, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..144]);
                for (pair, q) in qs.chunks_exact(32).enumerate() {
                    let (sc0, m0) = scale_min_k4(2 * pair, scales);
                    let (sc1, m1) = scale_min_k4(2 * pair + 1, scales);
                    let (d0, min0, d1, min1) = (d * sc0 as f32, dmin * m0 as f32, d * sc1 as f32, dmin * m1 as f32);
                    out.extend(q.iter().map(|&v| d0 * (v & 0x0F) as f32 - min0));
                    out.extend(q.iter().map(|&v| d1 * (v >> 4) as f32 - min1));
                }
            }
        }
        // 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed 8-bit scales (one per 16), then d;
        // x = d sc (q - 32), in two halves of 128 (ggml's `dequantize_row_q6_K`).
        GgmlType::Q6K => {
            for b in blocks {
                let d = half_at(b, 208);
                let mut y = [0.0f32; 256];
                for half in 0..2 {
                    let (ql, qh) = (&b[64 * half..64 * half + 64], &b[128 + 32 * half..128 + 32 * half + 32]);
                    let sc = |i: usize| b[192 + 8 * half + i] as i8 as f32;
                    let y = &mut y[128 * half..128 * half + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * sc(is) * q1 as f32;
                        y[l + 32] = d * sc(is + 2) * q2 as f32;
                        y[l + 64] = d * sc(is + 4) * q3 as f32;
                        y[l + 96] = d * sc(is + 6) * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
        // 16 bytes of 4-bit scales (low) and mins (high), one per 16, then 64 bytes of 2-bit quants, d, dmin: in each
        // half of 128, byte l of the 32 holds elements l, l + 32, l + 64, l + 96 (shifts 0, 2, 4, 6) of its 16-groups;
        // x = d sc q - dmin m.
        GgmlType::Q2K => {
            for b in blocks {
                let (d, dmin) = (half_at(b, 80), half_at(b, 82));
                let (scales, qs) = (&b[..16], &b[16..80]);
                for (n, q) in qs.chunks_exact(32).enumerate() {
                    for j in 0..4 {
                        for h in 0..2 {
                            let sc = scales[8 * n + 2 * j + h];
                            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
                            out.extend(q[16 * h..16 * h + 16].iter().map(|&v| dl * ((v >> (2 * j)) & 3) as f32 - ml));
                        }
                    }
                }
            }
        }
        // 32 bytes of high bits, 64 of 2-bit quants (laid out as Q2_K's), 12 bytes of 6-bit scales, d;
        // x = d (sc - 32) (q - (high bit clear ? 4 : 0)).
        GgmlType::Q3K => {
            for b in blocks {
                let (hm, qs, d) = (&b[..32], &b[32..96], half_at(b, 108));
                let scales = q3k_scales(&b[96..108]);
                for (n, q) in qs.chunks_exact(32).enumerate() {
                    for j in 0..4 {
                        let bit = 1u8 << (4 * n + j);
                        for h in 0..2 {
                            let dl = d * (scales[8 * n + 2 * j + h] as i32 - 32) as f32;
                            let l = 16 * h..16 * h + 16;
                            out.extend(q[l.clone()].iter().zip(&hm[l]).map(|(&v, &m)| {
                                dl * (((v >> (2 * j)) & 3) as i32 - if m & bit != 0 { 0 } else { 4 }) as f32
                            }));
                        }
                    }
                }
            }
        }
        // Q4_K's header, 32 bytes of fifth bits (bit j of byte l: element l of sub-block j), then Q4_K's nibbles;
        // x = d sc q - dmin m.
        GgmlType::Q5K => {
            for b in blocks {
                let (d, dmin, scales, qh, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..48], &b[48..176]);
                for (pair, q) in qs.chunks_exact(32).enumerate() {
                    for h in 0..2 {
                        let j = 2 * pair + h;
                        let (sc, m) = scale_min_k4(j, scales);
                        let (dl, ml) = (d * sc as f32, dmin * m as f32);
                        out.extend(q.iter().zip(qh).map(|(&v, &hb)| {
                            let q = ((v >> (4 * h)) & 0x0F) as u32 | (((hb >> j) & 1) as u32) << 4;
                            dl * q as f32 - ml
                        }));
                    }
                }
            }
        }
        // d, then 16 bytes of nibbles (as Q4_0) indexing ggml's non-linear table; x = d value.
        GgmlType::IQ4NL => {
            for b in blocks {
                let (d, qs) = (half_at(b, 0), &b[2..18]);
                out.extend(qs.iter().map(|&q| d * IQ4NL_VALUES[(q & 0x0F) as usize] as f32));
                out.extend(qs.iter().map(|&q| d * IQ4NL_VALUES[(q >> 4) as usize] as f32));
            }
        }
        // d, 2 high bits of 8 6-bit scales (u16), 4 low nibbles, then 8 IQ4_NL blocks' nibbles; x = d (ls - 32) value.
        GgmlType::IQ4XS => {
            for b in blocks {
                let (d, sh, sl, qs) = (half_at(b, 0), u16::from_le_bytes([b[2], b[3]]), &b[4..8], &b[8..136]);
                for (ib, q) in qs.chunks_exact(16).enumerate() {
                    let ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0x0F) as i32 | (((sh >> (2 * ib)) & 3) << 4) as i32;
                    let dl = d * (ls - 32) as f32;
                    out.extend(q.iter().map(|&v| dl * IQ4NL_VALUES[(v & 0x0F) as usize] as f32));
                    out.extend(q.iter().map(|&v| dl * IQ4NL_VALUES[(v >> 4) as usize] as f32));
                }
            }
        }
        other => panic!("dequantize: {other} is not dequantized here (GgmlType::can_dequantize)"),
    }
}

/// Scale and min of sub-block `j` of a Q4_K (and Q5_K) block: 6 bits each, packed into 12 bytes (ggml's
/// `get_scale_min_k4`).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 16 6-bit scales of a Q3_K block (before their offset of 32), unpacked from 12 bytes: low nibbles from bytes
/// 0..8, high 2-bit pairs from bytes 8..12 (ggml's `kmask` shuffle in `dequantize_row_q3_K`).
pub fn q3k_scales(s: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_blocks_put_low_nibbles_first() {
        // Byte j holds element j (low nibble) and element j + 16 (high nibble).
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_0, &b, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!((out[0], out[15], out[16], out[31]), (-4.0, 3.5, 3.5, -4.0));
        // Q4_1: the same nibbles, scaled and shifted by m.
        let mut b1 = Vec::new();
        b1.extend(h(0.5));
        b1.extend(h(-1.0));
        b1.extend(&b[2..]);
        out.clear();
        dequantize(GgmlType::Q4_1, &b1, &mut out);
        assert_eq!((out[0], out[15], out[16], out[31]), (-1.0, 6.5, 6.5, -1.0));
    }

    #[test]
    fn q5_and_q8_blocks() {
        // Q5_0: element 0 has high bit set (16 + 1 - 16 = 1), element 16 has nibble 2 and no high bit (2 - 16).
        let mut b = Vec::new();
        b.extend(h(2.0));
        b.extend(1u32.to_le_bytes());
        b.extend([0x21u8].into_iter().chain(std::iter::repeat_n(0, 15)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q5_0, &b, &mut out);
        assert_eq!((out[0], out[1], out[16]), (2.0 * 1.0, 2.0 * -16.0, 2.0 * -14.0));
        let mut q8 = Vec::new();
        q8.extend(h(0.25));
        q8.extend((0..32).map(|i: i32| (i - 16) as i8 as u8));
        out.clear();
        dequantize(GgmlType::Q8_0, &q8, &mut out);
        assert_eq!((out[0], out[16], out[31]), (-4.0, 0.0, 3.75));
        for (id, ty) in
            [(0, GgmlType::F32), (3, GgmlType::Q4_1), (8, GgmlType::Q8_0), (12, GgmlType::Q4K), (30, GgmlType::BF16)]
        {
            assert_eq!(GgmlType::from_id(id), Some(ty));
        }
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
    }
}
