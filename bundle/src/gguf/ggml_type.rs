//! ggml's tensor element types as GGUF stores them: block geometry, and dequantization to f32 of the types this
//! project reads. Block layouts follow ggml (`ggml-common.h`, `dequantize_row_*` in `ggml-quants.c`); every scale is
//! an IEEE half, every block little-endian.

use half::{bf16, f16};

/// A ggml tensor type (GGUF's `ggml_type` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
}

impl GgmlType {
    /// The type of a GGUF type id; `None` for ids this reader does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
            Self::BF16 => "BF16",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Whether [`dequantize`] reads this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q5_1
                | Self::Q8_0
                | Self::Q4K
                | Self::Q6K
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
        other => panic!("dequantize: {other} is not dequantized here (GgmlType::can_dequantize)"),
    }
}

/// Scale and min of sub-block `j` of a Q4_K (and Q5_K) block: 6 bits each, packed into 12 bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
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
