//! Which slot holds which buffer, how many references each has, and the
//! acquire / ensure-loaded / release / trim operations (README "Semantics").
//!
//! Every slot transition except the loaded fast path happens under the
//! registry's lock, including the `NULL → LOADING` claim and the insertion of
//! that load's [`Pending`]; so a thread that sees `LOADING` always finds the
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
//! same file share one buffer, and a file-level [`Pending`] makes sure two
//! slots racing on the same file read it once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::raw::c_void;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::loader;
use crate::log::{self, Level};
use crate::request::Request;
use crate::slot::{Flight, Flights, Pending, Slot, State, LOADING};
use crate::source::FileKey;
use crate::stats::{Counters, Stats};
use crate::strategy::Buffer;
use crate::sync::{AtomicPtr, Mutex, MutexGuard};

/// A buffer is shared by slots that load the same file with the same size.
type BufKey = (FileKey, u64);

/// A slot that holds a buffer: the one owner of the slot's reference count.
struct SlotEntry {
    buf: BufKey,
    ptr: usize,
    /// References held on this slot (acquires, plus ensure-loaded's one).
    refs: u64,
    /// The file name and size the slot was loaded with: a later call on the
    /// loaded slot must ask for the same.
    fname: OsString,
    size: u64,
}

impl SlotEntry {
    /// An error unless `req` asks for what this slot holds.
    fn check(&self, addr: usize, req: &Request) -> Result<()> {
        if self.fname.as_os_str() == req.fname && self.size == req.size {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Mismatch,
            format!(
                "slot {addr:#x} already holds constants file '{}' ({} bytes), but this call                  asks for '{}' ({} bytes); a slot holds one file of one size: the model and                  its constants do not match, or two models share one slot. Nothing was                  changed",
                Path::new(&self.fname).display(),
                self.size,
                req.fname().display(),
                req.size
            ),
        ))
    }
}

/// A buffer in memory: the one owner of the count of slots using it.
struct Held {
    buffer: Buffer,
    /// Slots that hold this buffer, or are about to (a load that found it
    /// shared); 0 for a buffer kept by `OM_CONSTANT_KEEP`.
    users: u64,
    /// The open file the buffer came from, kept open while the buffer
    /// lives (see the module docs).
    _file: loader::Opened,
}

#[derive(Default)]
struct Tables {
    slots: HashMap<usize, SlotEntry>,
    buffers: HashMap<BufKey, Held>,
    loading_slots: Flights<usize>,
    loading_files: Flights<BufKey>,
}

