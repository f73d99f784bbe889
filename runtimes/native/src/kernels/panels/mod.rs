//! f32 dense layers packed once at load into panels of 16 outputs, and one product over them for every batch size.
//!
//! A matrix `w` (`[out, in]`, Hugging Face's layout) is stored as `ceil(out / 16)` panels; panel `p` holds, for each
//! input `i` in order, the 16 weights `w[16 p + j][i]` (`j < 16`) on one 64-byte cache line, the last panel padded
//! with zeros. A product `y = x w^T` of `t` tokens then streams each panel once from start to end and, per input,
//! broadcasts `x[r][i]` of each token row `r` against the line: a register tile of `MR` tokens x `16 NP` outputs
//! (12 x 32 with AVX-512, 6 x 16 with AVX2) whose weights are loaded once for all its tokens. Decode steps (a few
//! tokens) read every weight byte once; larger batches also block long inputs by [`KC`] so a tile's lines stay in L2
//! while every group of `MR` tokens passes over them. Nothing is packed per call (the `gemm` crate packs its operand
//! on every product; at 128 tokens that alone read and wrote the whole model once more).
//!
//! Every output is one chain of fused multiply-adds over the inputs in order (`acc = fma(x[r][i], w[o][i], acc)`,
//! from 0), whichever kernel, tile or batch computes it: the AVX-512, AVX2 and portable kernels give the same bits,
//! and a token's product does not depend on how many others share its step or on the thread count.

use super::OutPtr;
use super::isa::{Isa, Kind};

/// Outputs per panel (one cache line of f32).
pub const LANES: usize = 16;

/// Most inputs per block when a product's tokens take more than one tile: a tile's lines (up to `KC` x 64 bytes per
/// panel) stay in L2 while every group of tokens passes over them; the inputs are split into the fewest blocks of at
/// most `KC`, evenly (1536 as 768 + 768: a short last block restages every tile for few multiply-adds). Measured
/// (`benches/f32_matmul.rs`, SmolLM2's shapes, 32 to 512 tokens, 2 threads): blocks of 128 and 256 (the lines in L1)
/// were 10-25 % slower than 512; even blocks of at most 768 or 1024 were 0-14 % faster than 512 + 64 and 512 x 3 at
/// 512 tokens, level at 32 and 128.
pub const KC: usize = 1024;

/// Outputs per task of a product that fits one tile of tokens (a decode step): enough work to amortise a hand-off.
const TASK_OUTPUTS: usize = 64;

/// One input's weights for the 16 outputs of a panel.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Line([f32; LANES]);

/// An f32 matrix `[out, in]` packed into panels of [`LANES`] outputs (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Panels {
    lines: Vec<Line>,
    out: usize,
    inp: usize,
}

impl Panels {
    /// Packs `w`, `[out, in]` row-major.
    pub fn pack(w: &[f32], out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp, "Panels::pack: {out} x {inp} weights expected, got {}", w.len());
        let mut lines = Vec::new();
        pack_into(w, out, inp, &mut lines);
        Self { lines, out, inp }
    }

    /// The weights back in `[out, in]` row-major order.
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.out * self.inp];
        for (o, row) in w.chunks_exact_mut(self.inp.max(1)).enumerate().take(self.out) {
            self.row_into(o, row);
        }
        w
    }

    /// Row `o` of the matrix (`inp` values) into `dst`: gathered from its panel, one lane of each line.
    pub fn row_into(&self, o: usize, dst: &mut [f32]) {
        assert!(o < self.out && dst.len() == self.inp, "Panels::row_into: row {o} of {} x {}", self.out, self.inp);
        let (p, j) = (o / LANES, o % LANES);
        for (v, line) in dst.iter_mut().zip(&self.lines[p * self.inp..(p + 1) * self.inp]) {
            *v = line.0[j];
        }
    }

    pub fn out(&self) -> usize {
        self.out
    }
    pub fn inp(&self) -> usize {
        self.inp
    }
    /// Weights held (the padding of the last panel not counted).
    pub fn len(&self) -> usize {
        self.out * self.inp
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn panels(&self) -> usize {
        self.out.div_ceil(LANES)
    }
    /// Panel `p` from input `k0` on: `(inp - k0) * LANES` values.
    #[cfg(test)]
    fn panel(&self, p: usize, k0: usize) -> &[f32] {
        line_run(&self.lines[p * self.inp + k0..(p + 1) * self.inp])
    }
}

