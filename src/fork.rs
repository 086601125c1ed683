//! `fork` in a threaded host: the child gets a copy of memory but only the
//! forking thread. A lock held by another parent thread at that moment
//! would stay locked in the child forever, and a load in flight would have
//! no thread to finish it. So, with `pthread_atfork`, the registry's lock is
//! taken before the fork (no parent thread holds it when memory is copied),
//! released after it in the parent, and in the child released after the
//! loads that were in flight are forgotten: the child can acquire, release
//! and trim, and a slot that was loading loads again.
//!
//! Buffers the child inherited stay valid (mappings and heap are copied);
//! it may use and release them. A prefetch helper thread is not copied:
//! the buffer's drop in the child does not wait for it (`threads.rs`); nor
//! is the 2 MiB-page helper, whose queue's lock is held across the fork
//! too (`helper.rs`).

use std::panic::catch_unwind;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::helper::ForkHold as HelperHold;
use crate::registry::{ForkGuard, Registry};

/// The registry the handlers protect: the process-wide one, set once by
/// [`install`] before the handlers are registered.
static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(ptr::null_mut());

/// The guard taken by [`prepare`], handed to [`parent`] or [`child`]. The
/// registry's lock itself makes sure only one fork holds it at a time.
static GUARD: AtomicPtr<Held> = AtomicPtr::new(ptr::null_mut());

/// The locks held across a fork: the registry's, then the helper thread's
/// queue's (`helper.rs`). In the child the queue's goes first: the buffers
/// the child drops as it forgets loads in flight take it.
struct Held {
    registry: ForkGuard<'static>,
    helper: Option<HelperHold>,
}

extern "C" fn prepare() {
    // Registered twice (a child that took the registry's making over from
    // its parent, `global.rs`), the handlers run twice per fork: the second
    // prepare finds the guard taken and does nothing, and the second
    // parent or child finds none to release.
    if !GUARD.load(Ordering::Acquire).is_null() {
        return;
    }
    let registry = REGISTRY.load(Ordering::Acquire);
    // SAFETY: REGISTRY is NULL or the 'static registry given to install.
    let Some(registry) = (unsafe { registry.as_ref() }) else {
        return;
    };
    // Nothing may unwind into fork(); a failure here only means the child
    // is not protected.
    let _ = catch_unwind(|| {
        let registry = registry.lock_for_fork();
        let guard = Box::new(Held {
            registry,
            helper: Some(crate::helper::hold_for_fork()),
        });
        GUARD.store(Box::into_raw(guard), Ordering::Release);
    });
}

fn take() -> Option<Box<Held>> {
    let p = GUARD.swap(ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: a non-NULL `p` came from Box::into_raw in `prepare`, and the
    // swap hands it to exactly one caller.
    (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
}

extern "C" fn parent() {
    drop(take());
}

extern "C" fn child() {
    let _ = catch_unwind(|| {
        if let Some(mut held) = take() {
            drop(held.helper.take());
            held.registry.forget_loads_in_flight();
        }
    });
}

/// Registers the handlers for `registry`, once per process (called as the
/// process-wide registry is made).
pub(crate) fn install(registry: &'static Registry) {
    REGISTRY.store(
        registry as *const Registry as *mut Registry,
        Ordering::Release,
    );
    crate::sys::at_fork(prepare, parent, child);
}
