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

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sys::{self, Job, ThreadId};

/// How [`run_all`] starts a thread: `sys::spawn`, or in tests a stand-in
/// that refuses, as `pthread_create` does when threads or memory run out.
type Starter = for<'j> unsafe fn(Job<'j>) -> Result<ThreadId, Job<'j>>;

/// Runs every job, each but the first on its own thread (inline where no
/// thread can be had), and returns when all have finished. A job that
/// panicked leaves its result `None`.
pub fn run_all<'a, T: Send + 'a>(jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>) -> Vec<Option<T>> {
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
fn run_into<'a, T: Send + 'a>(
    jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>,
    results: &mut [Option<T>],
    start: Starter,
) {
    let mut started = Joiner(Vec::new());
    let mut first = None;
    for (job, out) in jobs.into_iter().zip(results.iter_mut()) {
        let work: Job<'_> = Box::new(move || *out = Some(job()));
        if first.is_none() {
            first = Some(work);
            continue;
        }
        // SAFETY: `started` joins every thread before this function returns
        // or unwinds, while `jobs`' borrows and `results` are still alive.
        match unsafe { start(work) } {
            Ok(id) => started.0.push(id),
            Err(work) => {
                let _ = catch_unwind(AssertUnwindSafe(work));
            }
        }
    }
    if let Some(work) = first {
        let _ = catch_unwind(AssertUnwindSafe(work));
    }
    drop(started);
}

/// Joins its threads when dropped, so no borrow outlives them.
struct Joiner(Vec<ThreadId>);

impl Drop for Joiner {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            sys::join(id);
        }
    }
}

/// A background thread running a `'static` job, joined on drop.
///
/// It may outlive the call that started it, so the object holding this
/// library's code is pinned first: `dlclose` can then never unmap code the
/// thread is running (docs/ARCHITECTURE.md, "Unload"). In a child forked
/// after it started, the thread does not exist: dropping it there does not
/// join.
pub struct Background {
    id: Option<ThreadId>,
    pid: u32,
}

impl Background {
    /// Starts `job`; `None` if no thread can be had.
    pub fn spawn(job: impl FnOnce() + Send + 'static) -> Option<Background> {
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
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if self.pid == std::process::id() {
                sys::join(id);
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
            let inline = r.iter().filter(|x| x.is_some_and(|x| x.1)).count();
            assert_eq!(inline, inline_jobs, "jobs run on the calling thread: {r:?}");
        }
    }
}
