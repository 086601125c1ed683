//! The keyed run-once protocol, written once for both of its keys: a slot
//! (`slot.rs`: one load per slot, however many threads call) and a file
//! (`buffer.rs`: one read per file identity and size, however many slots
//! ask). In the manner of once_cell's `imp_std.rs`: the waiters' side
//! ([`Pending`]), the table of loads in flight ([`Flights`]), the driver
//! ([`run_once`]) and the guard whose drop makes the last
//! transition if a load never finishes ([`Guard`]).
//!
//! One pass of the driver: take the lock and look the key up
//! (found, in flight, or free); if free, start a flight for it, unlock,
//! load, lock again, record the result, end the flight, unlock, and only
//! then wake the waiters and do what was left for after (free, log). The
//! lock is never held while loading, freeing or logging.
//!
//! The file system under a load is the one seam the model checker swaps:
//! under `--cfg loom` (tests/loom.rs) [`files`] is an in-memory stand-in,
//! so that loom explores this protocol's real locking and publication.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One load in flight: waiters block here until the loader completes it.
pub(super) struct Pending {
    outcome: Mutex<Option<Result<()>>>,
    done: Condvar,
}

impl Pending {
    fn new() -> Self {
        Pending {
            outcome: Mutex::new(None),
            done: Condvar::new(),
        }
    }

    /// Records the loader's outcome (the first one only) and wakes every
    /// waiter.
    fn complete(&self, outcome: Result<()>) {
        let mut g = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(outcome);
        }
        drop(g);
        self.done.notify_all();
    }

    /// Blocks until the load completes (its outcome) or `timeout` passes
    /// (a `Timeout` error naming `what`).
    pub(super) fn wait(&self, timeout: Duration, what: &str) -> Result<()> {
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
pub(super) struct Flights<K>(HashMap<K, Arc<Pending>>);

impl<K> Default for Flights<K> {
    fn default() -> Self {
        Flights(HashMap::new())
    }
}

impl<K: Eq + Hash + Copy> Flights<K> {
    /// The load in flight for `key`, to wait for.
    pub(super) fn get(&self, key: &K) -> Option<Arc<Pending>> {
        self.0.get(key).cloned()
    }

    fn start(&mut self, key: K) -> Arc<Pending> {
        let pending = Arc::new(Pending::new());
        self.0.insert(key, pending.clone());
        pending
    }

    fn end(&mut self, key: &K) {
        self.0.remove(key);
    }

    /// Forgets every load in flight (a forked child: their threads are not
    /// in this process); yields their keys.
    pub(super) fn forget(&mut self) -> impl Iterator<Item = K> + '_ {
        self.0.drain().map(|(k, _)| k)
    }
}

/// What a look-up under the lock found.
pub(super) enum Look<V, S> {
    /// The value is there: the run is over.
    Found(V),
    /// Another thread loads it: wait for that load, then look again.
    Wait(Arc<Pending>),
    /// Changed under us (a lost compare-and-swap): look again.
    Again,
    /// Free: this thread loads, with what the look-up set aside for it.
    Start(S),
}

/// One kind of run-once load: how its key is looked up, loaded and
/// recorded in the tables a lock guards. `look`, `record` and `abandon`
/// run under the lock; `load`, `wait` and `after` never do.
pub(super) trait Once {
    /// What the lock guards.
    type Tables;
    /// What identifies one load.
    type Key: Copy + Eq + Hash;
    /// What a run gives the caller.
    type Value;
    /// What the look-up sets aside for the load (a slot's stale buffer).
    type Start;
    /// What the load made, recorded under the lock.
    type Loaded;
    /// What is left to do once nobody waits (free, log).
    type Later;
    /// What an abandoned load leaves to drop once unlocked.
    type Unused;

