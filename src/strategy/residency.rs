//! Keeping the weights in RAM: prefetch for mappings, and `mlock`.
//!
//! A mapping is cheap to make and slow to first touch: the first inference
//! pays a page fault per page. `willneed` asks the kernel to read ahead;
//! `populate` maps every page before the load returns; `background` starts
//! a helper thread that touches every page while the host gets ready, so
//! the first inference finds them present. The helper belongs to the buffer:
//! told to stop when the buffer goes, and let go as `threads::Background`
//! is; it holds its own reference to the memory, so it never reads unmapped
//! pages however long it takes to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::heap::page_size;
use crate::config::{Config, Mlock, Prefetch};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{Level, Notes};
use crate::sys;

/// A background thread touching a buffer's pages (a raw thread: see
/// `threads` for why), told to stop on drop, then let go as
/// `threads::Background` is (joined on POSIX, never waited for on
/// Windows): it holds its own reference to the memory, which goes when the
/// last of the two lets go.
pub(super) struct Prefetcher {
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
/// returns the helper, which keeps `keep` (the owner of the mapping) alive
/// until it ends.
pub(super) fn prefetch<K: Send + Sync + 'static>(
    ptr: *mut u8,
    len: usize,
    config: &Config,
    keep: std::sync::Arc<K>,
) -> Option<Prefetcher> {
    match config.prefetch {
        Prefetch::None | Prefetch::Populate => None,
        Prefetch::WillNeed => {
            sys::advise_will_need(ptr, len);
            None
        }
        Prefetch::Background => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let (addr, page) = (ptr as usize, page_size());
            let thread = crate::threads::Background::spawn(move || {
                touch(addr, len, page, &flag);
                // The last reference may be this one: the memory goes here.
                drop(keep);
            })?;
            Some(Prefetcher {
                stop,
                thread: Some(thread),
            })
        }
    }
}

/// Faults the buffer in, 2 MiB at a time between looks at `stop`; ends
/// early where a page cannot be read (the file shrank under the mapping),
/// which the model's own read would meet as it would without prefetch.
fn touch(addr: usize, len: usize, page: usize, stop: &AtomicBool) {
    let step = 512 * page;
    let mut off = 0;
    while off < len {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let n = step.min(len - off);
        // `populate` reads through the kernel, never by a load that could
        // raise SIGBUS; the memory is alive: this thread holds a reference
        // to it (`keep` in `prefetch`).
        if sys::populate((addr + off) as *mut u8, n).is_err() {
            return;
        }
        off += n;
    }
}

/// Applies `config.mlock` to `[ptr, ptr+len)`; returns whether it is locked.
/// A refusal under `try` adds its line to `notes`, for the caller to write
/// once nobody waits on the load.
pub(super) fn lock(
    ptr: *mut u8,
    len: usize,
    config: &Config,
    what: &str,
    notes: &mut Notes,
) -> Result<bool> {
    if config.mlock == Mlock::Off {
        return Ok(false);
    }
    let Err(e) = sys::lock_memory(ptr, len) else {
        return Ok(true);
    };
    let msg = format!(
        "cannot lock {len} bytes of {what} in memory (mlock): {e}; raise the \
         memory-lock limit (ulimit -l, RLIMIT_MEMLOCK) or set OM_CONSTANT_MLOCK=try or 0"
    );
    if config.mlock == Mlock::Try {
        notes.push(Level::Error, format!("{msg} (continuing unlocked)"));
        return Ok(false);
    }
    Err(Error::new(ErrorKind::OutOfMemory, msg))
}

/// Undoes [`lock`].
pub(super) fn unlock(ptr: *mut u8, len: usize) {
    sys::unlock_memory(ptr, len);
}