impl Tables {
    /// A slot stopped using the buffer `key`; returns the buffer if it must
    /// be freed (the caller drops it after unlocking).
    fn unuse(&mut self, key: BufKey, keep: bool) -> Option<Buffer> {
        let held = self.buffers.get_mut(&key)?;
        // Each use belongs to one slot entry (or one load adopting the
        // buffer), so this never goes below zero.
        debug_assert!(held.users > 0, "a buffer lost more users than it had");
        held.users -= 1;
        if held.users == 0 && !keep {
            return self.buffers.remove(&key).map(|h| h.buffer);
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Acquire,
    Ensure,
}

/// The slots, buffers and counters of one process (see [`global`]), or of
/// one test.
pub struct Registry {
    config: Config,
    tables: Mutex<Tables>,
    counters: Counters,
}

impl Registry {
    /// An empty registry with these options.
    pub fn new(config: Config) -> Registry {
        Registry {
            config,
            tables: Mutex::new(Tables::default()),
            counters: Counters::default(),
        }
    }

    /// Its options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Locks the tables until the guard is dropped (`fork.rs`).
    pub(crate) fn lock_for_fork(&self) -> ForkGuard<'_> {
        ForkGuard(self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while locked is caught at the ABI; the tables are updated
        // in single statements, so they are consistent and still usable.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, level: Level, msg: impl FnOnce() -> String) {
        if level <= self.config.log {
            log::emit(self.config.log, level, &msg());
        }
    }

    /// **Ensure loaded**: if the slot holds a buffer, returns it at once
    /// (one acquire load, no shared write); otherwise loads it as
    /// [`acquire`](Self::acquire) does, the slot holding that reference.
    ///
    /// `req` builds (and checks) the request; it runs only when a load is
    /// needed, so the fast path never looks at the arguments.
    pub fn ensure_loaded<'a>(
        &self,
        cell: &AtomicPtr<c_void>,
        req: impl FnOnce() -> Result<Request<'a>>,
    ) -> Result<*mut c_void> {
        if let Some(p) = loaded(cell) {
            return Ok(p);
        }
        self.get(cell, &req()?, Mode::Ensure)
    }

    /// **Acquire**: one more reference on the slot's buffer, loading it first
    /// if the slot is empty. Returns the buffer's address.
    pub fn acquire(&self, cell: &AtomicPtr<c_void>, req: &Request) -> Result<*mut c_void> {
        self.get(cell, req, Mode::Acquire)
    }

    fn get(&self, cell: &AtomicPtr<c_void>, req: &Request, mode: Mode) -> Result<*mut c_void> {
        let slot = Slot::new(cell);
        let addr = slot.addr();
        loop {
            slot.spin_while_loading();
            let mut t = self.lock();
            let from = match slot.state() {
                State::Loaded(p) => {
                    if let Some(e) = t.slots.get_mut(&addr).filter(|e| e.ptr == p as usize) {
                        e.check(addr, req)?;
                        if mode == Mode::Acquire {
                            e.refs += 1;
                        }
                        return Ok(p);
                    }
                    if mode == Mode::Ensure {
                        // As the fast path does: a loaded slot is trusted.
                        return Ok(p);
                    }
                    p
                }
                State::Empty => std::ptr::null_mut(),
                State::Loading => {
                    // A load's claim and its pending are made, and its end
                    // is published and the pending removed, under this lock:
                    // LOADING with no pending is no load of ours.
                    let Some(pending) = t.loading_slots.get(&addr) else {
                        return Err(not_our_load(addr));
                    };
                    drop(t);
                    self.counters.waited();
                    self.log(Level::Debug, || {
                        format!(
                            "waiting for another thread to load '{}'",
                            req.fname().display()
                        )
                    });
                    self.wait(&pending, req)?;
                    continue;
                }
            };
            if !slot.claim(from) {
                continue;
            }
            // The slot was empty or held a pointer the registry did not give
            // it: whatever the registry had for this address belongs to a
            // model that is gone (README "For compiler authors"), so its references go too.
            let stale = t.slots.remove(&addr);
            let freed = stale.and_then(|e| t.unuse(e.buf, self.config.keep));
            let pending = t.loading_slots.start(addr);
            drop(t);
            if freed.is_some() {
                self.counters.freed(1);
                self.log(Level::Info, || {
                    format!("slot {addr:#x} was reused without a release; freed its old buffer")
                });
            }
            drop(freed);
            return self.load_into(slot, req, pending);
        }
    }

    fn wait(&self, pending: &Pending, req: &Request) -> Result<()> {
        let what = format!("constants file '{}'", req.fname().display());
        let r = pending.wait(self.config.wait_timeout, &what);
        if matches!(&r, Err(e) if e.kind() == ErrorKind::Timeout) {
            self.counters.timed_out();
        }
        r
    }

    /// This thread owns the slot's load: do it, publish, wake the waiters.
    fn load_into(
        &self,
        slot: Slot,
        req: &Request,
        pending: crate::sync::Arc<Pending>,
    ) -> Result<*mut c_void> {
        let addr = slot.addr();
        let flight = Flight::new(pending, move || {
            let mut t = self.lock();
            t.loading_slots.end(&addr);
            slot.publish(std::ptr::null_mut());
            drop(t);
            self.counters.failed();
        });
        let result = self.load_buffer(addr, req);
        let mut t = self.lock();
        let out = match result {
            Ok((key, ptr)) => {
                t.slots.insert(
                    slot.addr(),
                    SlotEntry {
                        buf: key,
                        ptr: ptr as usize,
                        refs: 1,
                        fname: req.fname.to_os_string(),
                        size: req.size,
                    },
                );
                slot.publish(ptr);
                Ok(ptr)
            }
            Err(e) => {
                self.counters.failed();
                slot.publish(std::ptr::null_mut());
                Err(e)
            }
        };
        t.loading_slots.end(&addr);
        drop(t);
        flight.settle(out.as_ref().map(|_| ()).map_err(Clone::clone));
        out
    }

    /// Finds and opens the file, then takes a reference on a buffer for it:
    /// an existing one if another slot (or the keep cache) has it, else a new
    /// load, read once even if several slots ask at the same time.
    fn load_buffer(&self, slot_addr: usize, req: &Request) -> Result<(BufKey, *mut c_void)> {
        let opened = loader::open(req, &self.config, slot_addr)?;
        let key = (opened.key(), req.size());
        let pending = loop {
            let mut t = self.lock();
            if let Some(h) = t.buffers.get_mut(&key) {
                h.users += 1;
                let ptr = h.buffer.as_ptr().cast::<c_void>();
                drop(t);
                self.counters.shared();
                self.log(Level::Debug, || {
                    format!("sharing the buffer of {} already in memory", opened.shown())
                });
                return Ok((key, ptr));
            }
            if let Some(p) = t.loading_files.get(&key) {
                drop(t);
                self.counters.waited();
                self.wait(&p, req)?;
                continue;
            }
            break t.loading_files.start(key);
        };
        // A failure of the file's load is counted once, by the slot's flight.
        let flight = Flight::new(pending, move || self.lock().loading_files.end(&key));
        let loaded = loader::load(&opened, req.size(), &self.config);
        // The log line is made now and written after the lock is released.
        let note = loaded.as_ref().ok().map(|l| {
            self.counters.loaded(l, req.size());
            let threads = match l.read_threads {
                0 | 1 => String::new(),
                n => format!(" ({n} threads)"),
            };
            format!(
                "loaded {} bytes of {} by {}{threads} in {:.3} s",
                req.size(),
                opened.shown(),
                l.buffer.strategy().name(),
                l.elapsed.as_secs_f64()
            )
        });
        let mut t = self.lock();
        t.loading_files.end(&key);
        let out = loaded.map(|l| {
            let ptr = l.buffer.as_ptr().cast::<c_void>();
            t.buffers.insert(
                key,
                Held {
                    buffer: l.buffer,
                    users: 1,
                    _file: opened,
                },
            );
            (key, ptr)
        });
        drop(t);
        flight.settle(out.as_ref().map(|_| ()).map_err(Clone::clone));
        if let Some(note) = note {
            self.log(Level::Info, || note);
        }
        out
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
            .filter(|e| state == State::Loaded(e.ptr as *mut c_void))
        else {
            let what = match state {
                State::Empty => "is empty (NULL)".to_string(),
                State::Loading => "is being loaded by another thread".to_string(),
                State::Loaded(p) => format!("holds {p:p}, which this library did not give it"),
            };
            return Err(Error::new(
                ErrorKind::NotHeld,
                format!(
                    "release of slot {addr:#x} that holds no reference: the slot {what}; \
                     every release must match one acquire (or ensure-loaded) on the same \
                     slot. Nothing was freed"
                ),
            ));
        };
        e.refs -= 1;
        let (key, last) = (e.buf, e.refs == 0);
        let freed = if last {
            t.slots.remove(&addr);
            slot.publish(std::ptr::null_mut());
            t.unuse(key, self.config.keep)
        } else {
            None
        };
        drop(t);
        if let Some(b) = freed {
            self.counters.freed(1);
            self.log(Level::Debug, || format!("freed {} bytes", b.len()));
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
        let freed: Vec<Held> = idle.iter().filter_map(|k| t.buffers.remove(k)).collect();
        drop(t);
        let n = freed.len() as u64;
        self.counters.freed(n);
        n
    }

    /// Sets `*out` to `*base + offset` unless `*out` is already set.
    /// `base` must be a slot loaded by this registry and `offset` within its
    /// buffer. The slot, its buffer and the length are read under the lock,
    /// so a release racing this call cannot let an unchecked offset through.
    pub fn constant_address(
        &self,
        out: &AtomicPtr<c_void>,
        base: &AtomicPtr<c_void>,
        offset: i64,
    ) -> Result<()> {
        if !out.load(Ordering::Acquire).is_null() {
            return Ok(());
        }
        let b = Slot::new(base);
        let (p, len) = {
            let t = self.lock();
            let state = b.state();
            let held = match state {
                State::Loaded(p) => t
                    .slots
                    .get(&b.addr())
                    .filter(|e| e.ptr == p as usize)
                    .and_then(|e| t.buffers.get(&e.buf))
                    .map(|h| (p, h.buffer.len())),
                _ => None,
            };
            held.ok_or_else(|| {
                let what = match state {
                    State::Empty => "holds no buffer".to_string(),
                    State::Loading => "is still being loaded".to_string(),
                    State::Loaded(p) => format!("holds {p:p}, which this library did not give it"),
                };
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "constant address requested from slot {:#x}, which {what}; load the \
                         constants (om_load_constants_from_file) into that slot first",
                        b.addr()
                    ),
                )
            })?
        };
        if offset < 0 || offset as u64 > len as u64 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "constant offset {offset} is outside the loaded buffer ({len} bytes); the \
                     model and its constants file do not match: recompile or copy the \
                     matching file"
                ),
            ));
        }
        let addr = p
            .cast::<u8>()
            .wrapping_add(offset as usize)
            .cast::<c_void>();
        // Several threads may race to set the same constant to the same
        // address; the first wins and the rest agree.
        let _ = out.compare_exchange(
            std::ptr::null_mut(),
            addr,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        Ok(())
    }

    /// A snapshot of what is alive now and what happened so far.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        {
            let t = self.lock();
            s.live_buffers = t.buffers.len() as u64;
            s.kept_buffers = t.buffers.values().filter(|h| h.users == 0).count() as u64;
            s.references = t.slots.values().map(|e| e.refs).sum();
            s.live_slots = t.slots.len() as u64;
            s.live_bytes = t.buffers.values().map(|h| h.buffer.len() as u64).sum();
        }
        self.counters.fill(&mut s);
        s
    }
}

