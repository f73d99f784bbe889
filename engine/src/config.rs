//! Engine configuration, validated when built.
//!
//! Mirrors the knobs of vLLM's `SchedulerConfig`/`CacheConfig` and nano-vllm's `Config`: batch limits, the model
//! length, the paged KV cache's block size and size (a number of blocks, or a memory budget turned into blocks with
//! the runtime's bytes per token), EOS ids, prefix caching and chunked prefill.

use crate::error::ConfigError;

/// How large the paged KV cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// An explicit number of blocks.
    Blocks(usize),
    /// A memory budget in bytes; the number of blocks is `bytes / (block_size * kv_bytes_per_token)`, where the
    /// bytes per token come from the runtime (`Capabilities::kv_bytes_per_token`) when the engine is built.
    MemoryBytes(usize),
}

/// Validated engine configuration. Build it with [`Config::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) max_num_seqs: usize,
    pub(crate) max_num_batched_tokens: usize,
    pub(crate) max_model_len: usize,
    pub(crate) block_size: usize,
    pub(crate) kv_cache_size: KvCacheSize,
    pub(crate) eos_token_ids: Vec<u32>,
    pub(crate) enable_prefix_caching: bool,
    pub(crate) enable_chunked_prefill: bool,
}

impl Config {
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
    /// Most sequences in one step (and in the running set).
    pub fn max_num_seqs(&self) -> usize {
        self.max_num_seqs
    }
    /// Most tokens processed in one step, prefill and decode together.
    pub fn max_num_batched_tokens(&self) -> usize {
        self.max_num_batched_tokens
    }
    /// Most tokens (prompt + output) of one sequence.
    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn kv_cache_size(&self) -> KvCacheSize {
        self.kv_cache_size
    }
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
    pub fn enable_prefix_caching(&self) -> bool {
        self.enable_prefix_caching
    }
    pub fn enable_chunked_prefill(&self) -> bool {
        self.enable_chunked_prefill
    }

    /// The number of KV blocks, given the runtime's KV bytes per token (needed only for a memory budget).
    pub fn resolve_num_blocks(&self, kv_bytes_per_token: Option<usize>) -> Result<usize, ConfigError> {
        let blocks = match self.kv_cache_size {
            KvCacheSize::Blocks(n) => n,
            KvCacheSize::MemoryBytes(bytes) => {
                let per_token = kv_bytes_per_token.filter(|&b| b > 0).ok_or(ConfigError::MemoryBudgetUnsupported)?;
                bytes / (per_token * self.block_size)
            }
        };
        let capacity = blocks * self.block_size;
        if capacity < self.max_model_len {
            return Err(ConfigError::KvCacheTooSmall {
                num_blocks: blocks,
                block_size: self.block_size,
                capacity,
                max_model_len: self.max_model_len,
            });
        }
        Ok(blocks)
    }
}

/// Builder for [`Config`]; [`ConfigBuilder::build`] validates the combination.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        // nano-vllm's defaults, scaled to a CPU: 16-token blocks, chunked prefill and prefix caching on.
        Self {
            config: Config {
                max_num_seqs: 64,
                max_num_batched_tokens: 2048,
                max_model_len: 2048,
                block_size: 16,
                kv_cache_size: KvCacheSize::Blocks(1024),
                eos_token_ids: Vec::new(),
                enable_prefix_caching: true,
                enable_chunked_prefill: true,
            },
        }
    }
}

