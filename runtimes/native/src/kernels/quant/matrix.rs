//! A weight matrix in a GGUF block type, `[rows, cols]` with each row a whole number of blocks.

use nano_vllm_bundle::gguf::{GgmlType, dequantize};

/// A matrix that cannot be held as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error(
        "{name}: the native runtime has no kernel for {ty} (it runs F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)"
    )]
    Unsupported { name: String, ty: GgmlType },
    #[error("{name}: rows of {cols} elements are not whole {ty} blocks of {block}")]
    PartialBlock { name: String, ty: GgmlType, cols: usize, block: usize },
    #[error("{name}: {len} bytes where {rows} rows of {cols} {ty} elements take {expected}")]
    Size { name: String, ty: GgmlType, rows: usize, cols: usize, len: usize, expected: usize },
}

/// A `[rows, cols]` matrix in block type `ty`, row-major (each row its own blocks). Its bytes are its own (copied from
/// a GGUF at load, or quantized at load), never the mapped file's: a file rewritten or truncated while the model is
/// loaded cannot fault the process.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
    bytes: Vec<u8>,
}

impl PartialEq for QMatrix {
    fn eq(&self, other: &Self) -> bool {
        (self.ty, self.rows, self.cols) == (other.ty, other.rows, other.cols) && *self.bytes == *other.bytes
    }
}

/// The types this runtime computes on.
pub fn supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2K | Q3K | Q4K | Q5K | Q6K | IQ4NL | IQ4XS)
}

impl QMatrix {
    /// Checks that `bytes` hold `rows` rows of `cols` elements of `ty`; `name` is for the errors.
    pub fn new(name: &str, ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, QuantError> {
        if !supported(ty) {
            return Err(QuantError::Unsupported { name: name.into(), ty });
        }
        let block = ty.block_size();
        if !cols.is_multiple_of(block) {
            return Err(QuantError::PartialBlock { name: name.into(), ty, cols, block });
        }
        let row_bytes = cols / block * ty.block_bytes();
        if bytes.len() != rows * row_bytes {
            return Err(QuantError::Size {
                name: name.into(),
                ty,
                rows,
                cols,
                len: bytes.len(),
                expected: rows * row_bytes,
            });
        }
        Ok(Self { ty, rows, cols, row_bytes, bytes })
    }

    /// Row `r`'s blocks.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Bytes of weights.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends rows `r0..r0 + n`, dequantized, to `out`.
    pub fn dequantize_rows(&self, r0: usize, n: usize, out: &mut Vec<f32>) {
        dequantize(self.ty, &self.bytes[r0 * self.row_bytes..(r0 + n) * self.row_bytes], out);
    }

    /// The whole matrix as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// These rows in another order: row `i` of the result is row `order[i]` (a copy of the blocks, still quantized).
    pub fn with_row_order(&self, order: &[usize]) -> Self {
        let bytes = order.iter().flat_map(|&r| self.row(r).iter().copied()).collect();
        Self { ty: self.ty, rows: self.rows, cols: self.cols, row_bytes: self.row_bytes, bytes }
    }
}

/// A `rows x cols` matrix of `ty` for benchmarks: seeded random blocks (xorshift) whose f16 scales (and mins) are all
/// 0.01, so no block holds a NaN or a huge value. The kernels' timing and instruction counts do not depend on the
/// values.
#[doc(hidden)]
pub fn synthetic(ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes: Vec<u8> = (0..rows * cols / ty.block_size() * ty.block_bytes())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // Where each block keeps its f16 scale (and min).
    let scales: &[usize] = match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[0],
    };
    for blk in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    QMatrix::new("synthetic", ty, rows, cols, bytes).expect("whole blocks of a supported type")
}
