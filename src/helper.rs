//! The process's one helper thread, for work that follows a load: putting
//! a mapping in 2 MiB pages (`strategy/huge.rs`).
//!
//! That work belongs to a buffer that may live until exit (a legacy model
//! never releases) or be released at once (a host that loads and frees in a
//! loop). A thread per buffer is wrong either way: joined on release, a
//! buffer kept until exit leaves a thread nobody joins; detached, a host
//! that cycles starts a thread per load, and the exiting ones pile up
//! stacks and mappings. So one detached thread takes jobs from a queue in
//! turn, waits for more, and ends after [`IDLE`] without any; the next job
//! starts it again. A job dropped from the queue before it ran
//! ([`Ticket`]'s drop) never runs: a release never waits behind another
//! file's work for its memory to go.
//!
//! The thread is a raw pthread, safe to start inside `dlopen`
//! (`threads.rs`), and the object holding this code is pinned before it
//! starts, so `dlclose` never unmaps code it runs. A child forked while it
//! was running has none: the child's next job starts its own (the job
//! that was running in the parent at the fork is not finished there), and
//! the queue's lock is held across a fork ([`hold_for_fork`]).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::sys::{self, Job};

/// How long the thread waits for a job before it ends.
const IDLE: Duration = Duration::from_secs(30);

struct Queue {
    jobs: VecDeque<(u64, Job<'static>)>,
    next_ticket: u64,
    /// The process whose thread serves the queue; 0 when none does (none
    /// started yet, it ended idle, or this is a child forked since).
    served_in: u32,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: VecDeque::new(),
    next_ticket: 0,
    served_in: 0,
});
static MORE: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Queue> {
    // Jobs run unlocked and catch their panics: the queue is consistent.
    QUEUE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queued job: dropping it takes the job off the queue if it has not
/// started (and drops it there, releasing what it owned).
#[derive(Debug)]
pub(crate) struct Ticket(u64);

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = lock();
        let job = q
            .jobs
            .iter()
            .position(|(t, _)| *t == self.0)
            .and_then(|i| q.jobs.remove(i));
        drop(q);
        // Dropped unlocked: it may own the last reference to a mapping.
        drop(job);
    }
}

/// Queues `job` for the helper thread, starting the thread if this process
/// has none running; `None` (the job dropped) if no thread can be had.
pub(crate) fn queue(job: impl FnOnce() + Send + 'static) -> Option<Ticket> {
    let pid = std::process::id();
    let mut q = lock();
    let ticket = q.next_ticket;
    q.next_ticket += 1;
    q.jobs.push_back((ticket, Box::new(job)));
    let start = q.served_in != pid;
    if start {
        q.served_in = pid;
    }
    drop(q);
    if !start {
        MORE.notify_one();
        return Some(Ticket(ticket));
    }
    // Pin the object that holds this code (the shared library, or the
    // model or program it was linked into statically); the shared library
    // is also linked with `-z nodelete` (build.rs).
    sys::pin_object_at(sys::page_size as fn() -> usize as usize);
    // SAFETY: the job borrows nothing ('static).
    match unsafe { sys::spawn(Box::new(serve)) } {
        Ok(id) => {
            sys::detach_thread(id);
            Some(Ticket(ticket))
        }
        Err(_) => {
            let mut q = lock();
            if q.served_in == pid {
                q.served_in = 0;
            }
            drop(q);
            // Takes this job back off the queue and drops it unlocked.
            drop(Ticket(ticket));
            None
        }
    }
}

/// The thread's body: runs jobs in turn until none comes for [`IDLE`].
fn serve() {
    let pid = std::process::id();
    let mut q = lock();
    loop {
        if let Some((_, job)) = q.jobs.pop_front() {
            drop(q);
            let _ = catch_unwind(AssertUnwindSafe(job));
            q = lock();
            continue;
        }
        let (guard, waited) = MORE
            .wait_timeout_while(q, IDLE, |q| q.jobs.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        q = guard;
        if waited.timed_out() && q.jobs.is_empty() {
            if q.served_in == pid {
                q.served_in = 0;
            }
            return;
        }
    }
}

/// The queue's lock, held across a `fork` by `fork.rs`'s handlers so that
/// the child never finds it held by a thread it does not have. The thread
/// never holds it while a job runs: taking it waits at most for a push or
/// a pop.
pub(crate) struct ForkHold {
    _queue: MutexGuard<'static, Queue>,
}

/// Takes the queue's lock for a `fork`.
pub(crate) fn hold_for_fork() -> ForkHold {
    ForkHold { _queue: lock() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_turn_on_one_thread_and_a_dropped_ticket_s_job_never_runs() {
        let (tx, rx) = mpsc::channel();
        // A job that holds the thread until told to go on.
        let (go, wait) = mpsc::channel::<()>();
        let first_tx = tx.clone();
        let first = queue(move || {
            let _ = wait.recv();
            let _ = first_tx.send(("first", sys::thread_self()));
        })
        .expect("a thread");
        let second_tx = tx.clone();
        let second = queue(move || {
            let _ = second_tx.send(("second", sys::thread_self()));
        })
        .expect("a thread");
        let third = queue(move || {
            let _ = tx.send(("third", sys::thread_self()));
        })
        .expect("a thread");
        // Still queued behind the first: taken off and dropped.
        drop(second);
        go.send(()).expect("the first job waits");
        let a = rx.recv().expect("the first job ran");
        let b = rx.recv().expect("the third job ran");
        assert_eq!((a.0, b.0), ("first", "third"));
        assert_eq!(a.1, b.1, "one thread ran both");
        assert!(rx.recv().is_err(), "the dropped job never ran");
        drop((first, third));
    }
}
