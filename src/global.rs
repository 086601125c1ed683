//! The process-wide registry behind the C ABI, made on first use from the
//! environment's options; making it also installs the fork handlers
//! (`fork.rs`), so that no fork can find its lock held by another thread.
//!
//! A one-time initialiser of its own rather than `once_cell`'s, for `fork`:
//! a child forked while another parent thread was making the registry would
//! wait for ever for a thread it does not have. Here the "running" state
//! names the process that runs the initialiser, so a child that finds its
//! parent's mark takes the initialisation over. Nothing in the initialiser
//! blocks: a bad option's message is written after the registry is
//! published, by the thread that made it (docs/GUARANTEES.md).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::registry::Registry;

/// Not made yet.
const UNINIT: u64 = 0;
/// Made and published.
const DONE: u64 = 1;

/// The state of [`STORAGE`]: [`UNINIT`], [`DONE`], or `running(pid)`: the
/// process `pid` is making it.
static STATE: AtomicU64 = AtomicU64::new(UNINIT);

fn running(pid: u32) -> u64 {
    // Never 0 or 1: pids are positive, and shifted past the two states.
    (u64::from(pid) << 1) | 2 << 32
}

/// Where the registry lives once made.
struct Storage(UnsafeCell<MaybeUninit<Registry>>);

// SAFETY: the cell is written only by the one thread that moved STATE to
// this process's `running` mark, while every other thread of the process
// waits for DONE; after DONE (published with Release, read with Acquire)
// it is only read, and Registry is Sync.
unsafe impl Sync for Storage {}

static STORAGE: Storage = Storage(UnsafeCell::new(MaybeUninit::uninit()));

/// The process-wide registry behind the C ABI, configured from the
/// environment on first use. Once made, one atomic load.
pub fn global() -> &'static Registry {
    if STATE.load(Ordering::Acquire) == DONE {
        // SAFETY: DONE is stored (Release) only after STORAGE was written.
        return unsafe { (*STORAGE.0.get()).assume_init_ref() };
    }
    make()
}

#[cold]
fn make() -> &'static Registry {
    let me = running(std::process::id());
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        let state = STATE.load(Ordering::Acquire);
        if state == DONE {
            // SAFETY: as in `global`.
            return unsafe { (*STORAGE.0.get()).assume_init_ref() };
        }
        if state == me {
            // Another thread of this process is making it: a few
            // microseconds of work that never blocks.
            backoff.snooze();
            continue;
        }
        // UNINIT, or the mark of another process: this is a child forked
        // while its parent was making the registry, and the thread that was
        // doing it does not exist here. Take it over.
        if STATE
            .compare_exchange(state, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return publish();
        }
    }
}

/// Makes the registry and publishes it; this thread holds the mark.
fn publish() -> &'static Registry {
    let (config, problems) = Config::from_lookup(|name| std::env::var_os(name));
    // The fault-injection build reads OM_CONSTANT_FAULTS, for C hosts.
    #[cfg(feature = "fault-injection")]
    let problems = {
        let mut p = problems;
        p.extend(crate::fault::from_env());
        let delay = crate::fault::get().init_delay_ms;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        p
    };
    let level = config.log;
    // SAFETY: this thread holds the process's mark: no other thread reads
    // or writes STORAGE until DONE is published below. A registry a parent
    // was half-way through making is overwritten, never dropped (its
    // parts may be half-made).
    let registry: &'static Registry = unsafe {
        (*STORAGE.0.get()).write(Registry::new(config));
        (*STORAGE.0.get()).assume_init_ref()
    };
    crate::fork::install(registry);
    STATE.store(DONE, Ordering::Release);
    // Once nobody waits on this thread (on Windows it takes the loader lock).
    crate::sys::pin_library();
    // Written once nobody waits on this thread.
    for p in &problems {
        crate::log::emit(level, crate::log::Level::Error, p);
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_neither_state_and_differ_by_process() {
        for pid in [1, 2, 4_194_304, u32::MAX] {
            assert!(running(pid) != UNINIT && running(pid) != DONE);
        }
        assert_ne!(running(10), running(11));
    }

    #[test]
    fn the_registry_is_made_once() {
        let a = global() as *const Registry;
        let b = std::thread::spawn(|| global() as *const Registry as usize)
            .join()
            .unwrap();
        assert_eq!(a as usize, b);
        assert_eq!(STATE.load(Ordering::Acquire), DONE);
    }
}
