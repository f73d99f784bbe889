use super::*;
use crate::kernels::isa::Isa;

fn isas() -> Vec<Isa> {
    [Some(Isa::PORTABLE), Isa::avx2(), Isa::avx512()].into_iter().flatten().collect()
}

/// A layer's pools of `blocks` blocks, every key and value element distinct and spread over [-1, 1).
fn pools(heads: &Heads, blocks: usize) -> (Vec<f32>, Vec<f32>) {
    let (nkv, d) = (heads.num_kv_heads, heads.head_dim);
    let slots = blocks * heads.block_size;
    let value = |i: usize| ((i * 2_654_435_761) % 10_007) as f32 / 5_003.0 - 1.0;
    let mut k = vec![f32::NAN; slots * nkv * d];
    let mut v = vec![0.0; slots * nkv * d];
    for s in 0..slots {
        for g in 0..nkv {
            for dim in 0..d {
                let i = (s * nkv + g) * d + dim;
                k[key_index(heads, s, g, dim)] = value(i);
                v[i] = value(i + 17);
            }
        }
    }
    assert!(k.iter().all(|x| !x.is_nan()), "key_index covers the pool");
    (k, v)
}

/// softmax(q . K * scale) V in f64, read through the pools' layout.
fn reference(q: &[f32], h: usize, slots: &[u32], k: &[f32], v: &[f32], heads: &Heads) -> Vec<f64> {
    let (nkv, d) = (heads.num_kv_heads, heads.head_dim);
    let g = h / (heads.num_heads / nkv);
    let s: Vec<f64> = slots
        .iter()
        .map(|&slot| {
            (0..d).map(|dim| q[dim] as f64 * k[key_index(heads, slot as usize, g, dim)] as f64).sum::<f64>()
                * heads.scale as f64
        })
        .collect();
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    (0..d)
        .map(|dim| {
            slots.iter().zip(&w).map(|(&slot, &wj)| wj * v[(slot as usize * nkv + g) * d + dim] as f64).sum::<f64>()
                / sum
        })
        .collect()
}

#[test]
fn attends_through_slots_with_gqa() {
    // 2 query heads sharing 1 kv head of dim 2; context = slots 3 and 1 (positions 0, 1), blocks of 2.
    let heads = Heads { num_heads: 2, num_kv_heads: 1, head_dim: 2, scale: 1.0, block_size: 2 };
    let mut k = vec![0.0; 8];
    let mut v = vec![0.0; 8];
    for (slot, key) in [(3, [1.0, 0.0]), (1, [0.0, 1.0])] {
        for (dim, &x) in key.iter().enumerate() {
            k[key_index(&heads, slot, 0, dim)] = x;
        }
    }
    v[6..8].copy_from_slice(&[10.0, 0.0]);
    v[2..4].copy_from_slice(&[0.0, 10.0]);
    let q = [2.0f32.ln(), 0.0, 0.0, 0.0];
    for isa in isas() {
        let mut out = [0.0; 4];
        for (h, oh) in out.chunks_exact_mut(2).enumerate() {
            attend_head_on(isa, &q[2 * h..2 * h + 2], h, &[3, 1], 0, &k, &v, heads, oh, &mut Scratch::default());
        }
        // Head 0: scores (ln 2, 0) -> weights (2/3, 1/3). Head 1: equal weights.
        assert!((out[0] - 20.0 / 3.0).abs() < 1e-5 && (out[1] - 10.0 / 3.0).abs() < 1e-5, "{}", isa.as_str());
        assert!((out[2] - 5.0).abs() < 1e-5 && (out[3] - 5.0).abs() < 1e-5, "{}", isa.as_str());
    }
}