/// Most tokens of one tile (AVX-512's), and most outputs (two panels).
const MAX_MR: usize = 12;
const MAX_COLS: usize = 2 * LANES;

/// A register tile's values, staged between input blocks and copied to the output's valid columns.
type Tile = [[f32; MAX_COLS]; MAX_MR];

/// A kernel's tile shape: tokens per tile and panels per tile.
fn shape(isa: Isa) -> (usize, usize) {
    match isa.kind() {
        Kind::Portable => (4, 1),
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => (6, 1),
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => (MAX_MR, 2),
    }
}

/// `y[t, out] = x[t, inp] * w^T`, all row-major, on the kernels `isa` names, runs of panels in parallel (on the
/// step's team or the current rayon pool, `threads > 1`).
pub fn matmul(x: &[f32], t: usize, w: &Panels, y: &mut [f32], threads: usize, isa: Isa) {
    let (out, k) = (w.out, w.inp);
    assert!(x.len() >= t * k && y.len() >= t * out, "panels::matmul: operand too small");
    if t == 0 || out == 0 {
        return;
    }
    if k == 0 {
        // Every output is the empty sum.
        return y[..t * out].fill(0.0);
    }
    let (mr, np) = shape(isa);
    // One tile of tokens (a decode step): a task is a run of panels, every weight read once. More: a task is one
    // tile's worth of panels, long inputs blocked so its lines stay in L2.
    let per_task = if t <= mr { (TASK_OUTPUTS / LANES).max(np) } else { np };
    let y_ptr = OutPtr(y.as_mut_ptr());
    super::for_each_task(w.panels().div_ceil(per_task), threads, |task| {
        let p0 = task * per_task;
        let p1 = (p0 + per_task).min(w.panels());
        let cols = (p1 * LANES).min(out) - p0 * LANES;
        // SAFETY: y is t x out (asserted); this task alone writes columns p0 * 16..p0 * 16 + cols (its panels), and
        // `y` is borrowed mutably for the whole loop.
        unsafe { product(x, t, k, &w.lines[p0 * k..p1 * k], cols, y_ptr, p0 * LANES, out, isa) };
    });
}

/// `y[r][c0 + c] = x[r] . w_c` for `r < t`, `c < cols`, where `lines` holds `cols.div_ceil(16)` panels of `k`
/// inputs (row `c` of `w` is lane `c % 16` of panel `c / 16`), on this thread.
///
/// # Safety
/// `y` must be valid for reads and writes at `r * ldy + c0 + c` for every `r < t`, `c < cols`, and no other thread
/// may access those elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    x: &[f32],
    t: usize,
    k: usize,
    lines: &[Line],
    cols: usize,
    y: OutPtr,
    c0: usize,
    ldy: usize,
    isa: Isa,
) {
    let panels = cols.div_ceil(LANES);
    assert!(x.len() >= t * k && lines.len() >= panels * k, "panels::product: operand too small");
    if t == 0 || cols == 0 {
        return;
    }
    if k == 0 {
        for r in 0..t {
            // SAFETY: the caller's columns of row r.
            unsafe { std::slice::from_raw_parts_mut(y.get().add(r * ldy + c0), cols) }.fill(0.0);
        }
        return;
    }
    let (mr, np) = shape(isa);
    let kc = if t <= mr { k } else { k.div_ceil(k.div_ceil(KC)) };
    // Tokens split evenly over the fewest tiles (16 as 8 + 8, not 12 + 4: a short tile loads a line per few FMAs).
    let per_tile = t.div_ceil(t.div_ceil(mr));
    let mut tile: Tile = [[0.0; MAX_COLS]; MAX_MR];
    for q0 in (0..panels).step_by(np) {
        let n = np.min(panels - q0);
        let cols_here = (cols - q0 * LANES).min(n * LANES);
        let col = c0 + q0 * LANES;
        for k0 in (0..k).step_by(kc) {
            let kn = kc.min(k - k0);
            let ws: [&[f32]; 2] = [
                line_run(&lines[q0 * k + k0..(q0 + 1) * k]),
                if n > 1 { line_run(&lines[(q0 + 1) * k + k0..(q0 + 2) * k]) } else { &[] },
            ];
            for r0 in (0..t).step_by(per_tile) {
                let rows = per_tile.min(t - r0);
                for (r, tr) in tile.iter_mut().enumerate().take(rows) {
                    if k0 == 0 {
                        tr.fill(0.0);
                    } else {
                        // SAFETY: inside the caller's columns of row r0 + r.
                        let src = unsafe { std::slice::from_raw_parts(y.get().add((r0 + r) * ldy + col), cols_here) };
                        tr[..cols_here].copy_from_slice(src);
                    }
                }
                tile_product(isa, rows, n, &x[r0 * k + k0..], k, &ws, kn, &mut tile);
                for (r, tr) in tile.iter().enumerate().take(rows) {
                    // SAFETY: as above.
                    let dst = unsafe { std::slice::from_raw_parts_mut(y.get().add((r0 + r) * ldy + col), cols_here) };
                    dst.copy_from_slice(&tr[..cols_here]);
                }
            }
        }
    }
}