    /// This load's key.
    fn key(&self) -> Self::Key;
    /// Takes the lock.
    fn lock(&self) -> MutexGuard<'_, Self::Tables>;
    /// The table of loads in flight for keys of this kind.
    fn flights(t: &mut Self::Tables) -> &mut Flights<Self::Key>;
    /// Before each look-up (a slot spins while it reads LOADING).
    fn before_look(&self) {}
    /// Found, in flight, or free.
    fn look(&self, t: &mut Self::Tables) -> Result<Look<Self::Value, Self::Start>>;
    /// Waits for another thread's load of this key.
    fn wait(&self, pending: &Pending) -> Result<()>;
    /// The load.
    fn load(&self, start: Self::Start) -> Self::Loaded;
    /// Records what the load made; its outcome wakes the waiters.
    fn record(
        &self,
        t: &mut Self::Tables,
        loaded: Self::Loaded,
    ) -> (Result<Self::Value>, Self::Later);
    /// After the waiters are woken.
    fn after(&self, later: Self::Later, out: &mut Result<Self::Value>);
    /// For a load that never finished (a panic, caught at the C ABI):
    /// undoes what its start claimed.
    fn abandon(&self, t: &mut Self::Tables) -> Self::Unused;
}

/// The right to finish one load, held by the thread that started it. It
/// holds its load (and so its key); dropped before [`Guard::wake`], it
/// abandons the load and wakes the waiters with an error, so no waiter is
/// left until its timeout and no slot is left LOADING.
struct Guard<'a, J: Once> {
    job: &'a J,
    pending: Option<Arc<Pending>>,
}

impl<J: Once> Guard<'_, J> {
    /// The load is over and ended in the tables: wake every waiter.
    fn wake(mut self, outcome: Result<()>) {
        if let Some(p) = self.pending.take() {
            p.complete(outcome);
        }
    }
}

impl<J: Once> Drop for Guard<'_, J> {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let mut t = self.job.lock();
        J::flights(&mut t).end(&self.job.key());
        let unused = self.job.abandon(&mut t);
        drop(t);
        pending.complete(Err(Error::new(
            ErrorKind::Internal,
            "the thread loading the constants failed unexpectedly (a bug in om-constants; \
             please report it); the slot was reset and the load may be retried",
        )));
        drop(unused);
    }
}

/// Runs `job` once for its key: returns what is there, waits for the
/// thread that loads it, or loads it here (see the module docs).
pub(super) fn run_once<J: Once>(job: &J) -> Result<J::Value> {
    loop {
        job.before_look();
        let mut t = job.lock();
        let start = match job.look(&mut t)? {
            Look::Found(v) => return Ok(v),
            Look::Again => continue,
            Look::Wait(pending) => {
                drop(t);
                job.wait(&pending)?;
                continue;
            }
            Look::Start(s) => s,
        };
        let guard = Guard {
            job,
            pending: Some(J::flights(&mut t).start(job.key())),
        };
        drop(t);
        let loaded = job.load(start);
        let mut t = job.lock();
        let (mut out, later) = job.record(&mut t, loaded);
        J::flights(&mut t).end(&job.key());
        drop(t);
        guard.wake(out.as_ref().map(|_| ()).map_err(Clone::clone));
        job.after(later, &mut out);
        return out;
    }
}

/// The file system under a load: find and open the file (its identity
/// decides sharing), then put it into memory with the configured strategy.
#[cfg(not(loom))]
pub(super) mod files {
    use crate::config::Config;
    use crate::error::Result;
    use crate::locate;
    use crate::log::{Level, Notes};
    use crate::request::Request;
    pub(crate) use crate::source::Source;
    pub(crate) use crate::strategy::load;

    /// Finds `req`'s file for the slot at `slot_addr` and opens it; the
    /// search's note, if it has one, goes to `notes`.
    pub(crate) fn open(
        req: &Request,
        config: &Config,
        slot_addr: usize,
        notes: &mut Notes,
    ) -> Result<Source> {
        // OM_CONSTANT_PATH is read now, at each load, and classified
        // (path_var.rs).
        let dir = config.search_path.current();
        let found = locate::locate(req.fname(), dir.as_ref(), slot_addr)?;
        notes.push_some(Level::Info, found.note);
        let fname = req.fname().display().to_string();
        Source::open(&found.path, &fname, req.size())
    }
}

/// The model checker's stand-in for the file system: the same name is the
/// same file, and a name starting with "fail" fails to load.
#[cfg(loom)]
pub(super) mod files {
    use crate::config::Config;
    use crate::error::{Error, ErrorKind, Result};
    use crate::log::Notes;
    use crate::request::Request;
    use crate::source::FileKey;
    use crate::strategy::{Buffer, HeapBuf, Memory, Outcome, Strategy};

    /// A "file": its name.
    pub(crate) struct Source(String);

