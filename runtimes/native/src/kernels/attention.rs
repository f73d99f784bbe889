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
/// token's heads share them.
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
    oh.fill(0.0);
    for (&p, &s) in scores.iter().zip(slots) {
        let base = (s as usize * num_kv_heads + g) * d;
        for (o, &v) in oh.iter_mut().zip(&v_pool[base..base + d]) {
            *o += p * v;
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
}
