//! Injected faults, for the fault-injection build only (feature
//! `fault-injection`, never in the library that ships): what to inject,
//! process-wide. The OS layer's decorator (`sys/faulty.rs`) consults it.
//!
//! A Rust test takes [`inject`] before anything else: the faults hold until
//! its guard is dropped, and guards exclude each other, so fault tests of
//! one process run one at a time (and none sees another's faults in its
//! set-up). A C host sets `OM_CONSTANT_FAULTS`, read when the
//! process-wide registry is made, e.g. `one_byte_reads,eintr,eio_at=4096,
//! eof_at=8192,rewrite_at=4096,direct_io_refused,direct_io_einval_at=8192,alloc_fails,
//! mmap_fails,mmap_piece_fails=3,mlock_fails,delay_ms=200,panic,disk_full`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// What can be injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spec {
    /// Every `pread` returns at most one byte.
    pub one_byte_reads: bool,
    /// Every other `pread` fails with `EINTR`.
    pub eintr: bool,
    /// A `pread` covering this file offset fails with `EIO`.
    pub eio_at: Option<u64>,
    /// `pread` at or after this offset returns 0 (the file "shrank").
    pub eof_at: Option<u64>,
    /// A `pread` covering this offset first rewrites the file in place
    /// (truncated, then the same length of bytes `0xEE` written), as a
    /// deployer's `cp` over a file being read does: the first `rewrites`
    /// (at least 1) such reads of the process.
    pub rewrite_at: Option<u64>,
    /// How many reads `rewrite_at` rewrites the file for.
    pub rewrites: u64,
    /// Opening with `O_DIRECT` fails with `EINVAL`.
    pub direct_io_refused: bool,
    /// `O_DIRECT` reads stop short at this file offset, and the one that
    /// starts there fails with `EINVAL`: the open succeeded and a file
    /// system took some direct transfers, then refused one mid-way. A
    /// multiple of 4096, or the kernel refuses the short transfer itself.
    pub direct_io_einval_at: Option<u64>,
    /// Allocating a buffer fails.
    pub alloc_fails: bool,
    /// Every `mmap` of a file (every `chunked-mmap` piece) fails with
    /// `ENOMEM`.
    pub mmap_fails: bool,
    /// In `chunked-mmap`, mapping this piece (counted from 1) fails with
    /// `ENOMEM`, after the pieces before it were mapped.
    pub mmap_piece_fails: Option<u64>,
    /// `mlock` fails with `EPERM` (root ignores RLIMIT_MEMLOCK otherwise).
    pub mlock_fails: bool,
    /// A load's first mapping or allocation sleeps this long first (a
    /// slow loader).
    pub delay_ms: u64,
    /// Allocating or writing blocks of a file fails with `ENOSPC` (a full
    /// disk).
    pub disk_full: bool,
    /// Closing a constants file (its buffer's last release, or a load that
    /// shared another's buffer) sleeps this long first: a `close` on a
    /// slow network file system.
    pub close_delay_ms: u64,
    /// A load that took a use of a buffer sleeps this long before its slot
    /// is recorded as holding it: a wide window for a fork to land in.
    pub record_delay_ms: u64,
    /// Making the process-wide registry (the first call) sleeps this long
    /// before it is published: a wide window for a fork to land in.
    pub init_delay_ms: u64,
    /// A load's first mapping or allocation panics (after the delay): a bug
    /// in the library, which must still not unwind into C, hang waiters or
    /// leave the slot LOADING, the file's load in flight, or the next load
    /// failing.
    pub panic: bool,
}

/// Every spec ever set, in order, each written once: readers never take a
/// lock, so a child forked while another thread was reading or setting the
/// faults finds them as they were (a `Mutex` held at fork by a thread the
/// child does not have would hang it in its first load).
static SPECS: [OnceLock<Spec>; MAX_SETS] = [const { OnceLock::new() }; MAX_SETS];
/// How many specs were ever set (the next free index of `SPECS`).
static SETS: AtomicUsize = AtomicUsize::new(0);
/// The spec in force: an index into `SPECS`, plus one; 0 for none.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// More than any test process sets (two per injecting test).
const MAX_SETS: usize = 4096;