    impl Source {
        /// The same name is the same file.
        pub(crate) fn key(&self) -> FileKey {
            let h = self.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            let stamp = crate::sys::FileStamp {
                volume: 0,
                index: h,
                mtime_ns: 0,
                ctime_ns: 0,
            };
            FileKey::new(stamp, 0)
        }

        /// Its name.
        pub(crate) fn shown(&self) -> String {
            self.0.clone()
        }
    }

    /// Always succeeds.
    pub(crate) fn open(
        req: &Request,
        _config: &Config,
        _slot_addr: usize,
        _notes: &mut Notes,
    ) -> Result<Source> {
        Ok(Source(req.fname().display().to_string()))
    }

    /// A heap buffer, or an I/O error for names starting with "fail".
    pub(crate) fn load(opened: &Source, size: u64, config: &Config) -> Result<Outcome> {
        if opened.0.starts_with("fail") {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}: injected failure", opened.0),
            ));
        }
        let heap = HeapBuf::alloc(size as usize, config.huge_pages.wanted())
            .ok_or_else(|| Error::new(ErrorKind::OutOfMemory, "no memory"))?;
        Ok(Outcome {
            buffer: Buffer::new(Memory::Heap(heap), Strategy::Read),
            bytes_read: size,
            direct_bytes: 0,
            direct_refused: false,
            read_threads: 1,
            elapsed: std::time::Duration::ZERO,
            read_after_map_failed: false,
            notes: Notes::default(),
        })
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

    /// A load of key 7 whose `load` waits for `go` and then panics (or
    /// returns 5), counting its abandons; its own tables.
    struct Probe {
        tables: Mutex<Flights<usize>>,
        go: Mutex<std::sync::mpsc::Receiver<bool>>,
        abandoned: std::sync::atomic::AtomicUsize,
    }

    impl Once for Probe {
        type Tables = Flights<usize>;
        type Key = usize;
        type Value = u32;
        type Start = ();
        type Loaded = u32;
        type Later = ();
        type Unused = ();
        fn key(&self) -> usize {
            7
        }
        fn lock(&self) -> MutexGuard<'_, Flights<usize>> {
            self.tables.lock().unwrap_or_else(PoisonError::into_inner)
        }
        fn flights(t: &mut Flights<usize>) -> &mut Flights<usize> {
            t
        }
        fn look(&self, t: &mut Flights<usize>) -> Result<Look<u32, ()>> {
            Ok(match t.get(&7) {
                Some(p) => Look::Wait(p),
                None => Look::Start(()),
            })
        }
        fn wait(&self, pending: &Pending) -> Result<()> {
            pending.wait(Duration::from_secs(30), "probe")
        }
        fn load(&self, (): ()) -> u32 {
            let go = self
                .go
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            if go.unwrap_or(true) {
                std::panic::resume_unwind(Box::new("the load fails unexpectedly"));
            }
            5
        }
        fn record(&self, _: &mut Flights<usize>, v: u32) -> (Result<u32>, ()) {
            (Ok(v), ())
        }
        fn after(&self, (): (), _: &mut Result<u32>) {}
        fn abandon(&self, _: &mut Flights<usize>) {
            self.abandoned
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_load_that_never_finishes_is_abandoned_and_its_waiters_get_an_error() {
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = Arc::new(Probe {
            tables: Mutex::new(Flights::default()),
            go: Mutex::new(rx),
            abandoned: Default::default(),
        });
        let loader = {
            let probe = probe.clone();
            std::thread::spawn(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_once(&*probe)))
            })
        };
        // The waiter finds the flight started, and waits on it.
        let pending = loop {
            if let Some(p) = probe.lock().get(&7) {
                break p;
            }
            std::thread::yield_now();
        };
        tx.send(true).unwrap();
        assert!(loader.join().unwrap().is_err(), "the load panicked");
        let e = pending.wait(Duration::from_secs(30), "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
        assert_eq!(probe.abandoned.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(probe.lock().get(&7).is_none(), "flight ended");

        // A load that finishes is not abandoned, and its flight ends too.
        tx.send(false).unwrap();
        assert_eq!(run_once(&*probe), Ok(5));
        assert_eq!(probe.abandoned.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(probe.lock().get(&7).is_none(), "flight ended");
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
