//! `NullRuntime`: a runtime that computes nothing, one logit per row, so what a step costs with it is the engine's
//! own cost (scheduling, packing the batch, sampling, postprocessing). For benchmarks of the engine.

use crate::batch::{StepBatch, StepOutput};
use crate::error::RuntimeError;
use crate::runtime::{Capabilities, KvCacheKind, PrefixReuse, Runtime, RuntimeInfo};

/// Does nothing; engine-paged, so prefix hits are served and nothing is copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullRuntime;

impl Runtime for NullRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo { name: "null".into(), device: "none".into(), dtype: "none".into(), ..RuntimeInfo::default() }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kv_cache: KvCacheKind::EnginePaged,
            prefix_reuse: PrefixReuse::SharedBlocks,
            ..Capabilities::default()
        }
    }

    fn execute(&mut self, batch: &StepBatch) -> Result<StepOutput, RuntimeError> {
        Ok(StepOutput { vocab_size: 1, logits: vec![0.0; batch.num_logit_rows()] })
    }
}
