//! The run-once protocol of a load, in the manner of once_cell's
//! `imp_std.rs`: the state encoding of the model's slot, the loads in flight
//! and the guard that ends one.
//!
//! A slot holds NULL (empty), [`LOADING`] (a thread claimed the load), or the
//! buffer's address. `NULL → LOADING` by compare-and-swap elects exactly one
//! loader; it publishes the address with release ordering, so whoever reads
//! the address with acquire ordering sees the loaded bytes. A thread that
//! finds `LOADING` spins briefly (most loads of a cached file are quick),
//! then blocks on the load's [`Pending`] until it completes or the wait
//! timeout passes: never a hang, never a burnt core.
//!
//! The same protocol runs twice per load, once per slot and once per file
//! (two slots that load one file read it once): [`Flights`] holds the loads
//! in flight by key, in the registry's tables (so only under its lock), and
//! a [`Flight`] is the loader's right to finish one. Settling it wakes the
//! waiters with the outcome; dropping it unsettled (a panic, caught at the C
//! ABI) runs its cleanup and wakes them with an error, so no waiter is left
//! until its timeout and no slot is left LOADING.

use std::collections::HashMap;
use std::hash::Hash;
use std::os::raw::c_void;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sync::{Arc, AtomicPtr, Condvar, Mutex, Spin};

/// The LOADING sentinel, as the header names it (`OM_CONSTANTS_LOADING`,
/// `ffi`): address 1 is odd and in the never-mapped first page, so no
/// buffer can ever have it.
// The value itself is the point (C hosts see it), not "some dangling
// pointer", so it is spelled out.
#[allow(clippy::manual_dangling_ptr)]
pub const LOADING: *mut c_void = crate::ffi::OM_CONSTANTS_LOADING as *mut c_void;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// NULL: nothing loaded.
    Empty,
    /// A thread is loading.
    Loading,
    /// The buffer's address.
    Loaded(*mut c_void),
}

/// A model's slot, borrowed for the duration of one call.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a>(&'a AtomicPtr<c_void>);

impl<'a> Slot<'a> {
    /// Wraps a slot.
    pub(crate) fn new(cell: &'a AtomicPtr<c_void>) -> Self {
        Slot(cell)
    }

    /// Its address: the registry's key for it.
    pub(crate) fn addr(self) -> usize {
        self.0 as *const AtomicPtr<c_void> as usize
    }

    /// The current state (acquire: a loaded address comes with its bytes).
    pub(crate) fn state(self) -> State {
        classify(self.0.load(Ordering::Acquire))
    }

    /// `from → LOADING`; true if this thread now owns the load.
    pub(crate) fn claim(self, from: *mut c_void) -> bool {
        self.0
            .compare_exchange(from, LOADING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Publishes `value` (an address, or NULL) with release ordering.
    pub(crate) fn publish(self, value: *mut c_void) {
        self.0.store(value, Ordering::Release);
    }

    /// Spins briefly while the slot is LOADING; returns the state seen last.
    pub(crate) fn spin_while_loading(self) -> State {
        let mut spin = Spin::new();
        loop {
            let s = self.state();
            if s != State::Loading || !spin.snooze() {
                return s;
            }
        }
    }
}

/// Reads a raw slot value.
pub(crate) fn classify(p: *mut c_void) -> State {
    if p.is_null() {
        State::Empty
    } else if p == LOADING {
        State::Loading
    } else {
        State::Loaded(p)
    }
}

/// One load in flight: waiters block here until the loader completes it.
pub(crate) struct Pending {
    outcome: Mutex<Option<Result<()>>>,
    done: Condvar,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            outcome: Mutex::new(None),
            done: Condvar::new(),
        }
    }
}

