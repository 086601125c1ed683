//! A load in flight, as its waiters see it: a [`Pending`] they block on
//! until the loader completes it, and [`Flights`], the table of those in
//! flight by key (one per slot, and one per file, in the registry's tables).
//! The loader's side, the guard that completes one, is in `once.rs`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sync::{Arc, Condvar, Mutex};

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

    /// Ends the load for `key`; its `Flight` (`once.rs`) wakes the waiters.
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
