//! Every kernel against a dequantize-then-f64 reference on random blocks (odd row counts, the last partial task, both
//! the dot-product and the dequantized tiles), the AVX2 kernels against the portable ones, and the quantizers.

use half::f16;
use nano_vllm_bundle::gguf::{GgmlType, dequantize};

use super::*;

/// A small deterministic generator (xorshift), so the tests need no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

fn put_half(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `rows x cols` of random blocks of `ty` with finite, realistic scales.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> QMatrix {
    let n = rows * cols;
    let bytes = match ty {
        GgmlType::F32 => rng.floats(n).iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => rng.floats(n).iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        GgmlType::BF16 => rng.floats(n).iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        GgmlType::Q8_0 | GgmlType::Q4_0 => quantize::quantize(ty, &rng.floats(n)),
        _ => {
            let (bb, blocks) = (ty.block_bytes(), n / ty.block_size());
            let mut bytes: Vec<u8> = (0..bb * blocks).map(|_| rng.next() as u8).collect();
            for blk in bytes.chunks_exact_mut(bb) {
                let (s, m) = (0.02 + 0.01 * rng.f32(), 0.05 * rng.f32());
                match ty {
                    GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                        put_half(blk, 0, s);
                        put_half(blk, 2, m);
                    }
                    GgmlType::Q2K => {
                        put_half(blk, 80, s);
                        put_half(blk, 82, m);
                    }
                    GgmlType::Q5_0 => put_half(blk, 0, s),
                    GgmlType::Q6K => put_half(blk, 208, s * 0.05),
                    GgmlType::Q3K => put_half(blk, 108, s * 0.05),
                    GgmlType::IQ4NL => put_half(blk, 0, s * 0.1),
                    GgmlType::IQ4XS => put_half(blk, 0, s * 0.01),
                    other => unreachable!("{other}"),
                }
            }
            bytes
        }
    };
    QMatrix::new("test", ty, rows, cols, bytes).unwrap()
}

const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4NL,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4XS,
];

fn isas() -> Vec<Isa> {
    [Some(Isa::PORTABLE), Isa::avx2(), Isa::avx512()].into_iter().flatten().collect()
}

/// The reference: dequantized weights (and, for the integer kernels, the dequantized Q8 activations they see) in f64.
fn reference(m: &QMatrix, x: &[f32], t: usize) -> (Vec<f64>, Vec<f64>) {
    let k = m.cols;
    let w = m.to_f32();
    let xs: Vec<f32> = x[..t * k].chunks_exact(k).flat_map(|row| ActRounding::of(m.ty).apply(row)).collect();
    let (mut y, mut scale) = (vec![0.0; t * m.rows], vec![0.0; t * m.rows]);
    let min_at = match m.ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some(2),
        _ => None,
    };
    let acts = (min_at.is_some() && t <= MAX_INT_TOKENS).then(|| Q8Acts::quantize(x, t, k));
    for i in 0..t {
        for r in 0..m.rows {
            let (row, xi) = (&w[r * k..(r + 1) * k], &xs[i * k..(i + 1) * k]);
            let mut v: f64 = row.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
            // ggml's Q4_1 / Q5_1 x Q8_1 take the offset term from s = f16(d * sum q), not the exact d * sum q.
            if let Some(a) = &acts {
                let ar = a.row(i);
                for (b, blk) in m.row(r).chunks_exact(m.ty.block_bytes()).enumerate() {
                    let exact: f64 = ar.qs[32 * b..32 * b + 32].iter().map(|&q| q as f64 * ar.d[b] as f64).sum();
                    v += dot::half(blk, 2) as f64 * (ar.s[b] as f64 - exact);
                }
            }
            y[i * m.rows + r] = v;
            scale[i * m.rows + r] = row.iter().zip(xi).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        }
    }
    (y, scale)
}