impl Pending {
    /// A load that has not finished.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records the loader's outcome and wakes every waiter.
    pub(crate) fn complete(&self, outcome: Result<()>) {
        let mut g = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(outcome);
        }
        drop(g);
        self.done.notify_all();
    }

    /// Blocks until the load completes (its outcome) or `timeout` passes
    /// (a `Timeout` error naming `what`).
    pub(crate) fn wait(&self, timeout: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut g = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = g.as_ref() {
                return outcome.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "gave up after {:.1} s waiting for another thread to load {what}; \
                         that load is still running. If loads this large are expected to \
                         take longer, raise OM_CONSTANT_WAIT_TIMEOUT (seconds)",
                        timeout.as_secs_f64()
                    ),
                ));
            }
            g = self
                .done
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The loads in flight, at most one per key; kept in the registry's tables
/// and touched only under its lock.
pub(crate) struct Flights<K>(HashMap<K, Arc<Pending>>);

impl<K> Default for Flights<K> {
    fn default() -> Self {
        Flights(HashMap::new())
    }
}

impl<K: Eq + Hash + Copy> Flights<K> {
    /// The load in flight for `key`, to wait for.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<Pending>> {
        self.0.get(key).cloned()
    }

    /// Starts the load for `key`, which has none in flight.
    pub(crate) fn start(&mut self, key: K) -> Arc<Pending> {
        let pending = Arc::new(Pending::new());
        self.0.insert(key, pending.clone());
        pending
    }

    /// Ends the load for `key`; its [`Flight`] wakes the waiters.
    pub(crate) fn end(&mut self, key: &K) {
        self.0.remove(key);
    }

    /// Forgets every load in flight (a forked child: their threads are not
    /// in this process); yields their keys.
    #[cfg_attr(loom, allow(dead_code))] // used by fork.rs, not built under loom
    pub(crate) fn forget(&mut self) -> impl Iterator<Item = K> + '_ {
        self.0.drain().map(|(k, _)| k)
    }
}

/// The right to finish one load, held by the thread that started it.
pub(crate) struct Flight<'a> {
    pending: Arc<Pending>,
    /// Undoes the start when the flight is dropped unsettled.
    cleanup: Option<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Flight<'a> {
    /// A flight for `pending`; `cleanup` (take the lock, end the flight,
    /// reset what it claimed) runs only if it is dropped unsettled.
    pub(crate) fn new(pending: Arc<Pending>, cleanup: impl FnOnce() + 'a) -> Flight<'a> {
        Flight {
            pending,
            cleanup: Some(Box::new(cleanup)),
        }
    }

    /// The load is over and the caller has ended it in the tables: wake
    /// every waiter with `outcome`.
    pub(crate) fn settle(mut self, outcome: Result<()>) {
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn claim_is_exclusive_and_publish_is_seen() {
        let cell = AtomicPtr::new(std::ptr::null_mut());
        let slot = Slot::new(&cell);
        assert_eq!(slot.state(), State::Empty);
        assert!(slot.claim(std::ptr::null_mut()));
        assert!(!slot.claim(std::ptr::null_mut()), "second claim must fail");
        assert_eq!(slot.state(), State::Loading);
        let mut x = 5u8;
        let p = &mut x as *mut u8 as *mut c_void;
        slot.publish(p);
        assert_eq!(slot.state(), State::Loaded(p));
    }

    #[test]
    fn waiters_get_the_loaders_outcome() {
        let pending = Arc::new(Pending::new());
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let p = pending.clone();
                std::thread::spawn(move || p.wait(Duration::from_secs(30), "x"))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        pending.complete(Err(Error::new(ErrorKind::Io, "disk on fire")));
        for w in waiters {
            let e = w.join().unwrap().unwrap_err();
            assert_eq!(e.message(), "disk on fire");
        }
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

    #[test]
    fn wait_times_out_with_a_clear_error() {
        let p = Pending::new();
        let t = Instant::now();
        let e = p.wait(Duration::from_millis(50), "'m.bin'").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.message().contains("OM_CONSTANT_WAIT_TIMEOUT"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
