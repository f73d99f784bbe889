//! Dense layers: `y[t, o] = sum_i x[t, i] * w[o, i] + b[o]`, with `w` given in Hugging Face's `[out, in]` layout.
//! f32 weights are packed at load into panels ([`super::panels`]) whose one product serves every batch size. Weights
//! may be stored as f16 or bf16: a few tokens take the row kernel ([`gemv`]), more take tiles of rows widened to f32
//! (the `half` crate's SIMD conversion) and packed into panels just before their product, so memory traffic halves
//! and accumulation stays f32. Or they may be in a GGUF block type ([`Weights::Quant`], see [`super::quant`]): as a GGUF
//! file stores them, or quantized at load.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use nano_vllm_bundle::gguf::GgmlType;

use super::panels::{self, Panels};
use super::quant::{self, ActRounding, Isa, QMatrix, QuantError};
use super::{OutPtr, gemv};

/// How weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    #[default]
    F32,
    F16,
    Bf16,
    /// ggml's Q8_0 blocks (quantized at load from f32, or as a GGUF stores them).
    Q8_0,
    /// ggml's Q4_0 blocks.
    Q4_0,
    /// As a GGUF file stores each matrix (possibly several block types).
    Stored,
}

impl WeightDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Stored => "gguf",
        }
    }
    /// The GGUF block type of a quantized dtype.
    pub fn ggml_type(self) -> Option<GgmlType> {
        match self {
            Self::Q8_0 => Some(GgmlType::Q8_0),
            Self::Q4_0 => Some(GgmlType::Q4_0),
            _ => None,
        }
    }
}

/// A weight matrix in its storage type.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// Packed into panels at load.
    F32(Panels),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    /// GGUF block types, one matrix per stacked part (q, k, v may differ: a `Q4_K_M` file mixes types).
    Quant(Vec<QMatrix>),
}

impl Weights {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(w) => w.len(),
            Self::F16(w) => w.len(),
            Self::Bf16(w) => w.len(),
            Self::Quant(parts) => parts.iter().map(|p| p.rows * p.cols).sum(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> WeightDtype {
        match self {
            Self::F32(_) => WeightDtype::F32,
            Self::F16(_) => WeightDtype::F16,
            Self::Bf16(_) => WeightDtype::Bf16,
            Self::Quant(parts) => {
                match parts.iter().map(|p| p.ty).reduce(|a, b| if a == b { a } else { GgmlType::F32 }) {
                    Some(GgmlType::Q8_0) => WeightDtype::Q8_0,
                    Some(GgmlType::Q4_0) => WeightDtype::Q4_0,
                    _ => WeightDtype::Stored,
                }
            }
        }
    }
    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        match self {
            Self::F32(w) => 4 * w.len(),
            Self::F16(w) => 2 * w.len(),
            Self::Bf16(w) => 2 * w.len(),
            Self::Quant(parts) => parts.iter().map(QMatrix::bytes).sum(),
        }
    }
    /// The block types of the parts (the float types by their GGUF names).
    pub fn types(&self) -> Vec<GgmlType> {
        match self {
            Self::F32(_) => vec![GgmlType::F32],
            Self::F16(_) => vec![GgmlType::F16],
            Self::Bf16(_) => vec![GgmlType::BF16],
            Self::Quant(parts) => parts.iter().map(|p| p.ty).collect(),
        }
    }
    fn f32s(&self) -> Vec<f32> {
        match self {
            Self::F32(w) => w.unpack(),
            Self::F16(w) => w.iter().map(|v| v.to_f32()).collect(),
            Self::Bf16(w) => w.iter().map(|v| v.to_f32()).collect(),
            Self::Quant(parts) => parts.iter().flat_map(|p| p.to_f32()).collect(),
        }
    }
    /// The weights stored as `dtype` (rounded to nearest; quantized with ggml's reference quantizers, which need
    /// rows of whole blocks of 32: `cols`). `Stored` keeps them as they are.
    pub fn to_dtype(&self, dtype: WeightDtype, rows: usize, cols: usize) -> Result<Self, QuantError> {
        if dtype == WeightDtype::Stored || dtype == self.dtype() {
            return Ok(self.clone());
        }
        let f32s = self.f32s();
        Ok(match dtype {
            WeightDtype::F32 | WeightDtype::Stored => Self::F32(Panels::pack(&f32s, rows, cols)),
            WeightDtype::F16 => Self::F16(f32s.iter().map(|&v| f16::from_f32(v)).collect()),
            WeightDtype::Bf16 => Self::Bf16(f32s.iter().map(|&v| bf16::from_f32(v)).collect()),
            WeightDtype::Q8_0 | WeightDtype::Q4_0 => {
                let ty = dtype.ggml_type().expect("a quantized dtype");
                if !cols.is_multiple_of(ty.block_size()) {
                    return Err(QuantError::PartialBlock { name: "a dense layer".into(), ty, cols, block: 32 });
                }
                let bytes = quant::quantize::quantize(ty, &f32s);
                Self::Quant(vec![QMatrix::new("a dense layer", ty, rows, cols, bytes)?])
            }
        })
    }
}

