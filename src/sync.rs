//! The synchronisation primitives the slot and the registry use: std's, or
//! loom's when the crate is built with `--cfg loom` to model-check every
//! interleaving of the slot state machine (tests/loom.rs).

#[cfg(loom)]
pub(crate) use loom::sync::{atomic::AtomicPtr, Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{atomic::AtomicPtr, Arc, Condvar, Mutex, MutexGuard};

/// Lets another thread run while this one waits for a load: a short spin
/// (crossbeam's `Backoff`), or under loom a single scheduling point.
pub(crate) struct Spin {
    #[cfg(not(loom))]
    backoff: crossbeam_utils::Backoff,
    #[cfg(loom)]
    done: bool,
}

impl Spin {
    /// A fresh spin.
    pub(crate) fn new() -> Spin {
        Spin {
            #[cfg(not(loom))]
            backoff: crossbeam_utils::Backoff::new(),
            #[cfg(loom)]
            done: false,
        }
    }

    /// Waits a little longer each call; false once it is time to block.
    pub(crate) fn snooze(&mut self) -> bool {
        #[cfg(not(loom))]
        {
            if self.backoff.is_completed() {
                return false;
            }
            self.backoff.snooze();
            true
        }
        #[cfg(loom)]
        {
            if self.done {
                return false;
            }
            self.done = true;
            loom::thread::yield_now();
            true
        }
    }
}

impl Default for Spin {
    fn default() -> Self {
        Spin::new()
    }
}