/// Serialises the tests that inject faults.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// The faults in force.
pub fn get() -> Spec {
    match CURRENT.load(Ordering::Acquire) {
        0 => Spec::default(),
        n => SPECS
            .get(n - 1)
            .and_then(OnceLock::get)
            .copied()
            .unwrap_or_default(),
    }
}

fn set(spec: Spec) {
    let i = SETS.fetch_add(1, Ordering::Relaxed);
    // A fresh cell, set by this call alone: `set` cannot fail or wait.
    let Some(cell) = SPECS.get(i) else {
        panic!("more than {MAX_SETS} fault specs set in one process");
    };
    let _ = cell.set(spec);
    CURRENT.store(i + 1, Ordering::Release);
}

/// Faults injected until this guard is dropped.
pub struct Injected {
    _exclusive: MutexGuard<'static, ()>,
}

impl Injected {
    /// Replaces the faults in force; `Spec::default()` lifts them.
    pub fn set(&self, spec: Spec) {
        set(spec);
    }
}

impl Drop for Injected {
    fn drop(&mut self) {
        set(Spec::default());
    }
}

/// Injects `spec` for the whole process until the guard is dropped; waits
/// for any other test's guard first.
pub fn inject(spec: Spec) -> Injected {
    let exclusive = EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner);
    set(spec);
    Injected {
        _exclusive: exclusive,
    }
}

/// Sets the faults from `OM_CONSTANT_FAULTS`, for C hosts; a bad value is
/// returned as a message for the log.
pub(crate) fn from_env() -> Option<String> {
    let text = std::env::var("OM_CONSTANT_FAULTS").ok()?;
    match parse(&text) {
        Ok(spec) => {
            set(spec);
            None
        }
        Err(expected) => Some(format!(
            "ignoring OM_CONSTANT_FAULTS={text:?}: expected {expected}"
        )),
    }
}

/// Parses a comma-separated list of faults (see the module docs).
pub fn parse(s: &str) -> Result<Spec, &'static str> {
    let mut spec = Spec::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        let num = || v.parse::<u64>().map_err(|_| "fault names with numbers");
        match k {
            "one_byte_reads" => spec.one_byte_reads = true,
            "eintr" => spec.eintr = true,
            "eio_at" => spec.eio_at = Some(num()?),
            "eof_at" => spec.eof_at = Some(num()?),
            "rewrite_at" => spec.rewrite_at = Some(num()?),
            "rewrites" => spec.rewrites = num()?,
            "direct_io_refused" => spec.direct_io_refused = true,
            "direct_io_einval_at" => spec.direct_io_einval_at = Some(num()?),
            "alloc_fails" => spec.alloc_fails = true,
            "mmap_fails" => spec.mmap_fails = true,
            "mmap_piece_fails" => spec.mmap_piece_fails = Some(num()?),
            "mlock_fails" => spec.mlock_fails = true,
            "delay_ms" => spec.delay_ms = num()?,
            "init_delay_ms" => spec.init_delay_ms = num()?,
            "close_delay_ms" => spec.close_delay_ms = num()?,
            "record_delay_ms" => spec.record_delay_ms = num()?,
            "panic" => spec.panic = true,
            "disk_full" => spec.disk_full = true,
            _ => return Err("known fault names (see src/fault.rs)"),
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_every_name_and_refuses_bad_numbers() {
        let s =
            parse("mmap_fails, mmap_piece_fails=3,eio_at=4096,delay_ms=5,direct_io_einval_at=8192")
                .expect("valid spec");
        assert_eq!(s.direct_io_einval_at, Some(8192));
        assert!(s.mmap_fails);
        assert_eq!(s.mmap_piece_fails, Some(3));
        assert_eq!(s.eio_at, Some(4096));
        assert_eq!(s.delay_ms, 5);
        assert!(parse("mmap_piece_fails=x").is_err());
        assert!(parse("mmap_piece_fails").is_err());
        assert!(parse("no_such_fault").is_err());
    }
}