/// A dense layer's weights.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, row-major.
    pub w: Weights,
    pub b: Option<Vec<f32>>,
    pub out: usize,
    pub inp: usize,
    /// How a float product's input is rounded first: not at all (f32 weights, and f16/bf16 weights rounded at load),
    /// or, for an F16/BF16 matrix of a GGUF run as stored, as ggml rounds it (to f16/bf16: the type's
    /// `vec_dot_type`), so that the product computes what llama.cpp's does. Block types round their own input
    /// ([`quant::matmul_parts`]).
    pub input: ActRounding,
}

impl Linear {
    /// A layer of f32 weights (`[out, in]`, row-major), packed into panels.
    pub fn new(w: Vec<f32>, b: Option<Vec<f32>>, out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp);
        let w = Weights::F32(Panels::pack(&w, out, inp));
        if let Some(b) = &b {
            assert_eq!(b.len(), out);
        }
        Self { w, b, out, inp, input: ActRounding::None }
    }

    /// An F16 or BF16 matrix as a GGUF stores it: dense half-precision rows whose input is rounded to the same type,
    /// as ggml's product rounds it.
    pub fn stored_half(w: Weights, out: usize, inp: usize) -> Self {
        let input = match &w {
            Weights::F16(_) => ActRounding::F16,
            Weights::Bf16(_) => ActRounding::Bf16,
            _ => panic!("stored_half takes f16 or bf16 weights"),
        };
        assert_eq!(w.len(), out * inp);
        Self { w, b: None, out, inp, input }
    }

    /// Several layers with the same input, stacked along `out` (q/k/v, gate/up), so one product serves them all.
    pub fn stack(parts: Vec<Linear>) -> Self {
        let inp = parts[0].inp;
        assert!(parts.iter().all(|p| p.inp == inp));
        let out = parts.iter().map(|p| p.out).sum();
        let any_bias = parts.iter().any(|p| p.b.is_some());
        let b = any_bias.then(|| parts.iter().flat_map(|p| p.b.clone().unwrap_or_else(|| vec![0.0; p.out])).collect());
        if parts.iter().all(|p| matches!(p.w, Weights::Quant(_))) {
            let w = Weights::Quant(
                parts
                    .into_iter()
                    .flat_map(|p| match p.w {
                        Weights::Quant(q) => q,
                        _ => unreachable!("checked above"),
                    })
                    .collect(),
            );
            return Self { w, b, out, inp, input: ActRounding::None };
        }
        // Half-precision parts of one type and one input rounding (an F16 or BF16 GGUF's q/k/v) stay as they are.
        let input = parts[0].input;
        if parts.iter().all(|p| p.input == input) {
            if parts.iter().all(|p| matches!(p.w, Weights::F16(_))) {
                let w = parts.into_iter().flat_map(|p| if let Weights::F16(w) = p.w { w } else { unreachable!() });
                return Self { w: Weights::F16(w.collect()), b, out, inp, input };
            }
            if parts.iter().all(|p| matches!(p.w, Weights::Bf16(_))) {
                let w = parts.into_iter().flat_map(|p| if let Weights::Bf16(w) = p.w { w } else { unreachable!() });
                return Self { w: Weights::Bf16(w.collect()), b, out, inp, input };
            }
        }
        // Anything else is widened to f32 (its values exactly; a mixed stack's input is not rounded).
        let w = parts.into_iter().flat_map(|p| p.w.f32s()).collect();
        Self::new(w, b, out, inp)
    }

    /// A layer of GGUF-typed parts stacked along `out`.
    pub fn quantized(parts: Vec<QMatrix>, b: Option<Vec<f32>>) -> Self {
        let inp = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == inp));
        let out = parts.iter().map(|p| p.rows).sum();
        if let Some(b) = &b {
            assert_eq!(b.len(), out);
        }
        Self { w: Weights::Quant(parts), b, out, inp, input: ActRounding::None }
    }

    /// This layer with its weights stored as `dtype`; a layer whose rows are not whole blocks of a quantized
    /// `dtype` stays as it is (llama.cpp's quantizer keeps such tensors in a float type too) and returns `false`.
    pub fn with_dtype(mut self, dtype: WeightDtype) -> (Self, bool) {
        match self.w.to_dtype(dtype, self.out, self.inp) {
            Ok(w) => {
                if dtype != WeightDtype::Stored && dtype != self.w.dtype() {
                    // Rounded at load: the input is no longer a stored type's.
                    self.input = ActRounding::None;
                }
                self.w = w;
                (self, true)
            }
            Err(_) => (self, false),
        }
    }

    /// Bytes of weights and bias.
    pub fn bytes(&self) -> usize {
        self.w.bytes() + 4 * self.b.as_ref().map_or(0, Vec::len)
    }

    /// `y = x w^T + b` for `t` rows of `x`; `scratch` holds the quantized products' buffers from call to call.
    pub fn forward(&self, x: &[f32], t: usize, y: &mut [f32], threads: usize, scratch: &mut quant::Scratch) {
        if let Weights::Quant(parts) = &self.w {
            quant::matmul_parts(parts, x, t, y, self.out, threads, Isa::detect(), scratch);
        } else {
            let x = match self.input {
                ActRounding::None => x,
                r => scratch.rounded_input(r, &x[..t * self.inp], self.inp),
            };
            match &self.w {
                Weights::F32(w) => panels::matmul(x, t, w, y, threads, Isa::detect()),
                Weights::F16(w) if t <= gemv::MAX_TOKENS => {
                    gemv::matmul_t_small(x, t, w, self.out, self.inp, y, threads)
                }
                Weights::Bf16(w) if t <= gemv::MAX_TOKENS => {
                    gemv::matmul_t_small(x, t, w, self.out, self.inp, y, threads)
                }
                Weights::F16(w) => matmul_t_half(x, t, w, self.out, self.inp, y, threads),
                Weights::Bf16(w) => matmul_t_half(x, t, w, self.out, self.inp, y, threads),
                Weights::Quant(_) => unreachable!("handled above"),
            }
        }
        if let Some(b) = &self.b {
            for row in y[..t * self.out].chunks_exact_mut(self.out) {
                for (v, &bias) in row.iter_mut().zip(b) {
                    *v += bias;
                }
            }
        }
    }
}

