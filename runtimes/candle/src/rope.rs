//! Rotary position embedding in the Hugging Face layout (each head's first half rotated against its second half,
//! `x * cos + rotate_half(x) * sin`), with the inverse frequencies `HfConfig::rope_inv_freq` gives (Llama-3
//! scaling included).
//!
//! The tables are computed as transformers computes them: the inverse frequencies rounded to f32, the angle
//! `position * inv_freq` multiplied in f32, then its cosine and sine rounded to f32.

use candle_core::{Device, Result, Tensor};

/// cos and sin tables, `[positions, head_dim / 2]` for the first `min(context, TABLE_POSITIONS)` positions.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv: Vec<f32>,
    /// Positions held in the tables.
    positions: usize,
    cos: Tensor,
    sin: Tensor,
}

/// The cos and sin rows of one step's positions, `[tokens, head_dim / 2]`.
#[derive(Debug, Clone)]
pub(crate) struct RopeRows {
    cos: Tensor,
    sin: Tensor,
}

/// Most positions tabled (a model's context can be millions of positions, or 10^15 in a broken config); a step with a
/// later position computes its rows with the same arithmetic.
pub(crate) const TABLE_POSITIONS: usize = 1 << 16;

impl Rope {
    pub(crate) fn new(inv_freq: &[f64], max_positions: usize) -> Result<Self> {
        let positions = max_positions.min(TABLE_POSITIONS);
        let half = inv_freq.len();
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let (cos, sin) = angles(&inv, 0..positions as u32);
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (positions, half), &Device::Cpu)?,
            inv,
            positions,
        })
    }

    /// The rows of `positions` (u32, `[tokens]`): from the tables, or computed when one is past them.
    pub(crate) fn rows(&self, positions: &Tensor) -> Result<RopeRows> {
        let ps: Vec<u32> = positions.to_vec1()?;
        if ps.iter().all(|&p| (p as usize) < self.positions) {
            return Ok(RopeRows {
                cos: self.cos.index_select(positions, 0)?,
                sin: self.sin.index_select(positions, 0)?,
            });
        }
        let (cos, sin) = angles(&self.inv, ps.iter().copied());
        let shape = (ps.len(), self.inv.len());
        Ok(RopeRows {
            cos: Tensor::from_vec(cos, shape, &Device::Cpu)?,
            sin: Tensor::from_vec(sin, shape, &Device::Cpu)?,
        })
    }
}

/// cos and sin of `position * inv_freq` for each position, row after row: an f32 angle, as transformers computes it.
fn angles(inv: &[f32], positions: impl Iterator<Item = u32>) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in positions {
        for &f in inv {
            let angle = p as f32 * f;
            cos.push((angle as f64).cos() as f32);
            sin.push((angle as f64).sin() as f32);
        }
    }
    (cos, sin)
}

impl RopeRows {
    /// Rotates `x`, `[tokens, heads, head_dim]`.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?.contiguous()?;
        candle_nn::rotary_emb::rope_thd(&x, &self.cos, &self.sin)?.squeeze(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_halves_by_position_times_frequency() {
        // head_dim 4: frequencies 1 and 0.5; one head at position 2.
        let rope = Rope::new(&[1.0, 0.5], 4).unwrap();
        let rows = rope.rows(&Tensor::new(&[2u32], &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &Device::Cpu).unwrap();
        let y = rows.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (c0, s0, c1, s1) = (2f32.cos(), 2f32.sin(), 1f32.cos(), 1f32.sin());
        // Pairs are (x[0], x[2]) at angle 2 and (x[1], x[3]) at angle 1.
        let expected = [1. * c0 - 3. * s0, 2. * c1 - 4. * s1, 3. * c0 + 1. * s0, 4. * c1 + 2. * s1];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {expected:?}");
        }
    }

    #[test]
    fn positions_past_the_table_are_computed_alike() {
        let (full, short) = (Rope::new(&[1.0, 0.5], 8).unwrap(), Rope::new(&[1.0, 0.5], 3).unwrap());
        let positions = Tensor::new(&[1u32, 6, 7], &Device::Cpu).unwrap();
        let (a, b) = (full.rows(&positions).unwrap(), short.rows(&positions).unwrap());
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((v(&a.cos), v(&a.sin)), (v(&b.cos), v(&b.sin)));
        assert_eq!(Rope::new(&[1.0], 1 << 40).unwrap().positions, TABLE_POSITIONS);
    }
}
