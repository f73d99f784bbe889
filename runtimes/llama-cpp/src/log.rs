//! llama.cpp's log, captured so that errors can say what llama.cpp said.
//!
//! llama.cpp reports why it failed (a missing tensor, a bad batch) only in its log and then returns null or an error
//! code. [`install`] routes its log to a callback that keeps the warnings and errors of the calling thread (loading
//! and decoding log on the thread that called them); [`clear`] before an operation and [`take`] after a failure
//! attach those lines to the error. Everything else is dropped, unless `NANO_VLLM_LLAMA_LOG` is set (non-empty), which
//! echoes every line to stderr.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_sys_2::{GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_WARN, ggml_log_level};

/// Set (non-empty) to echo llama.cpp's whole log to stderr.
pub const LOG_ENV: &str = "NANO_VLLM_LLAMA_LOG";

/// Lines kept per thread.
const KEEP: usize = 16;

static ECHO: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Captured {
    lines: Vec<String>,
    /// Whether the last message was kept (a `CONT` message continues it).
    keeping: bool,
}

thread_local! {
    static CAPTURED: RefCell<Captured> = RefCell::new(Captured::default());
}

/// Routes llama.cpp's (and ggml's) log to the capture. Called once, by [`crate::backend::backend`].
pub(crate) fn install() {
    ECHO.store(std::env::var_os(LOG_ENV).is_some_and(|v| !v.is_empty()), Ordering::Relaxed);
    // SAFETY: `on_log` is a valid callback for the whole process (a plain function) and ignores the user data.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

/// Forgets this thread's captured lines.
pub(crate) fn clear() {
    let _ = CAPTURED.try_with(|c| c.try_borrow_mut().map(|mut c| c.lines.clear()));
}

/// This thread's captured warnings and errors since the last [`clear`] or [`take`].
pub(crate) fn take() -> Vec<String> {
    CAPTURED
        .try_with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut c.lines)).unwrap_or_default())
        .unwrap_or_default()
}

unsafe extern "C" fn on_log(level: ggml_log_level, text: *const c_char, _user_data: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if ECHO.load(Ordering::Relaxed) {
        eprint!("{text}");
    }
    // Never panic across the FFI boundary: a thread being torn down, or a re-entrant call, just drops the line.
    let _ = CAPTURED.try_with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return };
        let keep = if level == GGML_LOG_LEVEL_CONT { c.keeping } else { level >= GGML_LOG_LEVEL_WARN };
        c.keeping = keep;
        if !keep {
            return;
        }
        let text = text.trim_end();
        match (level == GGML_LOG_LEVEL_CONT, c.lines.last_mut()) {
            (true, Some(last)) => last.push_str(text),
            _ if !text.is_empty() => {
                if c.lines.len() == KEEP {
                    c.lines.remove(0);
                }
                c.lines.push(text.to_string());
            }
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: ggml_log_level, text: &str) {
        let text = std::ffi::CString::new(text).unwrap();
        // SAFETY: a valid NUL-terminated string.
        unsafe { on_log(level, text.as_ptr(), std::ptr::null_mut()) };
    }

    #[test]
    fn keeps_warnings_and_errors_of_this_thread_only() {
        use llama_cpp_sys_2::{GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_INFO};
        clear();
        log(GGML_LOG_LEVEL_INFO, "loading\n");
        log(GGML_LOG_LEVEL_CONT, ".");
        log(GGML_LOG_LEVEL_ERROR, "llama_model_load: error loading model: tensor 'x' not found\n");
        log(GGML_LOG_LEVEL_WARN, "n_ctx is not divisible");
        log(GGML_LOG_LEVEL_CONT, " - rounding down\n");
        std::thread::spawn(|| log(GGML_LOG_LEVEL_ERROR, "another thread")).join().unwrap();
        assert_eq!(
            take(),
            ["llama_model_load: error loading model: tensor 'x' not found", "n_ctx is not divisible - rounding down"]
        );
        assert!(take().is_empty());
        for i in 0..KEEP + 3 {
            log(GGML_LOG_LEVEL_ERROR, &format!("e{i}"));
        }
        let kept = take();
        assert_eq!((kept.len(), kept[0].as_str()), (KEEP, "e3"));
    }
}