impl ConfigBuilder {
    pub fn max_num_seqs(mut self, n: usize) -> Self {
        self.config.max_num_seqs = n;
        self
    }
    pub fn max_num_batched_tokens(mut self, n: usize) -> Self {
        self.config.max_num_batched_tokens = n;
        self
    }
    pub fn max_model_len(mut self, n: usize) -> Self {
        self.config.max_model_len = n;
        self
    }
    pub fn block_size(mut self, n: usize) -> Self {
        self.config.block_size = n;
        self
    }
    pub fn num_kv_blocks(mut self, n: usize) -> Self {
        self.config.kv_cache_size = KvCacheSize::Blocks(n);
        self
    }
    pub fn kv_cache_bytes(mut self, bytes: usize) -> Self {
        self.config.kv_cache_size = KvCacheSize::MemoryBytes(bytes);
        self
    }
    pub fn eos_token_ids(mut self, ids: impl Into<Vec<u32>>) -> Self {
        self.config.eos_token_ids = ids.into();
        self
    }
    pub fn enable_prefix_caching(mut self, on: bool) -> Self {
        self.config.enable_prefix_caching = on;
        self
    }
    pub fn enable_chunked_prefill(mut self, on: bool) -> Self {
        self.config.enable_chunked_prefill = on;
        self
    }

    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        for (field, value) in [
            ("max_num_seqs", c.max_num_seqs),
            ("max_num_batched_tokens", c.max_num_batched_tokens),
            ("max_model_len", c.max_model_len),
            ("block_size", c.block_size),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        match c.kv_cache_size {
            KvCacheSize::Blocks(0) => {
                return Err(ConfigError::Zero { field: "num_kv_blocks" });
            }
            KvCacheSize::MemoryBytes(0) => {
                return Err(ConfigError::Zero { field: "kv_cache_bytes" });
            }
            KvCacheSize::Blocks(n) if n >= u32::MAX as usize => {
                return Err(ConfigError::TooManyBlocks { num_blocks: n });
            }
            _ => {}
        }
        if c.max_model_len > u32::MAX as usize / 2 {
            return Err(ConfigError::ModelLenTooLarge { max_model_len: c.max_model_len });
        }
        // Without chunked prefill a prompt is scheduled whole, so the step budget must hold the longest one.
        if !c.enable_chunked_prefill && c.max_num_batched_tokens < c.max_model_len {
            return Err(ConfigError::BudgetBelowModelLen {
                max_num_batched_tokens: c.max_num_batched_tokens,
                max_model_len: c.max_model_len,
            });
        }
        if let KvCacheSize::Blocks(n) = c.kv_cache_size {
            let capacity = n * c.block_size;
            if capacity < c.max_model_len {
                return Err(ConfigError::KvCacheTooSmall {
                    num_blocks: n,
                    block_size: c.block_size,
                    capacity,
                    max_model_len: c.max_model_len,
                });
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.block_size(), 16);
        assert_eq!(c.resolve_num_blocks(None).unwrap(), 1024);
    }

    #[test]
    fn zero_fields_are_named() {
        let err = Config::builder().block_size(0).build().unwrap_err();
        assert_eq!(err, ConfigError::Zero { field: "block_size" });
        assert!(err.to_string().contains("block_size"));
        let err = Config::builder().num_kv_blocks(0).build().unwrap_err();
        assert!(err.to_string().contains("num_kv_blocks"), "{err}");
    }

    #[test]
    fn budget_below_model_len_without_chunking_is_rejected() {
        let err = Config::builder()
            .enable_chunked_prefill(false)
            .max_num_batched_tokens(512)
            .max_model_len(1024)
            .build()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_num_batched_tokens (512)") && msg.contains("max_model_len (1024)"), "{msg}");
        // With chunked prefill the same budget is fine.
        Config::builder().max_num_batched_tokens(512).max_model_len(1024).build().unwrap();
    }

    #[test]
    fn kv_cache_must_hold_one_full_sequence() {
        let err = Config::builder().num_kv_blocks(3).block_size(16).max_model_len(64).build().unwrap_err();
        assert!(err.to_string().contains("48 tokens"), "{err}");
    }

    #[test]
    fn memory_budget_resolves_with_bytes_per_token() {
        let c = Config::builder().kv_cache_bytes(1 << 20).block_size(16).max_model_len(256).build().unwrap();
        assert_eq!(c.resolve_num_blocks(None), Err(ConfigError::MemoryBudgetUnsupported));
        // 1 MiB / (16 tokens * 1024 B) = 64 blocks = 1024 tokens.
        assert_eq!(c.resolve_num_blocks(Some(1024)).unwrap(), 64);
        // 1 MiB / (16 * 8192) = 8 blocks = 128 tokens < 256.
        assert!(matches!(c.resolve_num_blocks(Some(8192)), Err(ConfigError::KvCacheTooSmall { .. })));
    }
}
