//! Which slot holds which buffer, how many references each has, and the
//! operations on them (docs/SEMANTICS.md): acquire and ensure-loaded in
//! `slot.rs`, release, trim and stats here.
//!
//! Every slot transition except the loaded fast path happens under the
//! registry's lock, including the `NULL → LOADING` claim and the insertion of
//! that load's `Pending`; so a thread that sees `LOADING` always finds the
//! load to wait for, and an acquire racing the last release either sees the
//! live buffer (and its count goes up under the same lock) or an empty slot.
//! The lock is never held during I/O, logging included: the loader works
//! outside it, and messages are written after it is released.
//!
//! A buffer keeps its file open for as long as it lives, so the file's
//! inode cannot be freed and reused while the buffer is shared under that
//! file's identity: a file replaced by rename is a new inode, never served
//! from the old file's buffer (docs/ARCHITECTURE.md, "Replaced files").
//!
//! Buffers are keyed by file identity and size, so two slots that load the
//! same file share one buffer, and the run-once protocol (`flight.rs`),
//! keyed by file, makes sure two slots racing on the same file read it once
//! (`buffer.rs`).

mod address;
mod buffer;
mod flight;
mod slot;
mod tables;

use std::os::raw::c_void;

use crate::error::{Error, ErrorKind, Result};
use crate::log::Level;
use crate::stats::{PageReport, Stats};
use crate::sync::{AtomicPtr, MutexGuard};
use std::sync::Arc;
use std::time::Duration;

use slot::Slot;
pub(crate) use slot::{classify, SlotState};
pub use slot::{LOADING, OM_CONSTANTS_LOADING};
pub use tables::Registry;
use tables::{BufKey, BufferEntry, Tables};

impl Registry {
    /// Locks the tables until the guard is dropped (`fork.rs`).
    pub(crate) fn lock_for_fork(&self) -> ForkGuard<'_> {
        ForkGuard {
            tables: self.lock(),
            keep: self.config.keep,
            unused: Vec::new(),
        }
    }

    /// **Release**: one reference less. The last one frees the buffer (unless
    /// `keep`) and sets the slot to NULL. A slot holding no reference is an
    /// error and nothing is freed.
    pub fn release(&self, cell: &AtomicPtr<c_void>) -> Result<()> {
        let slot = Slot::new(cell);
        let addr = slot.addr();
        let mut t = self.lock();
        let state = slot.state();
        let Some(e) = t
            .slots
            .get_mut(&addr)
            .filter(|e| state == SlotState::Holds(e.ptr as *mut c_void))
        else {
            return Err(not_held(addr, state));
        };
        e.refs -= 1;
        let (key, last) = (e.buf, e.refs == 0);
        let freed = if last {
            t.slots.remove(&addr);
            slot.publish(std::ptr::null_mut());
            t.remove_user(key, self.config.keep)
        } else {
            None
        };
        drop(t);
        if let Some(b) = freed {
            self.counters.freed(1);
            self.log(Level::Debug, || format!("freed {} bytes", b.buffer.len()));
            drop(b);
        }
        Ok(())
    }

    /// Frees every kept buffer that no slot references; returns how many.
    pub fn trim(&self) -> u64 {
        let mut t = self.lock();
        let idle: Vec<BufKey> = t
            .buffers
            .iter()
            .filter(|(_, h)| h.users == 0)
            .map(|(k, _)| *k)
            .collect();
        let freed: Vec<BufferEntry> = idle.iter().filter_map(|k| t.buffers.remove(k)).collect();
        drop(t);
        let n = freed.len() as u64;
        self.counters.freed(n);
        n
    }

    /// A snapshot of what is alive now and what happened so far.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        let ranges: Vec<(usize, usize)> = {
            let t = self.lock();
            s.live_buffers = t.buffers.len() as u64;
            s.kept_buffers = t.buffers.values().filter(|h| h.users == 0).count() as u64;
            s.references = t.slots.values().map(|e| e.refs).sum();
            s.live_slots = t.slots.len() as u64;
            s.live_bytes = t.buffers.values().map(|h| h.buffer.len() as u64).sum();
            t.buffers
                .values()
                .map(|h| (h.buffer.as_ptr() as usize, h.buffer.len()))
                .collect()
        };
        // Read from the kernel's page tables after the lock is released (a
        // /proc read). A buffer freed meanwhile reads as unmapped, never
        // as memory: the scan looks at page tables, not at the bytes.
        s.huge_page_bytes = ranges
            .iter()
            .map(|&(p, n)| crate::strategy::huge_backed_bytes(p as *const u8, n))
            .sum();
        self.counters.fill(&mut s);
        s
    }
}

