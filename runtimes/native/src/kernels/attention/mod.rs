//! Paged attention for one query token: the keys and values of its context are read from the layer's KV pool at
//! the slots the engine's block table gives (`block * block_size + offset`), so shared prefix blocks, preemption and
//! recompute all go through the engine's bookkeeping.
//!
//! Pool layout per layer: values `[slot][kv_head][head_dim]`; keys by block, transposed (`[block][kv_head][head_dim]
//! [block_size]`, [`key_index`]): for each dimension the keys of a block's slots sit side by side, so the scores of
//! [`KEYS`] context positions are one vector of fused multiply-add chains over the dimensions, not one horizontal sum
//! each.
//!
//! The arithmetic is fixed, so the result does not depend on the kernel (AVX-512, AVX2 or portable), on the thread,
//! or on which other tokens share the step:
//! - the score of position `j` is `scale * chain_d fma(q[d], k_j[d], acc)` from 0, dimensions in order;
//! - `p_j = exp(s_j - max)` by [`exp`] (the same operations in every kernel), 0 past the context's end;
//! - their sum: 16 partial sums (position `j` into `j % 16`, positions in order), then a fixed tree;
//! - each output element is `chain_j fma(p_j, v_j[d], acc)` from 0, positions in order, times `1 / sum`.

/// Head geometry of one attention layer, and the pool's block size.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub block_size: usize,
}

/// Context positions scored together: the lanes of one score vector (two with AVX2).
pub const KEYS: usize = 16;

/// Groups of [`KEYS`] positions scored at once: independent chains that hide the FMA latency (AVX2 scores four at a
/// time).
const GROUPS: usize = 8;

/// Where element `dim` of the key of `slot`, kv head `g`, lives in a layer's key pool.
#[inline]
pub fn key_index(heads: &Heads, slot: usize, g: usize, dim: usize) -> usize {
    let bs = heads.block_size;
    ((slot / bs * heads.num_kv_heads + g) * heads.head_dim + dim) * bs + slot % bs
}

/// A worker's buffers: the scores of one head, and keys gathered where a group's slots are not side by side.
#[derive(Debug, Default)]
pub struct Scratch {
    scores: Vec<f32>,
    gathered: Vec<f32>,
}

/// `oh = softmax(qh . K * scale) V` for query head `h` over the context `slots[skip..]` (in position order), reading
/// the key/value head `h` shares (GQA). The first `skip` slots (fewer than [`KEYS`]) are positions before a sliding
/// window, read only so that groups of keys start on a multiple of [`KEYS`] positions (the blocks' boundaries) and
/// weighing 0. One head is the unit the runtime spreads over its threads, so that a decode token's heads share them.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    qh: &[f32],
    h: usize,
    slots: &[u32],
    skip: usize,
    k_pool: &[f32],
    v_pool: &[f32],
    heads: Heads,
    oh: &mut [f32],
    scratch: &mut Scratch,
) {
    attend_head_on(super::isa::Isa::detect(), qh, h, slots, skip, k_pool, v_pool, heads, oh, scratch)
}

