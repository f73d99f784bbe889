//! A loaded GGUF model and the one llama.cpp context a runtime decodes with, owned together.
//!
//! llama-cpp-2 ties a `LlamaContext<'a>` to the `&'a LlamaModel` it was made from, which a struct owning both cannot
//! express. That lifetime is only a marker (`PhantomData<&'a LlamaModel>`): the C context points to the C model,
//! which `LlamaModel` frees on drop, and no Rust reference into the `LlamaModel` value is kept. So [`Session`] keeps
//! the context with its lifetime erased, declared before the model so that it is dropped first, and never hands out
//! the model mutably or by value.

use std::ffi::{CStr, c_char};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_sys_2::{LLAMA_FLASH_ATTN_TYPE_DISABLED, LLAMA_FLASH_ATTN_TYPE_ENABLED};

use crate::backend::backend;
use crate::error::LoadError;
use crate::gguf::check_header;
use crate::log;
use crate::options::LlamaCppOptions;

/// A model and its context. Field order matters: `ctx` is dropped before `model`.
pub struct Session {
    ctx: LlamaContext<'static>,
    model: LlamaModel,
    path: PathBuf,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("path", &self.path).field("n_ctx", &self.ctx.n_ctx()).finish()
    }
}

impl Session {
    /// Loads the GGUF at `path` and creates a context with `options` (non-unified KV cache, `n_ctx` = cells per
    /// sequence x `n_seq_max`).
    pub fn load(path: &Path, options: &LlamaCppOptions) -> Result<Self, LoadError> {
        check_options(options)?;
        check_header(path)?;
        let backend = backend()?;
        log::clear();
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| {
            let mut llama_log = log::take();
            if llama_log.is_empty() {
                llama_log.push(e.to_string());
            }
            LoadError::Model { path: path.to_path_buf(), llama_log }
        })?;
        let per_seq = options.ctx_per_seq.unwrap_or(model.n_ctx_train() as usize);
        let n_ctx = per_seq.checked_mul(options.n_seq_max).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            LoadError::Options(format!("n_ctx = {per_seq} cells x {} sequences overflows", options.n_seq_max))
        })?;
        let threads = i32::try_from(options.resolved_threads()).unwrap_or(i32::MAX);
        let flash =
            if options.flash_attention { LLAMA_FLASH_ATTN_TYPE_ENABLED } else { LLAMA_FLASH_ATTN_TYPE_DISABLED };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(options.n_batch as u32)
            .with_n_ubatch(options.n_ubatch() as u32)
            .with_n_seq_max(options.n_seq_max as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_type_k(options.kv_type.ggml())
            .with_type_v(options.kv_type.ggml())
            .with_flash_attention_policy(flash)
            .with_kv_unified(false);
        log::clear();
        let ctx = model.new_context(backend, params).map_err(|_| LoadError::Context {
            path: path.to_path_buf(),
            n_ctx,
            n_seq_max: options.n_seq_max as u32,
            llama_log: log::take(),
        })?;
        // SAFETY: see the module docs: the lifetime is a marker; `Session` drops `ctx` before `model` and never moves
        // the C model (only the `LlamaModel` handle moves, into the struct below).
        let ctx = unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(ctx) };
        Ok(Self { ctx, model, path: path.to_path_buf() })
    }

    pub fn ctx(&self) -> &LlamaContext<'static> {
        &self.ctx
    }

    pub fn ctx_mut(&mut self) -> &mut LlamaContext<'static> {
        &mut self.ctx
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A string metadata value of the GGUF, if present.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }
}

fn check_options(o: &LlamaCppOptions) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::Options(m));
    if o.n_seq_max == 0 || o.n_seq_max > 256 {
        return bad(format!("n_seq_max must be in 1..=256 (llama.cpp's LLAMA_MAX_SEQ), got {}", o.n_seq_max));
    }
    if o.n_batch == 0 || o.n_batch > i32::MAX as usize {
        return bad(format!("n_batch must be in 1..=i32::MAX, got {}", o.n_batch));
    }
    if o.ctx_per_seq == Some(0) {
        return bad("ctx_per_seq must be at least 1".into());
    }
    Ok(())
}

/// llama.cpp's version string (`llama_version()`), or `unknown`.
pub fn llama_cpp_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string (or null).
    c_string(unsafe { llama_cpp_sys_2::llama_version() }).unwrap_or_else(|| "unknown".into())
}

/// The CPU features llama.cpp was built with and detected (`llama_print_system_info()`), one line. Read once:
/// llama.cpp builds it in a static buffer, which concurrent calls would race on.
pub fn system_info() -> &'static str {
    static INFO: OnceLock<String> = OnceLock::new();
    INFO.get_or_init(|| {
        // SAFETY: returns a pointer to a static NUL-terminated buffer (or null); only called once.
        c_string(unsafe { llama_cpp_sys_2::llama_print_system_info() })
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

fn c_string(p: *const c_char) -> Option<String> {
    // SAFETY: callers pass a pointer llama.cpp documents as a NUL-terminated string; null is checked.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}
