//! Quantized dense layers: weights kept in their GGUF block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K, and
//! F16/F32 beside them in a mixed file), memory-mapped from the file or quantized at load.
//!
//! The activations are rounded as ggml rounds them for each weight type ([`ActRounding`]: 8-bit blocks for the
//! 4/5/8-bit types, f16 for F16 weights), on every path, so the model computed does not depend on the batch size and
//! is the one llama.cpp computes from the same file.
//!
//! Two paths, as llama.cpp has them. Small batches (decode): each row's blocks are dotted with every token's
//! activations; for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 the products are integer on the 8-bit activations (AVX2 when the CPU has it,
//! detected at run time, else a portable version of the same arithmetic: [`dot`]); the other types dequantize a row
//! and take f32 products. Large batches (prefill): tiles of rows are dequantized to f32 and multiplied on the `gemm`
//! crate, where the matrix product's compute, not the weight bytes, is the bound.

mod acts;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod dot;
mod matrix;
pub mod quantize;

pub use acts::{ActRounding, Q8Acts, Q8Row};
pub use matrix::{QMatrix, QuantError};

pub use super::isa::Isa;
use super::{OutPtr, for_each_task};

/// Batches of at most this many tokens take the per-row dot products; larger ones dequantize tiles for `gemm`.
pub const MAX_DOT_TOKENS: usize = 8;
/// Fewest rows per task on the dot-product path; a matrix is split into at most [`TASKS_PER_THREAD`] tasks per
/// thread (a decode step runs ~200 small products: more, smaller tasks cost more in hand-offs than they balance).
const DOT_ROWS: usize = 16;
const TASKS_PER_THREAD: usize = 4;
/// Rows per dequantized tile on the `gemm` path.
const TILE_ROWS: usize = 32;

/// `y[i, col0 + r] = sum_j x[i, j] * w_r[j]` for the `parts` stacked along the output (q, k, v), `y` with row
/// stride `ldy`. `x` is `[t, k]`.
pub fn matmul_parts(parts: &[QMatrix], x: &[f32], t: usize, y: &mut [f32], ldy: usize, threads: usize, isa: Isa) {
    let k = parts[0].cols;
    assert!(parts.iter().all(|p| p.cols == k), "stacked parts share their input");
    assert!(x.len() >= t * k && y.len() >= t * ldy, "matmul_parts: operand too small");
    if t == 0 {
        return;
    }
    let out = OutPtr(y.as_mut_ptr());
    let total_rows: usize = parts.iter().map(|p| p.rows).sum();
    let rows_per_task = if t <= MAX_DOT_TOKENS {
        total_rows.div_ceil(threads.max(1) * TASKS_PER_THREAD).next_multiple_of(DOT_ROWS).max(DOT_ROWS)
    } else {
        TILE_ROWS
    };
    // (part, first row, column of y) per task.
    let mut tasks = Vec::new();
    let mut col = 0;
    for (p, part) in parts.iter().enumerate() {
        for r0 in (0..part.rows).step_by(rows_per_task) {
            tasks.push((p, r0, col + r0));
        }
        col += part.rows;
    }
    assert!(col <= ldy, "stacked parts wider than y");
    // The activations each part sees, rounded as ggml rounds them for its type (at most one copy per rounding).
    let mut rounded: Vec<(ActRounding, Vec<f32>)> = Vec::new();
    for part in parts {
        let r = ActRounding::of(part.ty);
        let integer = t <= MAX_DOT_TOKENS && dot::wants_q8(part.ty);
        if r != ActRounding::None && !integer && !rounded.iter().any(|(have, _)| *have == r) {
            let xs = x[..t * k].chunks_exact(k).flat_map(|row| r.apply(row)).collect();
            rounded.push((r, xs));
        }
    }
    let input = |part: &QMatrix| -> &[f32] {
        let r = ActRounding::of(part.ty);
        rounded.iter().find(|(have, _)| *have == r).map_or(x, |(_, xs)| xs.as_slice())
    };
    if t <= MAX_DOT_TOKENS {
        let acts = parts.iter().any(|p| dot::wants_q8(p.ty)).then(|| Q8Acts::quantize(x, t, k));
        for_each_task(tasks.len(), threads, |(scratch, vals): &mut (Vec<f32>, Vec<f32>), task| {
            let (p, r0, c0) = tasks[task];
            let part = &parts[p];
            let rows = rows_per_task.min(part.rows - r0);
            vals.resize(rows * t, 0.0);
            dot::rows(part, r0, rows, input(part), acts.as_ref(), t, vals, scratch, isa);
            for i in 0..t {
                for r in 0..rows {
                    // SAFETY: element (i, c0 + r) lies inside y (t * ldy elements, asserted); tasks cover disjoint
                    // column ranges [c0, c0 + rows), so no two tasks write the same element, and y outlives the loop.
                    unsafe { *out.get().add(i * ldy + c0 + r) = vals[r * t + i] };
                }
            }
        });
    } else {
        for_each_task(tasks.len(), threads, |buf: &mut Vec<f32>, task| {
            let (p, r0, c0) = tasks[task];
            let part = &parts[p];
            let rows = rows_per_task.min(part.rows - r0);
            buf.clear();
            part.dequantize_rows(r0, rows, buf);
            let x = input(part);
            // SAFETY: dst starts at column c0 of y (row stride ldy) and spans t rows x `rows` columns, inside y;
            // tasks write disjoint column ranges. lhs is x (t x k, row stride k); rhs is buf viewed as k x rows with
            // column stride k.
            unsafe {
                gemm::gemm(
                    t,
                    rows,
                    k,
                    out.get().add(c0),
                    1,
                    ldy as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    buf.as_ptr(),
                    k as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    }
}

#[cfg(test)]
mod tests;
