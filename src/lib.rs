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
//! docs/ARCHITECTURE.md has the one map: the modules, a call's way from C
//! to memory and back, and each invariant with the place that enforces it.
//!
//! The public Rust interface is the C ABI's functions ([`ffi`]), the
//! [`Registry`] with its [`Config`], [`Request`] and [`Stats`], the cache
//! ([`cache::Cache`] and its file [`cache::format`]), finding a file
//! ([`locate`]), options ([`config`]), errors and the log level. The rest is
//! crate-private.
//!
//! Rust code can use [`Registry`] directly (one per test, with its own
//! options and counters); the C ABI uses the process-wide `global()`.

#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cache;
pub mod config;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod ffi;
mod fork;
mod global;
pub(crate) mod helper;
pub mod locate;
pub mod log;
pub mod path_var;
pub(crate) mod registry;
pub(crate) mod request;
pub(crate) mod source;
pub(crate) mod stats;
pub(crate) mod strategy;
pub(crate) mod sync;
mod sys;
pub(crate) mod threads;

pub use config::{Choice, Config};
pub use error::{Error, ErrorKind};
pub use global::global;
pub use registry::Registry;
pub use registry::LOADING;
pub use request::Request;
pub use stats::{PageReport, Stats, StrategyStats};
pub use strategy::{huge_backed_bytes, remote_volume, resolve, resolve_for, Strategy};
