//! # om-constants
//!
//! Puts the external constants file of a compiled ML model
//! (`model.constants.bin`, written by compilers of the onnx-mlir family
//! beside `model.so`) into memory for the model's code: once, however many
//! threads run the model, and frees it when the last user is done. The C ABI
//! is in [`ffi`] and `include/om_constants.h`; the map of the code is
//! docs/ARCHITECTURE.md.
//!
//! ## Module map
//!
//! | module | concern |
//! |---|---|
//! | [`ffi`] | every `extern "C"` function: checks, `catch_unwind`, error → false |
//! | [`registry`] | slots ↔ buffers, reference counts, acquire / release / trim |
//! | [`slot`] | the slot state machine (NULL → LOADING → address) and waiting |
//! | [`strategy`] | turning a file into memory: `mmap`, `read`, `chunked-mmap`; prefetch, `mlock` |
//! | [`threads`] | worker threads that are safe to start inside `dlopen` |
//! | `fault` | faults to inject, in the fault-injection build only (`sys/faulty.rs` injects them) |
//! | `sys` | every system call, behind safe functions (`unix.rs`) |
//! | `fork` | `pthread_atfork` handlers: a forked child never hangs |
//! | [`loader`] | the I/O behind a load: open, then a strategy (an in-memory stand-in under loom) |
//! | [`sync`] | std's locks and atomics, or loom's when model-checking |
//! | [`source`] | opening and checking the file, its identity for sharing |
//! | [`locate`] | finding the file the model names |
//! | [`cache`] | the packed-weights cache: file-backed, persisted, crash-safe |
//! | [`config`] | `OM_CONSTANT_*` options |
//! | [`stats`] | counters behind `om_constants_stats` |
//! | [`error`] | errors and the thread-local last error |
//! | [`log`] | one-line diagnostics on stderr |
//!
//! Rust code can use [`Registry`] directly (one per test, with its own
//! options and counters); the C ABI uses the process-wide [`global()`].

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cache;
pub mod config;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod ffi;
#[cfg(not(loom))]
mod fork;
mod global;
pub mod loader;
pub mod locate;
pub mod log;
pub mod registry;
pub mod request;
pub mod slot;
pub mod source;
pub mod stats;
pub mod strategy;
pub mod sync;
mod sys;
pub mod threads;

pub use config::{Choice, Config};
pub use error::{Error, ErrorKind};
pub use global::global;
pub use registry::Registry;
pub use request::Request;
pub use stats::Stats;
pub use strategy::Strategy;
