//! The C ABI: every `extern "C"` function of the library, and nothing else.
//!
//! A thin boundary: each function checks its pointers with the helpers of
//! `args` (one family of checks, one shape of message), turns them into
//! Rust references and values, calls the registry (or the cache) inside
//! `call`, and turns an error into `false` plus the thread's last error.
//! The semantics live in `registry` and `cache`, never here.
//!
//! Its files are on the map, docs/ARCHITECTURE.md ("Modules").

// In the header's order: cbindgen reads the modules in the order they are
// declared here (kept apart, so that rustfmt does not sort them).

// 1. The slot functions: acquire, release, errors, stats.
mod slots;

// 2. The per-inference calls.
mod per_inference;

// 3. The packed-weights cache.
mod cache;

/// The LOADING value, as C sees it (defined with the slot's states).
pub use crate::registry::OM_CONSTANTS_LOADING;

mod args;

pub use cache::*;
pub use per_inference::*;
pub use slots::*;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{self, Error, ErrorKind, Result};
use crate::global::global;
use crate::log::{self, Level};

/// Runs `f` for an ABI call: clears the last error, catches panics, and
/// reports any error; returns `fallback` on failure.
pub(crate) fn call<T>(fallback: T, f: impl FnOnce() -> Result<T>) -> T {
    call_quiet_on(None, fallback, f)
}

/// As [`call`], but an error of kind `quiet` is only set as the last error
/// and logged at `debug`, not `error` (onnx-mlir's quiet failures).
pub(crate) fn call_quiet_on<T>(
    quiet: Option<ErrorKind>,
    fallback: T,
    f: impl FnOnce() -> Result<T>,
) -> T {
    // Not a cancellation point: see sys::CancelOff.
    let _cancel = crate::sys::CancelOff::new();
    error::clear_last_error();
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(_) => Error::new(
            ErrorKind::Internal,
            "internal error in om-constants (a panic was caught); please report it",
        ),
    };
    error::set_last_error(&err);
    // The registry may be what failed to initialise; never re-enter it here.
    let level = catch_unwind(|| global().config().log).unwrap_or(Level::Error);
    let at = if Some(err.kind()) == quiet {
        Level::Debug
    } else {
        Level::Error
    };
    log::emit(level, at, err.message());
    fallback
}
