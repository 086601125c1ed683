//! The model's slot (its global `void *`) as a state machine, and waiting.
//!
//! A slot holds NULL (empty), [`LOADING`] (a thread claimed the load), or the
//! buffer's address. `NULL → LOADING` by compare-and-swap elects exactly one
//! loader; it publishes the address with release ordering, so whoever reads
//! the address with acquire ordering sees the loaded bytes. A thread that
//! finds `LOADING` spins briefly (most loads of a cached file are quick),
//! then blocks on the load's [`Pending`] until it completes or the wait
//! timeout passes: never a hang, never a burnt core.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sync::{AtomicPtr, Condvar, Mutex, Spin};

/// The LOADING sentinel: address 1 is odd and in the never-mapped first page,
/// so no buffer can ever have it.
pub const LOADING: *mut c_void = 1 as *mut c_void;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// NULL: nothing loaded.
    Empty,
    /// A thread is loading.
    Loading,
    /// The buffer's address.
    Loaded(*mut c_void),
}

/// A model's slot, borrowed for the duration of one call.
#[derive(Clone, Copy)]
pub struct Slot<'a>(&'a AtomicPtr<c_void>);

impl<'a> Slot<'a> {
    /// Wraps a slot.
    pub fn new(cell: &'a AtomicPtr<c_void>) -> Self {
        Slot(cell)
    }

    /// Its address: the registry's key for it.
    pub fn addr(self) -> usize {
        self.0 as *const AtomicPtr<c_void> as usize
    }

    /// The current state (acquire: a loaded address comes with its bytes).
    pub fn state(self) -> State {
        classify(self.0.load(Ordering::Acquire))
    }

    /// `from → LOADING`; true if this thread now owns the load.
    pub fn claim(self, from: *mut c_void) -> bool {
        self.0
            .compare_exchange(from, LOADING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Publishes `value` (an address, or NULL) with release ordering.
    pub fn publish(self, value: *mut c_void) {
        self.0.store(value, Ordering::Release);
    }

    /// Spins briefly while the slot is LOADING; returns the state seen last.
    pub fn spin_while_loading(self) -> State {
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
pub fn classify(p: *mut c_void) -> State {
    if p.is_null() {
        State::Empty
    } else if p == LOADING {
        State::Loading
    } else {
        State::Loaded(p)
    }
}

/// One load in flight: waiters block here until the loader completes it.
pub struct Pending {
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
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the loader's outcome and wakes every waiter.
    pub fn complete(&self, outcome: Result<()>) {
        let mut g = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(outcome);
        }
        drop(g);
        self.done.notify_all();
    }

    /// Blocks until the load completes (its outcome) or `timeout` passes
    /// (a `Timeout` error naming `what`).
    pub fn wait(&self, timeout: Duration, what: &str) -> Result<()> {
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
    fn wait_times_out_with_a_clear_error() {
        let p = Pending::new();
        let t = Instant::now();
        let e = p.wait(Duration::from_millis(50), "'m.bin'").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.message().contains("OM_CONSTANT_WAIT_TIMEOUT"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