/// Every kernel gives the portable build's bits, and all are within f32 rounding of an f64 softmax: head sizes of
/// whole register chunks and not, block sizes that hold a group of keys in place and that do not, contexts shorter
/// and longer than a group and than the groups scored at once, windows that start mid-block (read from the group's
/// start, the positions before the window skipped), scattered blocks.
#[test]
fn every_kernel_gives_the_same_bits_and_the_softmax() {
    for (d, bs) in [(64, 16), (64, 8), (72, 32), (256, 16), (2, 16), (24, 5)] {
        let heads =
            Heads { num_heads: 4, num_kv_heads: 2, head_dim: d, scale: 1.0 / (d as f32).sqrt(), block_size: bs };
        let blocks = 300usize.div_ceil(bs) + 1;
        let (k, v) = pools(&heads, blocks);
        // Blocks in a scrambled order; position p at block table[p / bs].
        let table: Vec<usize> = (0..blocks).map(|b| (b * 7 + 3) % blocks).collect();
        let all: Vec<u32> = (0..(blocks - 1) * bs).map(|p| (table[p / bs] * bs + p % bs) as u32).collect();
        let q: Vec<f32> = (0..4 * d).map(|i| ((i as f32) * 0.731).sin() * 2.0).collect();
        for (a, b) in [(0, 1), (0, 15), (0, 16), (0, 17), (0, 40), (3, 140), (0, 129), (16, 280), (7, 7 + 160)] {
            let slots = &all[a..b];
            for h in 0..4 {
                let qh = &q[h * d..(h + 1) * d];
                let want = reference(qh, h, slots, &k, &v, &heads);
                let mut first: Option<Vec<f32>> = None;
                for isa in isas() {
                    let mut out = vec![f32::NAN; d];
                    // A window starting mid-group is read from the group's start, the positions before it skipped.
                    let skip = a % KEYS;
                    let read = &all[a - skip..b];
                    attend_head_on(isa, qh, h, read, skip, &k, &v, heads, &mut out, &mut Scratch::default());
                    for (dim, (&o, &w)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (o as f64 - w).abs() < 2e-5,
                            "d {d} bs {bs} ctx {a}..{b} head {h} dim {dim}: {o} vs {w}"
                        );
                    }
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert!(
                            f.iter().zip(&out).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{} differs from portable: d {d} bs {bs} ctx {a}..{b} head {h}",
                            isa.as_str()
                        ),
                    }
                }
            }
        }
    }
}

/// A short last group read in place also reads its block's slots past the context: whatever they hold (here NaN)
/// weighs nothing.
#[test]
fn slots_past_the_context_weigh_nothing() {
    let heads = Heads { num_heads: 1, num_kv_heads: 1, head_dim: 64, scale: 0.125, block_size: 32 };
    let (k, v) = pools(&heads, 2);
    let q: Vec<f32> = (0..64).map(|i| (i as f32 * 0.7).sin()).collect();
    let slots: Vec<u32> = (32..32 + 21).collect();
    for isa in isas() {
        let mut clean = vec![0.0; 64];
        attend_head_on(isa, &q, 0, &slots, 0, &k, &v, heads, &mut clean, &mut Scratch::default());
        let mut dirty = k.clone();
        for slot in 32 + 21..64 {
            for dim in 0..64 {
                dirty[key_index(&heads, slot, 0, dim)] = f32::NAN;
            }
        }
        let mut out = vec![0.0; 64];
        attend_head_on(isa, &q, 0, &slots, 0, &dirty, &v, heads, &mut out, &mut Scratch::default());
        assert_eq!(out, clean, "{}", isa.as_str());
        assert!(out.iter().all(|x| x.is_finite()));
    }
}

/// A scratch left by a longer context or a larger head changes nothing.
#[test]
fn scratch_reuse_changes_nothing() {
    let heads = Heads { num_heads: 2, num_kv_heads: 1, head_dim: 64, scale: 0.125, block_size: 16 };
    let (k, v) = pools(&heads, 12);
    let slots: Vec<u32> = (0..150).collect();
    let q: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).cos()).collect();
    let mut scratch = Scratch::default();
    let mut out = vec![0.0; 64];
    attend_head(&q, 0, &slots, 0, &k, &v, heads, &mut out, &mut scratch);
    let mut short = vec![0.0; 64];
    attend_head(&q, 1, &slots[..20], 0, &k, &v, heads, &mut short, &mut scratch);
    let mut fresh = vec![0.0; 64];
    attend_head(&q, 1, &slots[..20], 0, &k, &v, heads, &mut fresh, &mut Scratch::default());
    assert_eq!(short, fresh);
}

/// `exp` within 2 ulp of the true value over the range softmax weights take, exactly 1 at 0, 0 far below, and the
/// vector kernels give its bits.
#[test]
fn exp_is_accurate_and_the_same_in_every_kernel() {
    let xs: Vec<f32> = (0..200_000).map(|i| -87.0 + i as f32 * (87.0 + 10.0) / 200_000.0).collect();
    for &x in &xs {
        let (got, want) = (exp(x) as f64, (x as f64).exp());
        let ulp = (want as f32).to_bits().abs_diff(exp(x).to_bits());
        assert!(ulp <= 2, "exp({x}) = {got}, true {want}: {ulp} ulp");
    }
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-100.0), 0.0);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    for isa in isas() {
        for chunk in xs.chunks_exact(KEYS).step_by(7) {
            let mut group = chunk.to_vec();
            kernels::weights(isa, &mut group, 0.0, KEYS);
            for (&x, &y) in chunk.iter().zip(&group) {
                assert_eq!(exp(x).to_bits(), y.to_bits(), "{} exp({x})", isa.as_str());
            }
        }
    }
}