#[test]
fn every_type_matches_dequantize_then_f64_on_both_paths() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for ty in TYPES {
        let cols = if ty.block_size() == 256 { 512 } else { 96 };
        let rows = 37; // not a multiple of the task sizes: the last task is partial
        let m = random_matrix(ty, rows, cols, &mut rng);
        for t in [1, 3, MAX_DOT_TOKENS, MAX_DOT_TOKENS + 1, 33, MAX_INT_TOKENS + 1] {
            let x = rng.floats(t * cols);
            let (want, scale) = reference(&m, &x, t);
            for isa in isas() {
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; t * rows];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| {
                        matmul_parts(
                            std::slice::from_ref(&m),
                            &x,
                            t,
                            &mut y,
                            rows,
                            threads,
                            isa,
                            &mut Scratch::default(),
                        )
                    });
                    for (j, (&got, &w)) in y.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * scale[j].max(1e-3) + 1e-6;
                        assert!(
                            (got as f64 - w).abs() <= tol,
                            "{ty} t={t} {isa:?} threads={threads} [{j}]: {got} vs {w} (tol {tol:e})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn stacked_parts_of_different_types_fill_their_columns() {
    let mut rng = Rng(7);
    let parts = [
        random_matrix(GgmlType::Q4_1, 20, 64, &mut rng),
        random_matrix(GgmlType::Q8_0, 5, 64, &mut rng),
        random_matrix(GgmlType::F16, 9, 64, &mut rng),
    ];
    let (t, width) = (2, 34 + 3); // y wider than the parts: the extra columns are untouched
    let x = rng.floats(t * 64);
    let mut y = vec![-7.0f32; t * width];
    matmul_parts(&parts, &x, t, &mut y, width, 1, Isa::detect(), &mut Scratch::default());
    let mut col = 0;
    for p in &parts {
        let mut alone = vec![0.0f32; t * p.rows];
        matmul_parts(std::slice::from_ref(p), &x, t, &mut alone, p.rows, 1, Isa::detect(), &mut Scratch::default());
        for i in 0..t {
            assert_eq!(&y[i * width + col..i * width + col + p.rows], &alone[i * p.rows..(i + 1) * p.rows]);
        }
        col += p.rows;
    }
    assert!((0..t).all(|i| y[i * width + 34..(i + 1) * width].iter().all(|&v| v == -7.0)));
}

/// Every machine of the project's kind has AVX2: on one without it this test fails rather than pass unchecked (skip it
/// there by name, `--skip avx2_and_portable_kernels_agree`, so the report shows it was not run).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_and_portable_kernels_agree() {
    let avx2 = Isa::avx2().expect("this test checks the AVX2 kernels, and this CPU lacks AVX2, FMA or F16C");
    let mut rng = Rng(42);
    for ty in TYPES {
        let cols = if ty.block_size() == 256 { 1024 } else { 1536 };
        let m = random_matrix(ty, 24, cols, &mut rng);
        // One token, and seven: a group of four tokens sharing each decoded block, then three.
        for t in [1, 7] {
            let x = rng.floats(t * cols);
            let run = |isa| {
                let mut y = vec![0.0f32; t * 24];
                matmul_parts(std::slice::from_ref(&m), &x, t, &mut y, 24, 1, isa, &mut Scratch::default());
                y
            };
            let (a, b) = (run(Isa::PORTABLE), run(avx2));
            let (_, scale) = reference(&m, &x, t);
            for (j, (p, v)) in a.iter().zip(&b).enumerate() {
                // Same integer sums; only the order of the f32 accumulation differs.
                assert!(((p - v).abs() as f64) <= 1e-6 * scale[j] + 1e-7, "{ty} t={t} [{j}]: portable {p} vs avx2 {v}");
            }
        }
    }
}

#[test]
fn quantizers_follow_ggml_reference() {
    // Q8_0: amax 2.54 -> d = 0.02, values q * 0.02.
    let mut x = vec![0.0f32; 32];
    x[3] = 2.54;
    x[4] = -1.0;
    x[5] = 0.01; // exactly half a step: rounds away from zero
    let b = quantize::q8_0(&x);
    assert_eq!(b.len(), 34);
    assert_eq!((b[2 + 3] as i8, b[2 + 4] as i8, b[2 + 5] as i8), (127, -50, 1));
    // Q4_0: the largest-magnitude value is -4 -> d = 0.5, nibble = trunc(x / 0.5 + 8.5) capped at 15.
    let mut x = vec![0.0f32; 32];
    x[0] = -4.0;
    x[1] = 3.9;
    x[17] = 1.0;
    let b = quantize::q4_0(&x);
    assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 0.5);
    assert_eq!((b[2] & 0x0F, b[3] & 0x0F, b[3] >> 4, b[2] >> 4), (0, 15, 10, 8));
    let mut back = Vec::new();
    dequantize(GgmlType::Q4_0, &b, &mut back);
    assert_eq!((back[0], back[1], back[17], back[16]), (-4.0, 3.5, 1.0, 0.0));
    // Round trips stay within half a step.
    let mut rng = Rng(3);
    let x = rng.floats(256);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
        let mut back = Vec::new();
        dequantize(ty, &quantize::quantize(ty, &x), &mut back);
        // Q8_0 within half a step; Q4_0 within a step (its levels run -8..7, so the far end of the range rounds down).
        let bound = if ty == GgmlType::Q8_0 { 0.51 / 127.0 } else { 1.01 / 8.0 };
        assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() <= bound + 1e-3), "{ty}");
    }
}

#[test]
fn bad_matrices_are_errors_naming_the_tensor() {
    let e = QMatrix::new("blk.0.attn_q.weight", GgmlType::Q8_0, 2, 40, vec![0; 68]).unwrap_err();
    assert!(e.to_string().contains("blk.0.attn_q.weight") && e.to_string().contains("not whole Q8_0 blocks"), "{e}");
    let e = QMatrix::new("w", GgmlType::Q8_0, 2, 32, vec![0; 67]).unwrap_err();
    assert!(e.to_string().contains("67 bytes"), "{e}");
    let e = QMatrix::new("w", GgmlType::Q8_1, 1, 32, vec![0; 36]).unwrap_err();
    assert!(e.to_string().contains("no kernel for Q8_1"), "{e}");
}

/// A matrix of no columns (a degenerate shape a hostile file can declare) gives zeros, not a division by zero in the
/// one-token kernels' prefetch distance.
#[test]
fn a_matrix_of_no_columns_gives_zeros() {
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
        let m = QMatrix::new("w", ty, 16, 0, Vec::new()).unwrap();
        for isa in isas() {
            let mut y = vec![f32::NAN; 16];
            matmul_parts(std::slice::from_ref(&m), &[], 1, &mut y, 16, 1, isa, &mut Scratch::default());
            assert!(y.iter().all(|&v| v == 0.0), "{ty} {isa:?}: {y:?}");
        }
    }
}
