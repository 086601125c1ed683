//! Acquire and ensure-loaded: a slot's states, and its load as one key of
//! the run-once protocol (`flight.rs`).
//!
//! A slot holds NULL (empty), [`LOADING`] (a thread claimed the load), or an
//! address. `NULL → LOADING` by compare-and-swap, under the registry's lock
//! and together with the start of the load's flight, elects exactly one
//! loader; it publishes the address with release ordering, so whoever reads
//! it with acquire ordering sees the loaded bytes. A thread that finds
//! `LOADING` spins briefly (most loads of a cached file are quick), then
//! waits for the flight until it ends or the wait timeout passes: never a
//! hang, never a burnt core. A load that never finishes (a panic, caught at
//! the C ABI) puts the slot back to NULL.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use super::flight::{run_once, Flights, Look, Once, Pending};
use super::tables::{BufKey, BufferEntry, Registry, SlotEntry, Tables};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{Level, Notes};
use crate::request::Request;
use crate::sync::{AtomicPtr, MutexGuard, Spin};

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
    /// An address: a buffer this library loaded, or a value it did not
    /// write (another loader's, or the host's).
    Holds(*mut c_void),
}

/// Reads a raw slot value.
pub(crate) fn classify(p: *mut c_void) -> SlotState {
    if p.is_null() {
        SlotState::Empty
    } else if p == LOADING {
        SlotState::Loading
    } else {
        SlotState::Holds(p)
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
        SlotState::Holds(p) => Some(p),
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
        self.slot_call(cell, &req()?, Mode::Ensure)
    }

    /// **Acquire**: one more reference on the slot's buffer, loading it first
    /// if the slot is empty. Returns the buffer's address.
    pub fn acquire(&self, cell: &AtomicPtr<c_void>, req: &Request) -> Result<*mut c_void> {
        self.slot_call(cell, req, Mode::Acquire)
    }

    fn slot_call(
        &self,
        cell: &AtomicPtr<c_void>,
        req: &Request,
        mode: Mode,
    ) -> Result<*mut c_void> {
        run_once(&SlotLoad {
            reg: self,
            slot: Slot::new(cell),
            req,
            mode,
        })
    }
}

/// A call on a slot that did not read as loaded, as a run-once load keyed
/// by the slot's address: a loaded slot is checked (and, for acquire,
/// counted); a loading one is waited for; an empty one is claimed and
/// loaded by this thread.
struct SlotLoad<'a> {
    reg: &'a Registry,
    slot: Slot<'a>,
    req: &'a Request<'a>,
    mode: Mode,
}

impl Once for SlotLoad<'_> {
    type Tables = Tables;
    type Key = usize;
    type Value = *mut c_void;
    /// The buffer a gone model left in the slot, freed after the load.
    type Start = Option<BufferEntry>;
    type Loaded = (Option<BufferEntry>, Result<(BufKey, *mut c_void, Notes)>);
    type Later = (Option<BufferEntry>, Notes);
    type Unused = Option<BufferEntry>;

    fn key(&self) -> usize {
        self.slot.addr()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.reg.lock()
    }

    fn flights(t: &mut Tables) -> &mut Flights<usize> {
        &mut t.loading_slots
    }

    fn before_look(&self) {
        self.slot.spin_while_loading();
    }

    fn look(&self, t: &mut Tables) -> Result<Look<*mut c_void, Self::Start>> {
        let addr = self.slot.addr();
        let from = match self.slot.state() {
            SlotState::Holds(p) => {
                if let Some(e) = t.slots.get_mut(&addr).filter(|e| e.ptr == p as usize) {
                    e.check(addr, self.req)?;
                    if self.mode == Mode::Acquire {
                        e.refs += 1;
                    }
                    return Ok(Look::Found(p));
                }
                if self.mode == Mode::Ensure {
                    // As the fast path does: a loaded slot is trusted.
                    return Ok(Look::Found(p));
                }
                // A value this library did not write: refused, and the
                // slot left as it was (the caller's, or another loader's,
                // memory is not ours to replace).
                return Err(not_ours(addr, p));
            }
            SlotState::Empty => std::ptr::null_mut(),
            SlotState::Loading => {
                // A load's claim and its flight are made, and its end is
                // published and the flight ended, under this lock: LOADING
                // with no flight is no load of ours.
                return match t.loading_slots.get(&addr) {
                    Some(pending) => Ok(Look::Wait(pending)),
                    None => Err(not_our_load(addr)),
                };
            }
        };
        if !self.slot.claim(from) {
            return Ok(Look::Again);
        }
        // The slot was empty: whatever the registry had for this address
        // belongs to a model that is gone (docs/SEMANTICS.md, "What the
        // emitted code calls"), so its references go too. Waiters may
        // already wait on this load: the old buffer is unmapped and its
        // file closed, and the line written, after they are woken.
        let stale = t.slots.remove(&addr);
        Ok(Look::Start(
            stale.and_then(|e| t.remove_user(e.buf, self.reg.config.keep)),
        ))
    }

    fn wait(&self, pending: &Pending) -> Result<()> {
        // Only a slot's wait is logged: a file's wait happens inside a
        // slot's load, which logs its own outcome.
        let name = self.req.fname().display();
        self.reg.log(Level::Debug, || {
            format!("waiting for another thread to load '{name}'")
        });
        self.reg
            .wait_for(pending, &format!("constants file '{name}'"))
    }

    fn load(&self, stale: Self::Start) -> Self::Loaded {
        let found = self.reg.buffer_for(self.slot.addr(), self.req);
        #[cfg(feature = "fault-injection")]
        std::thread::sleep(std::time::Duration::from_millis(
            crate::fault::get().record_delay_ms,
        ));
        (stale, found)
    }

    fn record(
        &self,
        t: &mut Tables,
        (stale, found): Self::Loaded,
    ) -> (Result<*mut c_void>, Self::Later) {
        let addr = self.slot.addr();
        match found {
            Ok((key, ptr, notes)) => {
                t.uses_in_flight.remove(&addr);
                t.slots.insert(
                    addr,
                    SlotEntry {
                        buf: key,
                        ptr: ptr as usize,
                        refs: 1,
                        fname: self.req.fname.to_os_string(),
                        size: self.req.size,
                    },
                );
                self.slot.publish(ptr);
                (Ok(ptr), (stale, notes))
            }
            Err(e) => {
                self.reg.counters.failed();
                self.slot.publish(std::ptr::null_mut());
                (Err(e), (stale, Notes::default()))
            }
        }
    }

    fn after(&self, (stale, mut notes): Self::Later, _: &mut Result<*mut c_void>) {
        let reg = self.reg;
        // Now that nobody waits on this load: free what a gone model left,
        // and write the lines.
        if let Some(old) = stale {
            drop(old);
            reg.counters.freed(1);
            notes.push(
                Level::Info,
                format!(
                    "slot {:#x} was reused without a release; freed its old buffer",
                    self.slot.addr()
                ),
            );
        }
        notes.write(reg.config.log);
    }

    fn abandon(&self, t: &mut Tables) -> Option<BufferEntry> {
        let reg = self.reg;
        // A use the load took and never recorded (it panicked between).
        let unused = t
            .uses_in_flight
            .remove(&self.slot.addr())
            .and_then(|key| t.remove_user(key, reg.config.keep));
        self.slot.publish(std::ptr::null_mut());
        reg.counters.failed();
        unused
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(slot.state(), SlotState::Holds(p));
    }
}
