//! The process's one helper thread, for work that follows a load: putting
//! a mapping in 2 MiB pages (`strategy/huge.rs`).
//!
//! That work belongs to a buffer that may live until exit (a legacy model
//! never releases) or be released at once (a host that loads and frees in a
//! loop). A thread per buffer is wrong either way: joined on release, a
//! buffer kept until exit leaves a thread nobody joins; detached, a host
//! that cycles starts a thread per load, and the exiting ones pile up
//! stacks and mappings. So one detached thread, started by the first job,
//! takes jobs from a queue in turn and waits for more for the rest of the
//! process: one idle thread, and a process's thread and mapping counts
//! that do not move with the loads. A buffer's release ([`Ticket`]'s drop) takes its job
//! off the queue if it has not started, and otherwise waits for it to end
//! (told to stop, it ends within one 2 MiB block): so it never waits behind
//! another file's work, and once it returns, the job holds none of the
//! buffer's memory or descriptors.
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

use crate::sys;

/// A job: its work, then what to do once anyone waiting for it has been
/// let go (a log line: no I/O while others wait).
pub(crate) type Work = Box<dyn FnOnce() -> Option<Afterwards> + Send>;
/// What a job leaves to do after it is marked done.
pub(crate) type Afterwards = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<(u64, Work)>,
    next_ticket: u64,
    /// The process whose thread serves the queue; 0 when none does (none
    /// started yet, or this is a child forked since).
    served_in: u32,
    /// The ticket of the job running now, if any.
    running: Option<u64>,
    /// The thread serving the queue (`sys::thread_self`).
    server: u64,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: VecDeque::new(),
    next_ticket: 0,
    served_in: 0,
    running: None,
    server: 0,
});
/// Signalled when a job is queued.
static MORE: Condvar = Condvar::new();
/// Signalled when a job has run (and dropped what it owned).
static RAN: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Queue> {
    // Jobs run unlocked and catch their panics: the queue is consistent.
    QUEUE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queued job: dropping it takes the job off the queue if it has not
/// started (and drops it there, releasing what it owned), or waits until
/// it has run if it is running; tell the job to stop first.
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
        // Running here: wait for it, unless this is the serving thread
        // itself, or a child forked while it ran (the thread is not here).
        let waits = q.running == Some(self.0)
            && q.served_in == std::process::id()
            && q.server != sys::thread_self();
        if waits {
            let _done = RAN
                .wait_while(q, |q| q.running == Some(self.0))
                .unwrap_or_else(PoisonError::into_inner);
        } else {
            drop(q);
        }
        // Dropped unlocked: it may own the last reference to a mapping.
        drop(job);
    }
}

/// Queues `job` for the helper thread, starting the thread if this process
/// has none running; `None` (the job dropped) if no thread can be had.
pub(crate) fn queue(job: impl FnOnce() -> Option<Afterwards> + Send + 'static) -> Option<Ticket> {
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

/// The thread's body: runs jobs in turn, for the rest of the process.
fn serve() {
    let mut q = lock();
    q.server = sys::thread_self();
    loop {
        if let Some((ticket, job)) = q.jobs.pop_front() {
            q.running = Some(ticket);
            drop(q);
            // The job is consumed, and what it owned dropped, in here.
            let afterwards = catch_unwind(AssertUnwindSafe(job)).ok().flatten();
            q = lock();
            q.running = None;
            RAN.notify_all();
            if let Some(then) = afterwards {
                drop(q);
                let _ = catch_unwind(AssertUnwindSafe(then));
                q = lock();
            }
            continue;
        }
        q = MORE.wait(q).unwrap_or_else(PoisonError::into_inner);
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
            None
        })
        .expect("a thread");
        let second_tx = tx.clone();
        let second = queue(move || {
            let _ = second_tx.send(("second", sys::thread_self()));
            None
        })
        .expect("a thread");
        let third = queue(move || {
            let _ = tx.send(("third", sys::thread_self()));
            None
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

    #[test]
    fn dropping_the_ticket_of_a_running_job_waits_until_it_has_run() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (started_tx, started) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let (s, f) = (Arc::clone(&stop), Arc::clone(&finished));
        let ticket = queue(move || {
            let _ = started_tx.send(());
            while !s.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            f.store(true, Ordering::Release);
            None
        })
        .expect("a thread");
        started.recv().expect("the job started");
        stop.store(true, Ordering::Release);
        drop(ticket);
        assert!(
            finished.load(Ordering::Acquire),
            "the drop returned before the job ended"
        );
    }
}
