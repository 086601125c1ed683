//! Acquire and ensure-loaded: the run-once protocol of a slot, in the
//! manner of once_cell's `imp_std.rs`: the slot's states, the driver that
//! moves them in one `match`, and the guard whose drop makes the last
//! transition if the load never settles.
//!
//! A slot holds NULL (empty), [`LOADING`] (a thread claimed the load), or the
//! buffer's address. `NULL → LOADING` by compare-and-swap, under the
//! registry's lock and together with the load's [`Pending`], elects exactly
//! one loader; it publishes the address with release ordering, so whoever
//! reads it with acquire ordering sees the loaded bytes. A thread that finds
//! `LOADING` spins briefly (most loads of a cached file are quick), then
//! blocks on the load's `Pending` until it completes or the wait timeout
//! passes: never a hang, never a burnt core.
//!
//! The loader holds a [`Flight`], its right to finish the load. Settling it
//! wakes the waiters with the outcome; dropping it unsettled (a panic, caught
//! at the C ABI) runs its cleanup and wakes them with an error, so no waiter
//! is left until its timeout and no slot is left LOADING. The file's load
//! (`buffer.rs`) runs under a `Flight` of its own, keyed by file.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use super::pending::Pending;
use super::tables::{BufferEntry, SlotEntry};
use super::Registry;
use crate::error::{Error, ErrorKind, Result};
use crate::log::Level;
use crate::request::Request;
use crate::sync::{Arc, AtomicPtr, Spin};

/// The value a slot holds while a thread loads it: `(void *)
/// OM_CONSTANTS_LOADING`. Only the library writes it, and a slot never
/// keeps it once the load ends (it then holds the buffer, or NULL if the
/// load failed). A host that reads a slot directly and finds this value
/// must treat the slot as not loaded yet. The value is odd and in the
/// never-mapped first page, so no buffer can ever have it.
pub const OM_CONSTANTS_LOADING: usize = 1;

/// [`OM_CONSTANTS_LOADING`] as a pointer: what a slot holds while a thread
/// loads it.
// The value itself is the point (C hosts see it), not "some dangling
// pointer", so it is spelled out.
#[allow(clippy::manual_dangling_ptr)]
pub const LOADING: *mut c_void = OM_CONSTANTS_LOADING as *mut c_void;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// NULL: nothing loaded.
    Empty,
    /// A thread is loading.
    Loading,
    /// The buffer's address.
    Loaded(*mut c_void),
}

/// Reads a raw slot value.
pub(crate) fn classify(p: *mut c_void) -> SlotState {
    if p.is_null() {
        SlotState::Empty
    } else if p == LOADING {
        SlotState::Loading
    } else {
        SlotState::Loaded(p)
    }
}

/// A model's slot, borrowed for the duration of one call.
#[derive(Clone, Copy)]
pub(super) struct Slot<'a>(&'a AtomicPtr<c_void>);

impl<'a> Slot<'a> {
    /// Wraps a slot.
    pub(super) fn new(cell: &'a AtomicPtr<c_void>) -> Self {
        Slot(cell)
    }

    /// Its address: the registry's key for it.
    pub(super) fn addr(self) -> usize {
        self.0 as *const AtomicPtr<c_void> as usize
    }

    /// The current state (acquire: a loaded address comes with its bytes).
    pub(super) fn state(self) -> SlotState {
        classify(self.0.load(Ordering::Acquire))
    }

