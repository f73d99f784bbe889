//! Paged attention for one query token: the keys and values of its context are read from the layer's KV pool at
//! the slots the engine's block table gives (`block * block_size + offset`), so shared prefix blocks, preemption and
//! recompute all go through the engine's bookkeeping. Pool layout per layer: `[slot][kv_head][head_dim]`.

/// Head geometry of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Dot product with eight independent partial sums, so the compiler can use vector lanes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `oh = softmax(qh . K / sqrt(d)) V` for query head `h` over the context `slots` (in position order), reading the
/// key/value head `h` shares (GQA). One head is the unit the runtime spreads over its threads, so that a decode
/// token's heads share them. Compiled for AVX2 where the CPU has it (detected once): the same operations in the same
/// order (eight-lane dot products, each output element summed over the slots in order, no fused multiply-add), so
/// the result is bit-identical to the portable build's, only wider.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    qh: &[f32],
    h: usize,
    slots: &[u32],
    k_pool: &[f32],
    v_pool: &[f32],
    heads: Heads,
    oh: &mut [f32],
    scores: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::isa::Isa::detect().has_avx2() {
        // SAFETY: the CPU has AVX2 (an `Isa` names it only after checking).
        return unsafe { attend_head_avx2(qh, h, slots, k_pool, v_pool, heads, oh, scores) };
    }
    attend_head_portable(qh, h, slots, k_pool, v_pool, heads, oh, scores)
}

/// [`attend_head`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_head_avx2(
    qh: &[f32],
    h: usize,
    slots: &[u32],
    k_pool: &[f32],
    v_pool: &[f32],
    heads: Heads,
    oh: &mut [f32],
    scores: &mut Vec<f32>,
) {
    attend_head_portable(qh, h, slots, k_pool, v_pool, heads, oh, scores)
}

/// Output elements a pass over the values keeps in registers.
const CHUNK: usize = 32;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_head_portable(
    qh: &[f32],
    h: usize,
    slots: &[u32],
    k_pool: &[f32],
    v_pool: &[f32],
    heads: Heads,
    oh: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let Heads { num_heads, num_kv_heads, head_dim: d, scale } = heads;
    let g = h / (num_heads / num_kv_heads);
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for &s in slots {
        let base = (s as usize * num_kv_heads + g) * d;
        let x = dot(qh, &k_pool[base..base + d]) * scale;
        max = max.max(x);
        scores.push(x);
    }
    let mut sum = 0.0f32;
    for x in scores.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    // Each output element is the sum over the slots in order, from 0; `CHUNK` elements at a time, held in
    // registers across the slots instead of read and written back per slot.
    let mut c0 = 0;
    while c0 + CHUNK <= d {
        let mut acc = [0.0f32; CHUNK];
        for (&p, &s) in scores.iter().zip(slots) {
            let base = (s as usize * num_kv_heads + g) * d + c0;
            let v: &[f32; CHUNK] = v_pool[base..base + CHUNK].try_into().expect("CHUNK values");
            for j in 0..CHUNK {
                acc[j] += p * v[j];
            }
        }
        oh[c0..c0 + CHUNK].copy_from_slice(&acc);
        c0 += CHUNK;
    }
    if c0 < d {
        oh[c0..d].fill(0.0);
        for (&p, &s) in scores.iter().zip(slots) {
            let base = (s as usize * num_kv_heads + g) * d;
            for (o, &v) in oh[c0..d].iter_mut().zip(&v_pool[base + c0..base + d]) {
                *o += p * v;
            }
        }
    }
    let inv = 1.0 / sum;
    for o in oh.iter_mut() {
        *o *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attends_through_slots_with_gqa() {
        // 2 query heads sharing 1 kv head of dim 2; context = slots 3 and 1 (positions 0, 1).
        let heads = Heads { num_heads: 2, num_kv_heads: 1, head_dim: 2, scale: 1.0 };
        let mut k = vec![0.0; 8];
        let mut v = vec![0.0; 8];
        k[6..8].copy_from_slice(&[1.0, 0.0]); // slot 3
        k[2..4].copy_from_slice(&[0.0, 1.0]); // slot 1
        v[6..8].copy_from_slice(&[10.0, 0.0]);
        v[2..4].copy_from_slice(&[0.0, 10.0]);
        let q = [2.0f32.ln(), 0.0, 0.0, 0.0];
        let mut out = [0.0; 4];
        for (h, oh) in out.chunks_exact_mut(2).enumerate() {
            attend_head(&q[2 * h..2 * h + 2], h, &[3, 1], &k, &v, heads, oh, &mut Vec::new());
        }
        // Head 0: scores (ln 2, 0) -> weights (2/3, 1/3). Head 1: equal weights.
        assert!((out[0] - 20.0 / 3.0).abs() < 1e-5 && (out[1] - 10.0 / 3.0).abs() < 1e-5);
        assert!((out[2] - 5.0).abs() < 1e-5 && (out[3] - 5.0).abs() < 1e-5);
    }

    /// The AVX2 build computes the portable build's operations in the same order: equal to the bit, on a head of
    /// whole register chunks plus a remainder, over a context of scattered slots.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_attention_are_bit_identical() {
        let avx2 = crate::kernels::isa::Isa::avx2();
        assert!(avx2.is_some(), "this test checks the AVX2 build, and this CPU lacks AVX2, FMA or F16C");
        let heads = Heads { num_heads: 4, num_kv_heads: 2, head_dim: CHUNK * 2 + 8, scale: 0.125 };
        let d = heads.head_dim;
        let slots: Vec<u32> = (0..50u32).map(|i| (i * 37) % 64).collect();
        let value = |i: usize| ((i * 2_654_435_761) % 10_007) as f32 / 5_003.0 - 1.0;
        let k: Vec<f32> = (0..64 * 2 * d).map(value).collect();
        let v: Vec<f32> = (0..64 * 2 * d).map(|i| value(i + 17)).collect();
        let q: Vec<f32> = (0..4 * d).map(|i| value(i + 91)).collect();
        for h in 0..4 {
            let (mut a, mut b) = (vec![0.0; d], vec![0.0; d]);
            let qh = &q[h * d..(h + 1) * d];
            attend_head_portable(qh, h, &slots, &k, &v, heads, &mut a, &mut Vec::new());
            // SAFETY: the CPU has AVX2 (asserted above).
            unsafe { attend_head_avx2(qh, h, &slots, &k, &v, heads, &mut b, &mut Vec::new()) };
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            assert!(a.iter().any(|&x| x != 0.0));
        }
    }
}