/// The error for a slot that holds the LOADING marker while no load of this
/// registry is in flight: something else wrote it.
fn not_our_load(addr: usize) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!(
            "slot {addr:#x} holds the value {LOADING:p}, the marker of a load in flight, but \
             no load of this slot is in flight in this process; only om-constants may write \
             the slot: start it at NULL and do not copy it between processes or models"
        ),
    )
}

/// The registry's tables, locked across `fork` (see `fork.rs`): no thread
/// of the parent can hold them when the child is made.
pub(crate) struct ForkGuard<'a>(MutexGuard<'a, Tables>);

impl ForkGuard<'_> {
    /// In the child: loads in flight in the parent are not in flight here
    /// (their threads were not copied), so their slots go back to NULL and
    /// their waits are forgotten; the next call loads afresh.
    pub(crate) fn forget_loads_in_flight(&mut self) {
        let t = &mut *self.0;
        for addr in t.loading_slots.forget() {
            // SAFETY: `addr` is the slot of a call that was in flight when
            // the process forked: valid memory for that call, copied into
            // the child, whose copy nothing else uses (the calling thread
            // does not exist here). The slot is only ever written through
            // atomics, so writing it as one is sound.
            unsafe {
                (*(addr as *const AtomicPtr<c_void>)).store(std::ptr::null_mut(), Ordering::Release)
            };
        }
        t.loading_files.forget().for_each(drop);
    }
}

/// The slot's buffer if it holds one: one acquire load, no lock, no shared
/// write. Ensure-loaded checks this first. (The C entry points do the same
/// check before any of this, in `ffi::peek`, so that a loaded slot never
/// reaches the registry.)
#[inline]
pub fn loaded(cell: &AtomicPtr<c_void>) -> Option<*mut c_void> {
    match Slot::new(cell).state() {
        State::Loaded(p) => Some(p),
        _ => None,
    }
}