/// [`product`] of `rows` rows of `w` given row-major (`[rows, k]`: a tile widened or dequantized where it is
/// multiplied), packed first into this thread's buffer of lines.
///
/// # Safety
/// As [`product`]'s, for `cols = rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn multiply_rows(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    rows: usize,
    y: OutPtr,
    c0: usize,
    ldy: usize,
    isa: Isa,
) {
    ROW_LINES.with_borrow_mut(|lines| {
        pack_into(w, rows, k, lines);
        // SAFETY: the caller's contract.
        unsafe { product(x, t, k, lines, rows, y, c0, ldy, isa) };
    });
}

thread_local! {
    /// A worker's rows packed by [`multiply_rows`], kept for the thread's life.
    static ROW_LINES: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lines as their f32 values.
fn line_run(lines: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` over `[f32; LANES]` (its alignment adds no padding: 64 bytes = 16 f32), so the
    // lines are `lines.len() * LANES` contiguous f32.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * LANES) }
}

/// Packs `rows` rows of `w` (`[rows, k]` row-major) into `lines` as panels, the last one padded with zeros.
fn pack_into(w: &[f32], rows: usize, k: usize, lines: &mut Vec<Line>) {
    assert!(w.len() >= rows * k, "panels::pack_into: {rows} rows of {k} expected");
    lines.clear();
    lines.resize(rows.div_ceil(LANES) * k, Line([0.0; LANES]));
    if k == 0 {
        return;
    }
    // A block of 16 inputs of the panel's 16 rows at a time: its lines (1 KiB) stay in L1 while each row writes its
    // lane (a row at a time through the whole panel would pass over every line once per row).
    for (p, panel) in lines.chunks_exact_mut(k).enumerate() {
        let n = LANES.min(rows - p * LANES);
        for (b, block) in panel.chunks_mut(LANES).enumerate() {
            let i0 = b * LANES;
            for j in 0..n {
                let src = &w[(p * LANES + j) * k + i0..][..block.len()];
                for (line, &v) in block.iter_mut().zip(src) {
                    line.0[j] = v;
                }
            }
        }
    }
}

/// `tile[r][16 p + j] = fma chain of x[r * ldx + i] * ws[p][16 i + j] over i < kc`, from the tile's values, for
/// `r < rows`, `p < panels`, on `isa`'s kernel.
#[allow(clippy::too_many_arguments)]
fn tile_product(
    isa: Isa,
    rows: usize,
    panels: usize,
    x: &[f32],
    ldx: usize,
    ws: &[&[f32]; 2],
    kc: usize,
    tile: &mut Tile,
) {
    assert!(rows >= 1 && rows <= shape(isa).0 && panels >= 1 && panels <= shape(isa).1);
    assert!(x.len() >= (rows - 1) * ldx + kc && ws[..panels].iter().all(|w| w.len() >= kc * LANES));
    match isa.kind() {
        Kind::Portable => tile_portable(rows, panels, x, ldx, ws, kc, tile),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx2 is made only after the CPU was found to have AVX2 and FMA (isa.rs); the
        // operands' extents are asserted above.
        Kind::Avx2 => unsafe { x86::tile_avx2(rows, x.as_ptr(), ldx, ws[0].as_ptr(), kc, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx512 is made only after the CPU was found to have AVX-512F (isa.rs); extents
        // as above (a second panel only when `panels` is 2).
        Kind::Avx512 => unsafe {
            x86::tile_avx512(rows, panels, x.as_ptr(), ldx, [ws[0].as_ptr(), ws[1].as_ptr()], kc, tile)
        },
    }
}

/// The same chains in scalar code (`f32::mul_add` is one rounding, as the FMA instructions).
fn tile_portable(rows: usize, panels: usize, x: &[f32], ldx: usize, ws: &[&[f32]; 2], kc: usize, tile: &mut Tile) {
    for (r, tr) in tile.iter_mut().enumerate().take(rows) {
        let xr = &x[r * ldx..r * ldx + kc];
        for (p, w) in ws.iter().enumerate().take(panels) {
            for j in 0..LANES {
                let mut acc = tr[p * LANES + j];
                for (i, &xv) in xr.iter().enumerate() {
                    acc = xv.mul_add(w[i * LANES + j], acc);
                }
                tr[p * LANES + j] = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        [Some(Isa::PORTABLE), Isa::avx2(), Isa::avx512()].into_iter().flatten().collect()
    }

    fn operands(t: usize, out: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = (0..out * k).map(|i| (i as f32 * 0.11).cos() * 0.5).collect();
        (x, w)
    }

    /// The chain every kernel computes, written out.
    fn chains(x: &[f32], t: usize, w: &[f32], out: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0; t * out];
        for r in 0..t {
            for o in 0..out {
                y[r * out + o] = (0..k).fold(0.0f32, |acc, i| x[r * k + i].mul_add(w[o * k + i], acc));
            }
        }
        y
    }

    #[test]
    fn packing_round_trips_and_pads_the_last_panel() {
        let (out, k) = (37, 5);
        let (_, w) = operands(1, out, k);
        let p = Panels::pack(&w, out, k);
        assert_eq!((p.panels(), p.len(), p.lines.len()), (3, out * k, 3 * k));
        assert_eq!(p.unpack(), w);
        let mut row = vec![0.0; k];
        p.row_into(33, &mut row);
        assert_eq!(row, w[33 * k..34 * k]);
        // Panel 2 holds outputs 32..37, the rest of its lines zero.
        assert_eq!(
            p.panel(2, 0)[..LANES],
            [
                w[32 * k],
                w[33 * k],
                w[34 * k],
                w[35 * k],
                w[36 * k],
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0
            ]
        );
        assert_eq!(p.panel(0, 3)[1], w[k + 3]);
    }

    /// Every kernel, every token count across the tile sizes, outputs that are not whole panels or whole pairs, and
    /// inputs longer than one block: the same bits as the written-out chains, on 1 and 2 threads.
    #[test]
    fn every_kernel_gives_the_chains_bits_at_every_shape() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (out, k) in [(1, 1), (16, 7), (37, 64), (80, KC + 45), (96, 2 * KC)] {
            for t in [1, 2, 5, 6, 7, 12, 13, 25, 40] {
                let (x, w) = operands(t, out, k);
                let want = chains(&x, t, &w, out, k);
                let p = Panels::pack(&w, out, k);
                for isa in isas() {
                    for threads in [1, 2] {
                        let mut y = vec![f32::NAN; t * out];
                        pool.install(|| matmul(&x, t, &p, &mut y, threads, isa));
                        assert!(y == want, "{} out {out} in {k} t {t} threads {threads}", isa.as_str());
                    }
                }
            }
        }
    }

    /// A token's outputs do not depend on the batch it is in.
    #[test]
    fn a_tokens_product_is_the_same_in_any_batch() {
        let (out, k) = (50, 300);
        let (x, w) = operands(30, out, k);
        let p = Panels::pack(&w, out, k);
        let isa = Isa::detect();
        let mut all = vec![0.0; 30 * out];
        matmul(&x, 30, &p, &mut all, 1, isa);
        for (r, want) in all.chunks_exact(out).enumerate() {
            let mut one = vec![0.0; out];
            matmul(&x[r * k..(r + 1) * k], 1, &p, &mut one, 1, isa);
            assert_eq!(one, want, "token {r}");
        }
    }

    #[test]
    fn empty_products_are_empty_sums() {
        let p = Panels::pack(&[], 0, 4);
        let mut y = vec![];
        matmul(&[1.0; 8], 2, &p, &mut y, 2, Isa::detect());
        let p = Panels::pack(&[], 3, 0);
        let mut y = vec![f32::NAN; 6];
        matmul(&[], 2, &p, &mut y, 1, Isa::detect());
        assert_eq!(y, [0.0; 6], "no inputs: every output is the empty sum");
    }
}