    /// `from → LOADING`; true if this thread now owns the load.
    fn claim(self, from: *mut c_void) -> bool {
        self.0
            .compare_exchange(from, LOADING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Publishes `value` (an address, or NULL) with release ordering.
    pub(super) fn publish(self, value: *mut c_void) {
        self.0.store(value, Ordering::Release);
    }

    /// Spins briefly while the slot is LOADING.
    fn spin_while_loading(self) {
        let mut spin = Spin::new();
        while self.state() == SlotState::Loading && spin.snooze() {}
    }
}

/// The slot's buffer if it holds one: one acquire load, no lock, no shared
/// write. Ensure-loaded checks this first. (The C entry points make the
/// same check before any of this, in `src/ffi/per_inference.rs`, so that a
/// loaded slot never reaches the registry.)
#[inline]
fn slot_buffer(cell: &AtomicPtr<c_void>) -> Option<*mut c_void> {
    match Slot::new(cell).state() {
        SlotState::Loaded(p) => Some(p),
        _ => None,
    }
}

/// What a call on a slot does with a reference.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Takes one more (acquire).
    Acquire,
    /// Takes one only if it loads (ensure-loaded).
    Ensure,
}

/// Log lines made during a load, written once its waiters are woken.
pub(super) type Notes = Vec<(Level, String)>;

/// The right to finish one load, held by the thread that started it.
pub(super) struct Flight<'a> {
    pending: Arc<Pending>,
    /// Undoes the start when the flight is dropped unsettled.
    cleanup: Option<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Flight<'a> {
    /// A flight for `pending`; `cleanup` (take the lock, end the flight,
    /// reset what it claimed) runs only if it is dropped unsettled.
    pub(super) fn new(pending: Arc<Pending>, cleanup: impl FnOnce() + 'a) -> Flight<'a> {
        Flight {
            pending,
            cleanup: Some(Box::new(cleanup)),
        }
    }

    /// The load is over and the caller has ended it in the tables: wake
    /// every waiter with `outcome`.
    pub(super) fn settle(mut self, outcome: Result<()>) {
        self.cleanup = None;
        self.pending.complete(outcome);
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        cleanup();
        self.pending.complete(Err(Error::new(
            ErrorKind::Internal,
            "the thread loading the constants failed unexpectedly (a bug in om-constants; \
             please report it); the slot was reset and the load may be retried",
        )));
    }
}

impl Registry {
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
        if let Some(p) = slot_buffer(cell) {
            return Ok(p);
        }
        self.get_or_load(cell, &req()?, Mode::Ensure)
    }

    /// **Acquire**: one more reference on the slot's buffer, loading it first
    /// if the slot is empty. Returns the buffer's address.
    pub fn acquire(&self, cell: &AtomicPtr<c_void>, req: &Request) -> Result<*mut c_void> {
        self.get_or_load(cell, req, Mode::Acquire)
    }