/// [`attend_head`] on `isa`'s kernels.
#[allow(clippy::too_many_arguments)]
fn attend_head_on(
    isa: super::isa::Isa,
    qh: &[f32],
    h: usize,
    slots: &[u32],
    skip: usize,
    k_pool: &[f32],
    v_pool: &[f32],
    heads: Heads,
    oh: &mut [f32],
    scratch: &mut Scratch,
) {
    let Heads { num_heads, num_kv_heads, head_dim: d, scale, block_size: bs } = heads;
    assert!(qh.len() == d && oh.len() == d && num_kv_heads > 0 && bs > 0, "attend_head: operands do not match");
    let g = h / (num_heads / num_kv_heads);
    let n = slots.len();
    assert!(skip < KEYS && skip <= n, "attend_head: {skip} positions to skip of {n}");
    if n == skip {
        return oh.fill(0.0);
    }
    let groups = n.div_ceil(KEYS);
    let Scratch { scores, gathered } = scratch;
    scores.clear();
    scores.resize(groups * KEYS, 0.0);
    gathered.resize(GROUPS * d * KEYS, 0.0);

    // Scores, GROUPS groups of KEYS positions at a time. A group whose slots are one block's, side by side, is read
    // in place (its lanes at stride block_size; a short last group's lanes past the context read the block's other
    // slots, and weigh 0); any other (a window that does not start on a block, a block size that is not a multiple
    // of KEYS) is gathered first.
    for g0 in (0..groups).step_by(GROUPS) {
        let gn = GROUPS.min(groups - g0);
        let mut src = [(0usize, 0usize, false); GROUPS];
        for (i, s) in src.iter_mut().enumerate().take(gn) {
            let p0 = (g0 + i) * KEYS;
            let m = KEYS.min(n - p0);
            let first = slots[p0] as usize;
            let in_place = (first % bs) + KEYS <= bs && slots[p0 + m - 1] as usize == first + m - 1;
            if in_place {
                *s = (key_index(&heads, first, g, 0), bs, false);
            } else {
                let buf = &mut gathered[i * d * KEYS..(i + 1) * d * KEYS];
                buf.fill(0.0);
                for (l, &slot) in slots[p0..p0 + m].iter().enumerate() {
                    let base = key_index(&heads, slot as usize, g, 0);
                    for dim in 0..d {
                        buf[dim * KEYS + l] = k_pool[base + dim * bs];
                    }
                }
                *s = (i * d * KEYS, KEYS, true);
            }
        }
        // The furthest element each group reads, checked before the kernels read without bounds checks.
        for &(start, stride, from_buf) in &src[..gn] {
            let len = if from_buf { gathered.len() } else { k_pool.len() };
            assert!(start + (d - 1) * stride + KEYS <= len, "attend_head: a key group outside its pool");
        }
        let out = &mut scores[g0 * KEYS..(g0 + gn) * KEYS];
        let ptrs: [*const f32; GROUPS] = std::array::from_fn(|i| {
            let (start, _, from_buf) = src[i.min(gn - 1)];
            if from_buf { gathered[start..].as_ptr() } else { k_pool[start..].as_ptr() }
        });
        let strides: [usize; GROUPS] = std::array::from_fn(|i| src[i.min(gn - 1)].1);
        // SAFETY: every group's extent was asserted above; `out` holds gn * KEYS scores.
        unsafe { kernels::scores(isa, qh, ptrs, strides, gn, out) };
        out.iter_mut().for_each(|s| *s *= scale);
    }

    // Softmax weights: positions before the window and past the context's end weigh 0. The maximum by lanes (exact
    // in any order).
    let mut lanes = [f32::NEG_INFINITY; KEYS];
    for (gi, group) in scores.chunks_exact(KEYS).enumerate() {
        for (m, &s) in lanes.iter_mut().zip(group).take(n - gi * KEYS).skip(if gi == 0 { skip } else { 0 }) {
            *m = m.max(s);
        }
    }
    let max = lanes.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut partial = [0.0f32; KEYS];
    for (gi, group) in scores.chunks_exact_mut(KEYS).enumerate() {
        kernels::weights(isa, group, max, n - gi * KEYS);
        if gi == 0 {
            group[..skip].fill(0.0);
        }
        for (s, &p) in partial.iter_mut().zip(group.iter()) {
            *s += p;
        }
    }
    let sum = tree_sum(partial);

    let (p, slots) = (&scores[skip..n], &slots[skip..]);
    let last = slots.iter().max().map_or(0, |&s| (s as usize * num_kv_heads + g) * d + d);
    assert!(last <= v_pool.len(), "attend_head: a value row outside its pool");
    // SAFETY: every row `(slot * num_kv_heads + g) * d ..+ d` is inside v_pool (asserted above).
    unsafe { kernels::weighted_values(isa, p, slots, v_pool, num_kv_heads * d, g * d, oh) };
    let inv = 1.0 / sum;
    for o in oh.iter_mut() {
        *o *= inv;
    }
}

/// `((s0 + s8) + (s4 + s12)) + ((s2 + s10) + (s6 + s14))` and so on: halves added lane by lane, 16 to 1.
fn tree_sum(mut s: [f32; KEYS]) -> f32 {
    let mut w = KEYS;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            s[i] += s[i + w];
        }
    }
    s[0]
}

/// `e^x` by the operations every kernel uses (Cephes' `expf`: `x = n ln 2 + r`, a degree-5 polynomial in `r`, the
/// exponent put in by bits), within 2 ulp for `x` in [-87, 88]; 0 below about -87.3, so weights of far smaller
/// scores vanish.
#[inline]
pub fn exp(x: f32) -> f32 {
    use exp_consts::*;
    let x = if x < LO { LO } else { x };
    let x = if x > HI { HI } else { x };
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P0;
    for c in [P1, P2, P3, P4, P5] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

mod exp_consts {
    pub const LO: f32 = -88.0;
    pub const HI: f32 = 88.0;
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const P0: f32 = 1.987_569_1e-4;
    pub const P1: f32 = 1.398_199_9e-3;
    pub const P2: f32 = 8.333_452e-3;
    pub const P3: f32 = 4.166_579_6e-2;
    pub const P4: f32 = 1.666_666_5e-1;
    pub const P5: f32 = 0.5;
}

mod kernels;

#[cfg(test)]
mod tests;
