//! The fault-injection build's decorator of the OS layer: the calls of
//! `unix.rs` and `linux.rs` that fail in ways worth testing, each of which first consults
//! the faults in force (`crate::fault`), then calls through. Compiled only
//! with the `fault-injection` feature.

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::kernel;
use super::unix::{self, MapRange};
use crate::fault::get;

/// `pread` calls so far (for `eintr`: every other one fails).
static PREADS: AtomicU64 = AtomicU64::new(0);
/// File mappings since the last reservation (a plain mapping is piece 1).
static PIECES: AtomicU64 = AtomicU64::new(0);
/// The descriptor last opened with `O_DIRECT` (for `direct_io_einval_at`).
static DIRECT_FD: AtomicI32 = AtomicI32::new(-1);

fn os(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A slow or panicking loader: called by the first memory call of every
/// strategy's load (a mapping, the first piece, the buffer's allocation),
/// so both the slot's and the file's loads are in flight when it strikes.
fn slow_or_panicking_load() {
    let spec = get();
    if spec.delay_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(spec.delay_ms));
    }
    if spec.panic {
        // resume_unwind: a panic without the hook's message and backtrace,
        // which would only be noise in a test log.
        std::panic::resume_unwind(Box::new("injected panic in the loader"));
    }
}

pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    if get().direct_io_refused {
        return Err(os(libc::EINVAL));
    }
    let f = kernel::open_direct(path)?;
    DIRECT_FD.store(f.as_raw_fd(), Ordering::Relaxed);
    Ok(f)
}

pub(crate) fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let s = get();
    let mut len = buf.len();
    let calls = PREADS.fetch_add(1, Ordering::Relaxed);
    if s.eintr && calls % 2 == 0 {
        return Err(os(libc::EINTR));
    }
    let covers = |at: u64| (offset..offset + len as u64).contains(&at);
    if s.eio_at.is_some_and(covers) {
        return Err(os(libc::EIO));
    }
    if s.rewrite_at.is_some_and(covers)
        && REWRITES.fetch_add(1, Ordering::Relaxed) < s.rewrites.max(1)
    {
        rewrite_in_place(file);
    }
    let direct = file.as_raw_fd() == DIRECT_FD.load(Ordering::Relaxed);
    if let Some(at) = s.direct_io_einval_at.filter(|_| direct) {
        if offset == at {
            return Err(os(libc::EINVAL));
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
    unix::pread(file, &mut buf[..len], offset)
}

/// How many times `rewrite_at` fired in this process (its tests run in
/// processes of their own: C hosts).
static REWRITES: AtomicU64 = AtomicU64::new(0);

/// Rewrites the open `file` in place through another descriptor, as `cp`
/// over it would: truncated, then its length of `0xEE` bytes written.
fn rewrite_in_place(file: &File) {
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return;
    };
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    if let Ok(w) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    {
        let _ = unix::write_all_at(&w, &vec![0xEE; len as usize], 0);
    }
}

pub(crate) fn alloc(layout: Layout) -> Option<NonNull<u8>> {
    slow_or_panicking_load();
    if get().alloc_fails {
        return None;
    }
    unix::alloc(layout)
}

/// An error if mapping piece `n` (counted from 1) must fail.
fn piece_fails(n: u64) -> Option<io::Error> {
    let s = get();
    (s.mmap_fails || s.mmap_piece_fails == Some(n)).then(|| os(libc::ENOMEM))
}

pub(crate) fn map_piece(res: &MapRange, file: &File, offset: usize, len: usize) -> io::Result<()> {
    // Pieces are mapped in order from offset 0 by one thread per load.
    if offset == 0 {
        slow_or_panicking_load();
        PIECES.store(0, Ordering::Relaxed);
    }
    let n = PIECES.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(e) = piece_fails(n) {
        return Err(e);
    }
    unix::map_piece(res, file, offset, len)
}

pub(crate) fn lock_memory(ptr: *mut u8, len: usize) -> io::Result<()> {
    if get().mlock_fails {
        return Err(os(libc::EPERM));
    }
    unix::lock_memory(ptr, len)
}

pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if get().disk_full {
        return Err(os(libc::ENOSPC));
    }
    kernel::allocate(file, offset, len)
}

pub(crate) fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    if get().disk_full {
        return Err(os(libc::ENOSPC));
    }
    unix::write_all_at(file, bytes, offset)
}
