//! Quantized dense layers: weights kept in their GGUF block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K, and
//! F16/F32 beside them in a mixed file), memory-mapped from the file or quantized at load.
//!
//! The activations are rounded as ggml rounds them for each weight type ([`ActRounding`]: 8-bit blocks for the
//! 4/5/8-bit types, f16 for F16 weights), on every path, so the model computed does not depend on the batch size and
//! is the one llama.cpp computes from the same file.
//!
//! Two paths. Integer products: each row's blocks are decoded once per group of tokens and multiplied with their
//! 8-bit activations (Q8_0 blocks for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL; Q8_K blocks for Q2_K..Q6_K and IQ4_XS),
//! AVX2 when the CPU has it (detected at run time), else a portable version of the same arithmetic ([`dot`],
//! [`kquant`]); F16/F32 parts take f32 products of a dequantized row. Large batches (long prefills): tiles of rows are
//! dequantized to f32, packed into panels and multiplied there ([`super::panels::multiply_rows`]), where the product's
//! compute, not the weight bytes, bounds.

mod acts;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_rows8;
pub mod dot;
pub mod kquant;
mod matrix;
pub mod quantize;

pub use acts::{ActRounding, Q8Acts, Q8KActs, Q8KRow, Q8Row};
pub use matrix::{QMatrix, QuantError, synthetic};

pub use super::isa::Isa;
use super::panels;
use super::{OutPtr, for_each_task};

/// Parts in F32 / F16 take the per-row f32 dot products up to this many tokens, and dequantized tiles (packed into
/// panels, [`panels::multiply_rows`]) above it.
pub const MAX_DOT_TOKENS: usize = 8;
/// Parts in an integer block type take the integer products up to this many tokens (placed with
/// `cargo bench -p nano-vllm-native --bench quant_matmul` against the `gemm` crate's tiles, before the panel tiles
/// replaced them; not measured again), and dequantized tiles above it.
pub const MAX_INT_TOKENS: usize = 64;
/// Fewest rows per task on the dot-product path; a matrix is split into at most [`TASKS_PER_THREAD`] tasks per
/// thread (a decode step runs ~200 small products: more, smaller tasks cost more in hand-offs than they balance).
const DOT_ROWS: usize = 16;
const TASKS_PER_THREAD: usize = 4;
/// Rows per dequantized tile (two panels of 16).
const TILE_ROWS: usize = 2 * panels::LANES;

/// Whether `ty` has integer products against quantized activations.
pub fn integer(ty: nano_vllm_bundle::gguf::GgmlType) -> bool {
    dot::wants_q8(ty) || kquant::wants_q8k(ty)
}

/// (part, first row, column of y, rows) of one task.
type Task = (usize, usize, usize, usize);

/// What a product needs besides its operands, kept from one product to the next so that a step allocates nothing
/// once its buffers have grown to the largest product (the native runtime's workspace holds one): the task list, the
/// quantized activations, and the activations rounded for the f32 paths. Each worker thread's own buffers (a
/// dequantized row or tile, a task's products) are thread-locals of this module, kept for the thread's life.
#[derive(Debug, Default)]
pub struct Scratch {
    tasks: Vec<Task>,
    acts: dot::Acts,
    /// Activations rounded as a type takes them, at most one copy per rounding; the first `n_rounded` are this
    /// product's.
    rounded: Vec<(ActRounding, Vec<f32>)>,
    n_rounded: usize,
}

impl Scratch {
    /// `x` rounded as `r` rounds it, computed once per product.
    fn round(&mut self, r: ActRounding, x: &[f32], k: usize) {
        if self.rounded[..self.n_rounded].iter().any(|(have, _)| *have == r) {
            return;
        }
        if self.rounded.len() == self.n_rounded {
            self.rounded.push((r, Vec::new()));
        }
        let (rounding, xs) = &mut self.rounded[self.n_rounded];
        *rounding = r;
        xs.clear();
        for row in x.chunks_exact(k) {
            r.apply_into(row, xs);
        }
        self.n_rounded += 1;
    }

    /// `x` (rows of `k`) rounded as `r` rounds it, for a float product outside the block paths (an F16/BF16 GGUF
    /// matrix stored densely): the buffer is kept from call to call.
    pub fn rounded_input(&mut self, r: ActRounding, x: &[f32], k: usize) -> &[f32] {
        self.n_rounded = 0;
        self.round(r, x, k);
        &self.rounded[0].1
    }