/// Rows of `w` per tile: two panels, packed where their product runs (the widened rows and their panels, `32 k` f32
/// each).
const TILE_ROWS: usize = 2 * panels::LANES;

/// `y[t, n] = x[t, k] * w[n, k]^T` with `w` in f16 or bf16: each tile of rows is widened to f32 (the `half` crate's
/// SIMD conversion) and packed into panels just before its product, tiles in parallel (`threads > 1`).
pub fn matmul_t_half<W: Sync>(x: &[f32], t: usize, w: &[W], n: usize, k: usize, y: &mut [f32], threads: usize)
where
    [W]: HalfFloatSliceExt,
{
    assert!(x.len() >= t * k && w.len() >= n * k && y.len() >= t * n, "matmul_t_half: operand too small");
    if t == 0 || n == 0 {
        return;
    }
    let isa = Isa::detect();
    let out = OutPtr(y.as_mut_ptr());
    super::for_each_task(n.div_ceil(TILE_ROWS), threads, |tile| {
        let r0 = tile * TILE_ROWS;
        let rows = TILE_ROWS.min(n - r0);
        WIDENED.with_borrow_mut(|buf| {
            buf.resize(rows * k, 0.0);
            w[r0 * k..(r0 + rows) * k].convert_to_f32_slice(buf);
            // SAFETY: columns r0..r0 + rows of y's t rows (row stride n) lie inside y (t * n elements, asserted
            // above); tiles cover disjoint column ranges, and `y` is borrowed mutably for the whole loop.
            unsafe { panels::multiply_rows(x, t, k, buf, rows, out, r0, n, isa) };
        });
    });
}