    /// Acquire or ensure-loaded on a slot that did not read as loaded: the
    /// driver over the slot's states. A loaded slot is checked (and, for
    /// acquire, counted); a loading one is waited for; an empty one is
    /// claimed and loaded by this thread.
    fn get_or_load(
        &self,
        cell: &AtomicPtr<c_void>,
        req: &Request,
        mode: Mode,
    ) -> Result<*mut c_void> {
        let slot = Slot::new(cell);
        let addr = slot.addr();
        loop {
            slot.spin_while_loading();
            let mut t = self.lock();
            let from = match slot.state() {
                SlotState::Loaded(p) => {
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
                    // A value this library did not write: refused, and the
                    // slot left as it was (the caller's, or another
                    // loader's, memory is not ours to replace).
                    return Err(not_ours(addr, p));
                }
                SlotState::Empty => std::ptr::null_mut(),
                SlotState::Loading => {
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
            // The slot was empty: whatever the registry had for this
            // address belongs to a model that is gone (docs/SEMANTICS.md,
            // "What the emitted code calls"), so its references go too.
            let stale = t.slots.remove(&addr);
            let freed = stale.and_then(|e| t.remove_user(e.buf, self.config.keep));
            let pending = t.loading_slots.start(addr);
            drop(t);
            // Waiters may already wait on this load: the old buffer is
            // unmapped and its file closed, and the line written, after
            // they are woken (`load_slot`).
            return self.load_slot(slot, req, pending, freed);
        }
    }

    /// Waits for another thread's load (of a slot or of a file).
    pub(super) fn wait(&self, pending: &Pending, req: &Request) -> Result<()> {
        let what = format!("constants file '{}'", req.fname().display());
        let r = pending.wait(self.config.wait_timeout, &what);
        if matches!(&r, Err(e) if e.kind() == ErrorKind::Timeout) {
            self.counters.timed_out();
        }
        r
    }

    /// This thread owns the slot's load: do it, publish, wake the waiters.
    /// `stale` is a buffer a gone model left in this slot, freed at the end.
    fn load_slot(
        &self,
        slot: Slot,
        req: &Request,
        pending: Arc<Pending>,
        stale: Option<BufferEntry>,
    ) -> Result<*mut c_void> {
        let addr = slot.addr();
        let flight = Flight::new(pending, move || {
            let mut t = self.lock();
            t.loading_slots.end(&addr);
            // A use the load took and never recorded (it panicked between).
            let unused = t
                .uses_in_flight
                .remove(&addr)
                .and_then(|key| t.remove_user(key, self.config.keep));
            slot.publish(std::ptr::null_mut());
            drop(t);
            drop(unused);
            self.counters.failed();
        });
        let result = self.buffer_for(addr, req);
        #[cfg(feature = "fault-injection")]
        std::thread::sleep(std::time::Duration::from_millis(
            crate::fault::get().record_delay_ms,
        ));
        let mut notes = Notes::new();
        let mut t = self.lock();
        let out = match result {
            Ok((key, ptr, n)) => {
                notes = n;
                t.uses_in_flight.remove(&addr);
                t.slots.insert(
                    addr,
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
        // Now that nobody waits on this load: free what a gone model left,
        // and write the lines.
        if let Some(old) = stale {
            drop(old);
            self.counters.freed(1);
            notes.push((
                Level::Info,
                format!("slot {addr:#x} was reused without a release; freed its old buffer"),
            ));
        }
        for (level, note) in notes {
            self.log(level, || note);
        }
        out
    }
}

/// The error for an acquire on a slot that holds a value this library did
/// not write; the slot is left as it is.
fn not_ours(addr: usize, p: *mut c_void) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!(
            "slot {addr:#x} holds {p:p}, which om-constants did not put there: only \
             om-constants may write the slot, which must start out NULL. If the model carries \
             its own constants loader, that loader filled it (docs/ONNX-MLIR.md). The slot is \
             left as it is"
        ),
    )
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::pending::Flights;
    use super::*;
    use std::time::Duration;

    #[test]
    fn claim_is_exclusive_and_publish_is_seen() {
        let cell = AtomicPtr::new(std::ptr::null_mut());
        let slot = Slot::new(&cell);
        assert_eq!(slot.state(), SlotState::Empty);
        assert!(slot.claim(std::ptr::null_mut()));
        assert!(!slot.claim(std::ptr::null_mut()), "second claim must fail");
        assert_eq!(slot.state(), SlotState::Loading);
        let mut x = 5u8;
        let p = &mut x as *mut u8 as *mut c_void;
        slot.publish(p);
        assert_eq!(slot.state(), SlotState::Loaded(p));
    }

    #[test]
    fn a_flight_dropped_unsettled_cleans_up_and_wakes_waiters_with_an_error() {
        let mut flights = Flights::default();
        let pending = flights.start(7u32);
        let waiter = {
            let p = flights.get(&7).expect("in flight");
            std::thread::spawn(move || p.wait(Duration::from_secs(30), "x"))
        };
        let cleaned = std::cell::Cell::new(false);
        drop(Flight::new(pending, || cleaned.set(true)));
        assert!(cleaned.get(), "the cleanup ran");
        let e = waiter.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");

        let pending = flights.start(8);
        let cleaned = std::cell::Cell::new(false);
        flights.end(&8);
        Flight::new(pending.clone(), || cleaned.set(true)).settle(Ok(()));
        assert!(!cleaned.get(), "a settled flight needs no cleanup");
        assert_eq!(pending.wait(Duration::from_millis(1), "x"), Ok(()));
        assert!(flights.get(&8).is_none());
    }
}
