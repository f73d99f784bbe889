//! The paged KV cache: per layer, one key pool and one value pool of `[num_blocks * block_size, kv_heads,
//! head_dim]` f32, addressed by the engine's slots (`block * block_size + offset`), as vLLM's `PagedAttention`
//! keeps it. The engine owns the bookkeeping (block tables, prefix sharing, preemption); this only stores.
//!
//! Costs per layer and step: writing the step's `T` new keys and values is one in-place `scatter_set` each
//! (`T * kv_heads * head_dim` elements); reading is one `index_select` per attention group of the slots its
//! sequences' block tables give, a copy of their whole context (paged attention without a fused kernel).

use candle_core::{DType, Device, Result, Tensor};
use nano_vllm_engine::KvCacheSpec;

/// Key and value pools of every layer.
#[derive(Debug)]
pub(crate) struct PagedKv {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    pub(crate) num_slots: usize,
    pub(crate) block_size: usize,
}

impl PagedKv {
    pub(crate) fn new(spec: &KvCacheSpec, num_layers: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let num_slots = spec.num_blocks * spec.block_size;
        let pool = || Tensor::zeros((num_slots, kv_heads, head_dim), DType::F32, &Device::Cpu);
        Ok(Self {
            keys: (0..num_layers).map(|_| pool()).collect::<Result<_>>()?,
            values: (0..num_layers).map(|_| pool()).collect::<Result<_>>()?,
            num_slots,
            block_size: spec.block_size,
        })
    }

    /// Stores `k` and `v` (`[tokens, kv_heads, head_dim]`) of `layer` at the slots in `index` (u32,
    /// `[tokens, kv_heads, head_dim]`, each row its token's slot repeated).
    pub(crate) fn write(&self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        self.keys[layer].scatter_set(index, &k.contiguous()?, 0)?;
        self.values[layer].scatter_set(index, &v.contiguous()?, 0)
    }

    /// Keys and values of `layer` at `slots` (u32, `[n]`): `[n, kv_heads, head_dim]` each.
    pub(crate) fn gather(&self, layer: usize, slots: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.keys[layer].index_select(slots, 0)?, self.values[layer].index_select(slots, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_slots_are_read_back_and_others_stay_zero() {
        let kv = PagedKv::new(&KvCacheSpec { num_blocks: 2, block_size: 2 }, 1, 1, 2).unwrap();
        let dev = Device::Cpu;
        let k = Tensor::new(&[[[1f32, 2.]], [[3., 4.]]], &dev).unwrap();
        let v = (&k * 10.0).unwrap();
        let index = Tensor::new(&[[[3u32, 3]], [[0, 0]]], &dev).unwrap();
        kv.write(0, &index, &k, &v).unwrap();
        let (k, v) = kv.gather(0, &Tensor::new(&[0u32, 1, 3], &dev).unwrap()).unwrap();
        assert_eq!(k.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [3., 4., 0., 0., 1., 2.]);
        assert_eq!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [30., 40., 0., 0., 10., 20.]);
    }
}
