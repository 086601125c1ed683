//! Worker threads that are safe to start inside `dlopen`.
//!
//! Compilers emit a global constructor that loads the constants, so the
//! library often runs inside `dlopen`, which holds glibc's loader lock. A
//! `std::thread` registers a thread-local destructor as it starts
//! (`__cxa_thread_atexit_impl`), and that takes the loader lock: the new
//! thread blocks until `dlopen` returns, `dlopen` waits for the load, the
//! load joins the thread, and the host hangs forever. So the library's
//! workers are plain pthreads that run a closure and touch no Rust
//! thread-local with a destructor. (Found by the constructor-style model
//! test with the parallel `read` strategy.)

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::sys::{self, Job, ThreadId};

/// How [`run_all`] starts a thread: `sys::spawn`, or in tests a stand-in
/// that refuses, as `pthread_create` does when threads or memory run out.
type Starter = for<'j> unsafe fn(Job<'j>) -> Result<ThreadId, Job<'j>>;

/// Runs every job, each but the first on its own thread (inline where no
/// thread can be had), and returns when all have finished. A job that
/// panicked leaves its result `None`.
pub(crate) fn run_all<'a, T: Send + 'a>(
    jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>,
) -> Vec<Option<T>> {
    run_with(jobs, sys::spawn)
}

fn run_with<'a, T: Send + 'a>(
    jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>,
    start: Starter,
) -> Vec<Option<T>> {
    let mut results: Vec<Option<T>> = jobs.iter().map(|_| None).collect();
    run_into(jobs, &mut results, start);
    results
}

/// The body of [`run_with`], apart so that the borrows of `results` end
/// before it is returned.
///
/// A started thread may not run for a long time: inside `DllMain`, Windows
/// runs a new thread only once the loader lock is released, which is after
/// the load that waits for it. So each job is handed over in a [`Handoff`]
/// that the thread and the caller race to claim: after its own job, the
/// caller runs every job no thread has claimed yet, waits for the jobs
/// that threads did claim to finish (not for those threads to exit: on
/// Windows a thread's exit needs the loader lock, which another thread may
/// hold while it waits for this very load), and lets every thread go
/// (`sys::release_thread`: joined where a thread's start and exit need no lock, as
/// on POSIX; not waited for on Windows).
fn run_into<'a, T: Send + 'a>(
    jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>,
    results: &mut [Option<T>],
    start: Starter,
) {
    let mut handed = Vec::new();
    let mut first = None;
    for (job, out) in jobs.into_iter().zip(results.iter_mut()) {
        let work: Job<'_> = Box::new(move || *out = Some(job()));
        if first.is_none() {
            first = Some(work);
            continue;
        }
        let handoff = Handoff::new(work);
        let theirs = Arc::clone(&handoff);
        // SAFETY: the thread's job borrows nothing: it owns its Arc.
        match unsafe {
            start(Box::new(move || {
                theirs.run();
            }))
        } {
            Ok(id) => handed.push((handoff, id)),
            Err(_) => {
                handoff.run();
            }
        }
    }
    if let Some(work) = first {
        let _ = catch_unwind(AssertUnwindSafe(work));
    }
    for (handoff, id) in handed {
        if !handoff.run() {
            handoff.wait_finished();
        }
        sys::release_thread(id);
    }
}

/// A job that exactly one of a worker thread and the caller runs: the one
/// that claims it first.
struct Handoff {
    claimed: AtomicBool,
    /// The job, its borrows' lifetime erased: see [`Handoff::new`].
    job: UnsafeCell<Option<Job<'static>>>,
    /// Set (and waited for) once the claimant's job has run and is dropped.
    finished: Mutex<bool>,
    finished_changed: Condvar,
}

// SAFETY: `job` is touched only by the one party whose swap of `claimed`
// from false to true succeeded; the other never reads it.
unsafe impl Sync for Handoff {}

