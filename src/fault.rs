//! The seam where tests inject I/O faults: `pread`, `O_DIRECT`, allocation,
//! `mmap`, and a slow loader.
//!
//! Faults are part of a [`Config`](crate::Config) (so parallel tests cannot
//! disturb each other) and exist only with the `fault-injection` feature,
//! which the test suite enables and release builds do not: without it,
//! [`Faults`] is empty and every call below is the plain system call.
//! From C, a test build reads them from `OM_CONSTANT_FAULTS`, e.g.
//! `one_byte_reads,eintr,eio_at=4096,eof_at=8192,direct_io_refused,
//! direct_io_einval_at=8192,alloc_fails,mmap_fails,mmap_piece_fails=3,
//! mlock_fails,delay_ms=200,panic,disk_full`.

use std::io;
use std::os::unix::io::RawFd;

/// The faults to inject (empty unless built with `fault-injection`).
/// Clones share one setting, so a test can lift a fault ([`Faults::set`])
/// and show that the next call succeeds.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    spec: std::sync::Arc<std::sync::Mutex<Spec>>,
}

impl PartialEq for Faults {
    fn eq(&self, other: &Faults) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.get() == other.get();
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = other;
            true
        }
    }
}

impl Eq for Faults {}

/// What can be injected.
#[cfg(feature = "fault-injection")]
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
    /// Opening with `O_DIRECT` fails with `EINVAL`.
    pub direct_io_refused: bool,
    /// `O_DIRECT` reads stop short at this file offset, and the one that
    /// starts there fails with `EINVAL`: the open succeeded and a file
    /// system took some direct transfers, then refused one mid-way. A
    /// multiple of 4096, or the kernel refuses the short transfer itself.
    pub direct_io_einval_at: Option<u64>,
    /// The heap allocation fails.
    pub alloc_fails: bool,
    /// Every `mmap` of the file (every `chunked-mmap` piece) fails with
    /// `ENOMEM`.
    pub mmap_fails: bool,
    /// In `chunked-mmap`, mapping this piece (counted from 1) fails with
    /// `ENOMEM`, after the pieces before it were mapped.
    pub mmap_piece_fails: Option<u64>,
    /// `mlock` fails with `EPERM` (root ignores RLIMIT_MEMLOCK otherwise).
    pub mlock_fails: bool,
    /// The loader sleeps this long before loading.
    pub delay_ms: u64,
    /// Allocating blocks for a packed-weights cache region fails with
    /// `ENOSPC` (a full disk).
    pub disk_full: bool,
    /// The loader panics (after the delay): a bug in the library, which
    /// must still not unwind into C, hang waiters or leave the slot LOADING.
    pub panic: bool,
}

impl Faults {
    /// Builds faults from a `Spec` (test builds).
    #[cfg(feature = "fault-injection")]
    pub fn new(spec: Spec) -> Faults {
        let f = Faults::default();
        f.set(spec);
        f
    }

    /// Replaces the faults (for every clone); `Spec::default()` lifts them.
    #[cfg(feature = "fault-injection")]
    pub fn set(&self, spec: Spec) {
        *self
            .spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = spec;
    }

