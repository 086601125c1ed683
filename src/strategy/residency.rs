//! Keeping the weights in RAM: prefetch for mappings, and `mlock`.
//!
//! A mapping is cheap to make and slow to first touch: the first inference
//! pays a page fault per page. `willneed` asks the kernel to read ahead;
//! `populate` maps every page before the load returns; `background` starts
//! a helper thread that touches every page while the host gets ready, so
//! the first inference finds them present. The helper belongs to the buffer
//! and is stopped and joined before the buffer is unmapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::heap::page_size;
use crate::config::{Config, Mlock, Prefetch};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};

/// A background thread touching a buffer's pages (a raw thread: see
/// `threads` for why), stopped and joined on drop.
pub struct Prefetcher {
    stop: Arc<AtomicBool>,
    thread: Option<crate::threads::Background>,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

/// Applies `config.prefetch` to a mapping at `ptr` of `len` bytes.
/// `Populate` was applied when mapping; `WillNeed` is a hint; `Background`
/// returns the helper, which must be dropped before the mapping.
pub fn prefetch(ptr: *mut u8, len: usize, config: &Config) -> Option<Prefetcher> {
    match config.prefetch {
        Prefetch::None | Prefetch::Populate => None,
        Prefetch::WillNeed => {
            // SAFETY: [ptr, ptr+len) is a live mapping we own; MADV_WILLNEED
            // is only a read-ahead hint and its failure changes nothing.
            unsafe {
                libc::madvise(ptr.cast(), len, libc::MADV_WILLNEED);
            }
            None
        }
        Prefetch::Background => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let (addr, page) = (ptr as usize, page_size());
            let thread = crate::threads::Background::spawn(move || touch(addr, len, page, &flag))?;
            Some(Prefetcher {
                stop,
                thread: Some(thread),
            })
        }
    }
}

fn touch(addr: usize, len: usize, page: usize, stop: &AtomicBool) {
    let mut off = 0;
    while off < len {
        if off % (512 * page) == 0 && stop.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: addr+off is inside the live, readable buffer: the owning
        // Buffer joins this thread (Prefetcher::drop) before unmapping it.
        unsafe {
            std::ptr::read_volatile((addr + off) as *const u8);
        }
        off += page;
    }
}

/// Applies `config.mlock` to `[ptr, ptr+len)`; returns whether it is locked.
pub fn lock(ptr: *mut u8, len: usize, config: &Config, what: &str) -> Result<bool> {
    if config.mlock == Mlock::Off {
        return Ok(false);
    }
    let e = if config.faults.mlock_fails() {
        std::io::Error::from_raw_os_error(libc::EPERM)
    // SAFETY: [ptr, ptr+len) is a live buffer we own; mlock only pins it.
    } else if unsafe { libc::mlock(ptr.cast(), len) } == 0 {
        return Ok(true);
    } else {
        std::io::Error::last_os_error()
    };
    let msg = format!(
        "cannot lock {len} bytes of {what} in memory (mlock): {e}; raise the \
         memory-lock limit (ulimit -l, RLIMIT_MEMLOCK) or set OM_CONSTANT_MLOCK=try or 0"
    );
    if config.mlock == Mlock::Try {
        log::emit(
            config.log,
            Level::Error,
            &format!("{msg} (continuing unlocked)"),
        );
        return Ok(false);
    }
    Err(Error::new(ErrorKind::OutOfMemory, msg))
}

/// Undoes [`lock`].
pub fn unlock(ptr: *mut u8, len: usize) {
    // SAFETY: [ptr, ptr+len) is the live buffer we locked.
    unsafe {
        libc::munlock(ptr.cast(), len);
    }
}