impl Registry {
    /// How the live buffer at `ptr` (an address this registry published)
    /// is backed, once its 2 MiB-page helper is done or `timeout` has
    /// passed; `None` if no live buffer starts at `ptr`.
    pub fn page_report(&self, ptr: *const c_void, timeout: Duration) -> Option<PageReport> {
        let (settling, len) = {
            let t = self.lock();
            let h = t
                .buffers
                .values()
                .find(|h| h.buffer.as_ptr() as *const c_void == ptr)?;
            (Arc::clone(h.buffer.settling()), h.buffer.len())
        };
        // Waited for and read after the lock is released; a buffer freed
        // meanwhile reads as unmapped (page tables only, never the bytes).
        let done = settling.wait(timeout);
        Some(PageReport {
            bytes: len as u64,
            huge_page_bytes: crate::strategy::huge_backed_bytes(ptr.cast(), len),
            settled: done.is_some(),
            note: done.flatten(),
        })
    }
}

/// The error for a release of a slot that holds no reference of ours.
fn not_held(addr: usize, state: SlotState) -> Error {
    let (kind, what) = match state {
        SlotState::Empty => (ErrorKind::NotLoaded, "is empty (NULL)".to_string()),
        SlotState::Loading => (
            ErrorKind::NotHeld,
            "is being loaded by another thread".to_string(),
        ),
        SlotState::Holds(p) => (
            ErrorKind::NotHeld,
            format!(
                "holds {p:p}, which om-constants did not load. If the model carries its own \
                 constants loader (onnx-mlir links one into every model), that loader filled \
                 the slot before om-constants was in the process's global scope, and this \
                 release reached om-constants instead: the slot and its memory are left as \
                 they are. Put om-constants in the global scope before loading any model \
                 (link the host with it, LD_PRELOAD it, or dlopen it with RTLD_GLOBAL first; \
                 docs/ONNX-MLIR.md)"
            ),
        ),
    };
    Error::new(
        kind,
        format!(
            "release of slot {addr:#x} that holds no reference: the slot {what}; every release \
             must match one acquire (or ensure-loaded) on the same slot. Nothing was freed"
        ),
    )
}

/// The registry's tables, locked across `fork` (see `fork.rs`): no thread
/// of the parent can hold them when the child is made.
pub(crate) struct ForkGuard<'a> {
    tables: MutexGuard<'a, Tables>,
    keep: bool,
    /// Buffers the child gave its last use back for: dropped with the
    /// guard, after `tables` (fields drop in order), so their unmapping and
    /// closing happen once the lock is let go.
    unused: Vec<BufferEntry>,
}

impl ForkGuard<'_> {
    /// In the child: loads in flight in the parent are not in flight here
    /// (their threads were not copied), so their slots go back to NULL and
    /// their waits are forgotten; the next call loads afresh. The uses of
    /// buffers those loads had taken are given back; a buffer left without
    /// users is freed when the guard is dropped, after the lock.
    pub(crate) fn forget_loads_in_flight(&mut self) {
        let t = &mut *self.tables;
        let uses: Vec<BufKey> = t.uses_in_flight.drain().map(|(_, key)| key).collect();
        for key in uses {
            self.unused.extend(t.remove_user(key, self.keep));
        }
        for addr in t.loading_slots.forget() {
            // SAFETY: `addr` is the slot of a call that was in flight when
            // the process forked: valid memory for that call, copied into
            // the child, whose copy nothing else uses (the calling thread
            // does not exist here). The slot is only ever written through
            // atomics, so writing it as one is sound.
            unsafe {
                (*(addr as *const AtomicPtr<c_void>))
                    .store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release)
            };
        }
        t.loading_files.forget().for_each(drop);
    }
}