impl Handoff {
    fn new(job: Job<'_>) -> Arc<Handoff> {
        // SAFETY: only the lifetime changes. The job runs, and its borrows
        // are used, only by its claimant: the caller, or a worker that the
        // caller waits for (wait_finished) before those borrows end
        // (run_into). A worker that loses the claim, and may outlive the
        // borrows, drops its Arc without touching the job, which the
        // caller has already taken.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(job) };
        Arc::new(Handoff {
            claimed: AtomicBool::new(false),
            job: UnsafeCell::new(Some(job)),
            finished: Mutex::new(false),
            finished_changed: Condvar::new(),
        })
    }

    /// Runs the job if this call claims it first; true if it did.
    fn run(&self) -> bool {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return false;
        }
        // SAFETY: the swap above made this the only claimant (see Sync).
        let job = unsafe { (*self.job.get()).take() };
        if let Some(job) = job {
            // A panicking job leaves its result None. The job is consumed
            // (dropped) here, before `finished` is set.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
        *self.finished.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.finished_changed.notify_all();
        true
    }

    /// Waits until the job's claimant has run it: the caller's side, for a
    /// job a worker claimed (a running worker, so this ends).
    fn wait_finished(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        while !*finished {
            finished = self
                .finished_changed
                .wait(finished)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A background thread running a `'static` job, let go on drop
/// (`sys::release_thread`: joined on POSIX, never waited for on Windows).
///
/// It may outlive the call that started it, so the object holding this
/// library's code is pinned first: `dlclose` can then never unmap code the
/// thread is running (docs/ARCHITECTURE.md, "Unload"). In a child forked
/// after it started, the thread does not exist: dropping it there does not
/// join.
pub(crate) struct Background {
    id: Option<ThreadId>,
    pid: u32,
}

impl Background {
    /// Starts `job`; `None` if no thread can be had.
    pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) -> Option<Background> {
        // Pin the object that holds this code (the shared library, or the
        // model or program it was linked into statically); the shared
        // library is also linked with `-z nodelete` (build.rs).
        sys::pin_object_at(sys::page_size as fn() -> usize as usize);
        // SAFETY: the job borrows nothing ('static).
        unsafe { sys::spawn(Box::new(job)) }
            .ok()
            .map(|id| Background {
                id: Some(id),
                pid: std::process::id(),
            })
    }
}

impl Drop for Background {
    /// Lets the thread go (`sys::release_thread`): on POSIX it is joined (a raw
    /// pthread always starts, and its job must end soon, as the prefetch
    /// helper's does once told to stop); on Windows it is never waited
    /// for, since the drop may run under the loader lock (a model's
    /// `DLL_PROCESS_DETACH`) that the thread's start and exit need: the
    /// module is pinned, and the thread owns what it uses.
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if self.pid == std::process::id() {
                sys::release_thread(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_job_runs_once_and_results_come_back_in_order() {
        let hits = AtomicUsize::new(0);
        let jobs: Vec<Box<dyn FnOnce() -> usize + Send + '_>> = (0..5usize)
            .map(|i| {
                let hits = &hits;
                Box::new(move || {
                    hits.fetch_add(1, Ordering::Relaxed);
                    i * 10
                }) as Box<dyn FnOnce() -> usize + Send>
            })
            .collect();
        let r = run_all(jobs);
        assert_eq!(r, vec![Some(0), Some(10), Some(20), Some(30), Some(40)]);
        assert_eq!(hits.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_panicking_job_yields_none_not_a_crash() {
        let jobs: Vec<Box<dyn FnOnce() -> u8 + Send>> = vec![
            Box::new(|| 1),
            Box::new(|| std::panic::resume_unwind(Box::new("boom"))),
            Box::new(|| 3),
        ];
        assert_eq!(run_all(jobs), vec![Some(1), None, Some(3)]);
    }

    /// A `pthread_create` that always fails.
    unsafe fn refuse(job: Job<'_>) -> Result<ThreadId, Job<'_>> {
        Err(job)
    }

    /// A `pthread_create` that fails every other time.
    unsafe fn refuse_every_other(job: Job<'_>) -> Result<ThreadId, Job<'_>> {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        if CALLS.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            return Err(job);
        }
        // SAFETY: run_into joins every thread it starts before returning.
        unsafe { sys::spawn(job) }
    }

    #[test]
    fn jobs_run_inline_when_no_thread_can_be_started() {
        // The first job always runs on the caller, and so do refused ones:
        // all 6, or the first and the 3 refused of the other 5 starts.
        for (starter, inline_jobs) in [(refuse as Starter, 6), (refuse_every_other, 4)] {
            let caller = std::thread::current().id();
            let jobs: Vec<Box<dyn FnOnce() -> (usize, bool) + Send>> = (0..6usize)
                .map(|i| {
                    Box::new(move || (i, std::thread::current().id() == caller))
                        as Box<dyn FnOnce() -> (usize, bool) + Send>
                })
                .collect();
            let r = run_with(jobs, starter);
            let order: Vec<usize> = r.iter().map(|x| x.map_or(usize::MAX, |x| x.0)).collect();
            assert_eq!(
                order,
                vec![0, 1, 2, 3, 4, 5],
                "every job ran, results in order"
            );
            // At least those: the caller also runs any job whose thread has
            // not claimed it by the time the caller's own job is done.
            let inline = r.iter().filter(|x| x.is_some_and(|x| x.1)).count();
            assert!(
                inline >= inline_jobs,
                "jobs run on the calling thread: {r:?}"
            );
        }
    }

    #[cfg(windows)]
    static GATE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    #[cfg(windows)]
    static OPENED: std::sync::Condvar = std::sync::Condvar::new();
    #[cfg(windows)]
    static LATE: AtomicUsize = AtomicUsize::new(0);

    #[cfg(windows)]
    /// A thread that starts only when the test opens the gate: what
    /// `CreateThread` gives inside `DllMain`, where a new thread waits for
    /// the loader lock that the loading thread holds.
    unsafe fn start_late(job: Job<'_>) -> Result<ThreadId, Job<'_>> {
        // SAFETY: the jobs run_into hands out own everything they use.
        unsafe {
            sys::spawn(Box::new(move || {
                let mut open = GATE.lock().unwrap();
                while !*open {
                    open = OPENED.wait(open).unwrap();
                }
                drop(open);
                job();
                LATE.fetch_add(1, Ordering::SeqCst);
            }))
        }
    }

    /// Windows only: there, a thread whose job the caller took is not
    /// waited for (`sys::release_thread`); POSIX threads always start, and are.
    #[cfg(windows)]
    #[test]
    fn jobs_of_threads_that_have_not_started_run_on_the_caller() {
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let jobs: Vec<Box<dyn FnOnce() + Send>> = (0..6)
            .map(|_| {
                let hits = hits.clone();
                Box::new(move || {
                    hits.fetch_add(1, Ordering::SeqCst);
                }) as Box<dyn FnOnce() + Send>
            })
            .collect();
        // Returns although no thread has run yet, with every job run once,
        // on the caller. (Waiting for the threads would hang: the test
        // fails after 60 s instead.)
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let caller = std::thread::current().id();
            let on_caller: Vec<Box<dyn FnOnce() -> bool + Send>> = jobs
                .into_iter()
                .map(|job| {
                    Box::new(move || {
                        job();
                        std::thread::current().id() == caller
                    }) as Box<dyn FnOnce() -> bool + Send>
                })
                .collect();
            let _ = tx.send(run_with(on_caller, start_late));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("run_with waited for threads that had not started");
        assert_eq!(r, vec![Some(true); 6]);
        *GATE.lock().unwrap() = true;
        OPENED.notify_all();
        while LATE.load(Ordering::SeqCst) < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 6, "late threads ran nothing");
    }
}