    fn input<'a>(&'a self, ty: nano_vllm_bundle::gguf::GgmlType, x: &'a [f32]) -> &'a [f32] {
        let r = ActRounding::of(ty);
        self.rounded[..self.n_rounded].iter().find(|(have, _)| *have == r).map_or(x, |(_, xs)| xs.as_slice())
    }
}

thread_local! {
    /// A worker's buffers: a dequantized row or tile, and a task's products.
    static TASK_BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `y[i, col0 + r] = sum_j x[i, j] * w_r[j]` for the `parts` stacked along the output (q, k, v), `y` with row
/// stride `ldy`. `x` is `[t, k]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_parts(
    parts: &[QMatrix],
    x: &[f32],
    t: usize,
    y: &mut [f32],
    ldy: usize,
    threads: usize,
    isa: Isa,
    scratch: &mut Scratch,
) {
    matmul_parts_up_to(parts, x, t, y, ldy, threads, isa, MAX_INT_TOKENS, scratch)
}

/// [`matmul_parts`] with integer products up to `max_int_tokens` tokens (benchmarks compare the two paths).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn matmul_parts_up_to(
    parts: &[QMatrix],
    x: &[f32],
    t: usize,
    y: &mut [f32],
    ldy: usize,
    threads: usize,
    isa: Isa,
    max_int_tokens: usize,
    scratch: &mut Scratch,
) {
    let k = parts[0].cols;
    assert!(parts.iter().all(|p| p.cols == k), "stacked parts share their input");
    assert!(x.len() >= t * k && y.len() >= t * ldy, "matmul_parts: operand too small");
    if t == 0 {
        return;
    }
    let out = OutPtr(y.as_mut_ptr());
    // Each part's path: per-row dot products (integer, or f32 for the float types), or dequantized tiles in panels.
    let dots = |ty| if integer(ty) { t <= max_int_tokens } else { t <= MAX_DOT_TOKENS };
    let dot_rows: usize = parts.iter().filter(|p| dots(p.ty)).map(|p| p.rows).sum();
    let rows_per_dot = dot_rows.div_ceil(threads.max(1) * TASKS_PER_THREAD).next_multiple_of(DOT_ROWS).max(DOT_ROWS);
    let tasks = &mut scratch.tasks;
    tasks.clear();
    let mut col = 0;
    for (p, part) in parts.iter().enumerate() {
        let step = if dots(part.ty) { rows_per_dot } else { TILE_ROWS };
        for r0 in (0..part.rows).step_by(step) {
            tasks.push((p, r0, col + r0, step.min(part.rows - r0)));
        }
        col += part.rows;
    }
    assert!(col <= ldy, "stacked parts wider than y");
    // The activations each part sees, rounded as ggml rounds them for its type: quantized once for the integer
    // products, or rounded in f32 (at most one copy per rounding) for the other paths.
    let int_types = parts.iter().map(|p| p.ty).filter(|&ty| integer(ty) && dots(ty));
    scratch.acts.fill(int_types, x, t, k);
    scratch.n_rounded = 0;
    for part in parts {
        let r = ActRounding::of(part.ty);
        if r != ActRounding::None && !(integer(part.ty) && dots(part.ty)) {
            scratch.round(r, &x[..t * k], k);
        }
    }
    let scratch = &*scratch;
    for_each_task(scratch.tasks.len(), threads, |task| {
        let (p, r0, c0, rows) = scratch.tasks[task];
        let part = &parts[p];
        TASK_BUFFERS.with_borrow_mut(|(buffer, vals)| {
            if dots(part.ty) {
                vals.resize(rows * t, 0.0);
                dot::rows(part, r0, rows, scratch.input(part.ty, x), &scratch.acts, t, vals, buffer, isa);
                for i in 0..t {
                    for r in 0..rows {
                        // SAFETY: element (i, c0 + r) lies inside y (t * ldy elements, asserted); tasks cover
                        // disjoint column ranges [c0, c0 + rows), so no two tasks write the same element, and y
                        // outlives the loop.
                        unsafe { *out.get().add(i * ldy + c0 + r) = vals[r * t + i] };
                    }
                }
                return;
            }
            buffer.clear();
            part.dequantize_rows(r0, rows, buffer);
            let x = scratch.input(part.ty, x);
            // SAFETY: columns c0..c0 + rows of y's t rows (stride ldy) lie inside y (t * ldy elements, asserted,
            // and c0 + rows <= col <= ldy); tasks write disjoint column ranges, and y outlives the loop.
            unsafe { panels::multiply_rows(x, t, k, buffer, rows, out, c0, ldy, isa) };
        });
    });
}

#[cfg(test)]
mod tests;