thread_local! {
    /// A worker's tile of rows widened to f32, kept for the thread's life.
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_with_bias() {
        let (t, k, n) = (3, 5, 4);
        let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let lin = Linear::new(w.clone(), Some(b.clone()), n, k);
        let mut y = vec![0.0; t * n];
        lin.forward(&x, t, &mut y, 2, &mut Default::default());
        for r in 0..t {
            for o in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum::<f32>() + b[o];
                assert!((y[r * n + o] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn half_storage_matches_f32_on_the_rounded_weights() {
        let (t, k, n) = (3, 70, 45); // n not a multiple of the block
        let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        for dtype in [WeightDtype::F16, WeightDtype::Bf16] {
            let half = Linear::new(w.clone(), None, n, k).with_dtype(dtype).0;
            let rounded = match half.w.to_dtype(WeightDtype::F32, n, k).unwrap() {
                Weights::F32(r) => r.unpack(),
                _ => unreachable!(),
            };
            let (mut y, mut want) = (vec![0.0; t * n], vec![0.0; t * n]);
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap()
                .install(|| half.forward(&x, t, &mut y, 2, &mut Default::default()));
            Linear::new(rounded, None, n, k).forward(&x, t, &mut want, 1, &mut Default::default());
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{dtype:?}: {a} vs {b}");
            }
            assert_eq!(half.bytes(), n * k * 2);
        }
    }

    /// An F16/BF16 matrix of a GGUF run as stored takes its input rounded to its type (ggml's `vec_dot_type`), at
    /// one token (the row kernel) and at many (the tiled path); stacked, q/k/v stay half with the same rounding; the
    /// same weights rounded at load (`native:f16`) take the input as it is.
    #[test]
    fn a_stored_half_matrix_rounds_its_input_as_ggml_does() {
        let (k, n) = (70, 45);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        for dtype in [WeightDtype::F16, WeightDtype::Bf16] {
            let loaded = Linear::new(w.clone(), None, n, k).with_dtype(dtype).0;
            assert_eq!(loaded.input, ActRounding::None);
            let stored = Linear::stored_half(loaded.w.clone(), n, k);
            let r = if dtype == WeightDtype::F16 { ActRounding::F16 } else { ActRounding::Bf16 };
            assert_eq!(stored.input, r);
            for t in [1, 3, gemv::MAX_TOKENS + 5] {
                // Values that the half types round: each differs from its rounding.
                let x: Vec<f32> = (0..t * k).map(|i| 1.0 + (i as f32 * 0.37).sin() / 3.0 + 1e-4).collect();
                let rounded_x = r.apply(&x);
                assert!(x.iter().zip(&rounded_x).filter(|(a, b)| a != b).count() > x.len() / 2);
                let (mut y, mut want, mut unrounded) = (vec![0.0; t * n], vec![0.0; t * n], vec![0.0; t * n]);
                stored.forward(&x, t, &mut y, 1, &mut Default::default());
                loaded.forward(&rounded_x, t, &mut want, 1, &mut Default::default());
                assert_eq!(y, want, "{dtype:?}, {t} tokens");
                loaded.forward(&x, t, &mut unrounded, 1, &mut Default::default());
                assert_ne!(y, unrounded, "{dtype:?}, {t} tokens: the input was not rounded");
            }
            let stacked = Linear::stack(vec![stored.clone(), stored.clone()]);
            assert_eq!((stacked.w.dtype(), stacked.input, stacked.out), (dtype, r, 2 * n));
            assert_eq!(stored.clone().with_dtype(WeightDtype::F32).0.input, ActRounding::None);
            assert_eq!(stored.with_dtype(WeightDtype::Stored).0.input, r);
        }
    }

    #[test]
    fn stacking_equals_separate_layers() {
        let a = Linear::new(vec![1.0, 2.0, 3.0, 4.0], Some(vec![0.5, 0.5]), 2, 2);
        let b = Linear::new(vec![5.0, 6.0], None, 1, 2);
        let s = Linear::stack(vec![a, b]);
        let mut y = vec![0.0; 3];
        s.forward(&[1.0, 1.0], 1, &mut y, 1, &mut Default::default());
        assert_eq!(y, [3.5, 7.5, 11.0]);
    }
}