    /// The faults in force.
    #[cfg(feature = "fault-injection")]
    pub fn get(&self) -> Spec {
        *self
            .spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parses `OM_CONSTANT_FAULTS`; refused when fault injection is not
    /// compiled in, so a release build never pretends to inject.
    pub fn parse(s: &str) -> Result<Faults, &'static str> {
        #[cfg(feature = "fault-injection")]
        {
            let mut spec = Spec::default();
            for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                let num = || v.parse::<u64>().map_err(|_| "fault names with numbers");
                match k {
                    "one_byte_reads" => spec.one_byte_reads = true,
                    "eintr" => spec.eintr = true,
                    "eio_at" => spec.eio_at = Some(num()?),
                    "eof_at" => spec.eof_at = Some(num()?),
                    "direct_io_refused" => spec.direct_io_refused = true,
                    "direct_io_einval_at" => spec.direct_io_einval_at = Some(num()?),
                    "alloc_fails" => spec.alloc_fails = true,
                    "mmap_fails" => spec.mmap_fails = true,
                    "mmap_piece_fails" => spec.mmap_piece_fails = Some(num()?),
                    "mlock_fails" => spec.mlock_fails = true,
                    "delay_ms" => spec.delay_ms = num()?,
                    "panic" => spec.panic = true,
                    "disk_full" => spec.disk_full = true,
                    _ => return Err("known fault names (see src/fault.rs)"),
                }
            }
            Ok(Faults::new(spec))
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = s;
            Err("nothing: fault injection is compiled only into test builds")
        }
    }

    /// A reader for one thread's buffered `pread` calls.
    pub fn reader(&self) -> Reader {
        self.reader_for(false)
    }

    /// A reader for one thread's `pread` calls on the `O_DIRECT` descriptor.
    pub fn direct_reader(&self) -> Reader {
        self.reader_for(true)
    }

    fn reader_for(&self, direct: bool) -> Reader {
        let _ = direct;
        Reader {
            #[cfg(feature = "fault-injection")]
            spec: self.get(),
            #[cfg(feature = "fault-injection")]
            calls: 0,
            #[cfg(feature = "fault-injection")]
            direct,
        }
    }

    /// True when opening with `O_DIRECT` must fail.
    pub fn direct_io_refused(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.get().direct_io_refused;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// True when the heap allocation must fail.
    pub fn alloc_fails(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.get().alloc_fails;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// An error if mapping piece `n` (counted from 1) of the file must fail:
    /// any piece with `mmap_fails`, or piece `mmap_piece_fails`. A plain
    /// `mmap` is piece 1.
    pub fn mmap_error(&self, n: usize) -> Option<io::Error> {
        #[cfg(feature = "fault-injection")]
        {
            let spec = self.get();
            if spec.mmap_fails || spec.mmap_piece_fails == Some(n as u64) {
                return Some(io::Error::from_raw_os_error(libc::ENOMEM));
            }
        }
        let _ = n;
        None
    }

    /// An error if allocating file blocks must fail (a full disk).
    pub fn disk_error(&self) -> Option<io::Error> {
        #[cfg(feature = "fault-injection")]
        if self.get().disk_full {
            return Some(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        None
    }

    /// True when `mlock` must fail.
    pub fn mlock_fails(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.get().mlock_fails;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Sleeps as long as the injected loader delay, then panics if asked.
    pub fn delay(&self) {
        #[cfg(feature = "fault-injection")]
        {
            let spec = self.get();
            if spec.delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(spec.delay_ms));
            }
            if spec.panic {
                // resume_unwind: a panic without the panic hook's message
                // and backtrace, which would only be noise in a test log.
                std::panic::resume_unwind(Box::new("injected panic in the loader"));
            }
        }
    }
}

/// `pread` with the injected faults of one thread (as they were when it
/// was made).
pub struct Reader {
    #[cfg(feature = "fault-injection")]
    spec: Spec,
    #[cfg(feature = "fault-injection")]
    calls: u64,
    /// Reads the `O_DIRECT` descriptor (for `direct_io_einval_at`).
    #[cfg(feature = "fault-injection")]
    direct: bool,
}

impl Reader {
    /// Reads up to `len` bytes at `offset` into `dst`: the number read (0 at
    /// end of file), or the OS error (`Interrupted` included).
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    pub unsafe fn pread(
        &mut self,
        fd: RawFd,
        dst: *mut u8,
        len: usize,
        offset: u64,
    ) -> io::Result<usize> {
        #[allow(unused_mut)]
        let mut len = len;
        #[cfg(feature = "fault-injection")]
        {
            let s = &self.spec;
            self.calls += 1;
            if s.eintr && self.calls % 2 == 1 {
                return Err(io::Error::from_raw_os_error(libc::EINTR));
            }
            let covers = |at: u64| (offset..offset + len as u64).contains(&at);
            if s.eio_at.is_some_and(covers) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            if let Some(at) = s.direct_io_einval_at.filter(|_| self.direct) {
                if offset == at {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                if covers(at) {
                    len = (at - offset) as usize;
                }
            }
            if let Some(at) = s.eof_at {
                if offset >= at {
                    return Ok(0);
                }
                len = len.min((at - offset) as usize);
            }
            if s.one_byte_reads {
                len = len.min(1);
            }
        }
        // SAFETY: the caller guarantees dst is writable for len bytes (len
        // only ever shrinks above); fd is a descriptor the caller owns.
        let n = unsafe { libc::pread(fd, dst.cast(), len, offset as libc::off_t) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_every_name_and_refuses_bad_numbers() {
        let f = Faults::parse(
            "mmap_fails, mmap_piece_fails=3,eio_at=4096,delay_ms=5,direct_io_einval_at=8192",
        )
        .expect("valid spec");
        let s = f.get();
        assert_eq!(s.direct_io_einval_at, Some(8192));
        assert!(s.mmap_fails);
        assert_eq!(s.mmap_piece_fails, Some(3));
        assert_eq!(s.eio_at, Some(4096));
        assert_eq!(s.delay_ms, 5);
        assert!(f.mmap_error(2).is_some(), "mmap_fails fails every piece");
        let f = Faults::parse("mmap_piece_fails=3").expect("valid spec");
        assert!(f.mmap_error(3).is_some());
        assert!(f.mmap_error(2).is_none());
        assert!(Faults::parse("mmap_piece_fails=x").is_err());
        assert!(Faults::parse("mmap_piece_fails").is_err());
        assert!(Faults::parse("no_such_fault").is_err());
    }
}
