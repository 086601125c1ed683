//! Counters that prove what the library did: how many loads, waits and
//! failures, how many bytes were read, what is alive now.
//!
//! Cumulative counters are relaxed atomics (they are read for reporting,
//! never to synchronise); what is alive now is computed from the registry
//! under its lock, so a snapshot's live figures are exact.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::strategy::{Outcome, Strategy};

/// Per-strategy figures (C: `struct om_constants_strategy_stats`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StrategyStats {
    /// Loads completed with this strategy.
    pub loads: u64,
    /// Bytes loaded with it (mapped or read).
    pub bytes: u64,
    /// Nanoseconds spent in those loads.
    pub nanos: u64,
}

/// A snapshot of the library's state (C: `struct om_constants_stats`).
///
/// "Live" fields describe this moment; the others count since the process
/// started (or, for a Rust `Registry`, since it was created).
///
/// The struct grows only at its end, and `size` says how much of it the
/// caller has room for, so a newer library never writes past an older
/// host's struct (and an older library fills only the fields it knows).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// In: `sizeof(struct om_constants_stats)` as the caller knows it (set
    /// it before the call). Out: the bytes the library filled, the smaller
    /// of that and its own size; fields past it are left untouched.
    pub size: u64,
    /// Buffers in memory now, including kept ones with no reference.
    pub live_buffers: u64,
    /// Of those, buffers kept with no reference (`OM_CONSTANT_KEEP=1`).
    pub kept_buffers: u64,
    /// References held now, over all slots.
    pub references: u64,
    /// Slots that hold a buffer now.
    pub live_slots: u64,
    /// Bytes in live buffers now.
    pub live_bytes: u64,
    /// Files loaded (opened and mapped or read) since start.
    pub loads: u64,
    /// Acquires served by a buffer another slot (or the keep cache) held.
    pub shared: u64,
    /// Calls that waited for another thread's load.
    pub waits: u64,
    /// Loads that failed.
    pub failures: u64,
    /// Waits that ended in the timeout.
    pub timeouts: u64,
    /// `auto` loads that fell back from `mmap` to `read`.
    pub fallbacks: u64,
    /// Buffers freed (last release or trim).
    pub frees: u64,
    /// Bytes mapped since start.
    pub bytes_mapped: u64,
    /// Bytes read into heap buffers since start.
    pub bytes_read: u64,
    /// Nanoseconds spent loading since start.
    pub load_nanos: u64,
    /// Loads by the `mmap` strategy.
    pub mmap: StrategyStats,
    /// Loads by the `read` strategy.
    pub read: StrategyStats,
    /// Loads by the `chunked-mmap` strategy.
    pub chunked_mmap: StrategyStats,
    /// Bytes read with `O_DIRECT` since start.
    pub direct_bytes: u64,
    /// `read` loads whose `O_DIRECT` was refused and fell back to buffered.
    pub direct_fallbacks: u64,
    /// Bytes of live buffers mapped with 2 MiB (huge) pages now, as the
    /// kernel's page tables say (Linux; 0 where the OS cannot tell). Compare
    /// with `live_bytes`; docs/WEIGHTS-SPEED.md says why it matters.
    pub huge_page_bytes: u64,
}

impl Default for Stats {
    /// All counts zero, `size` this library's size of the struct.
    fn default() -> Stats {
        Stats {
            size: std::mem::size_of::<Stats>() as u64,
            live_buffers: 0,
            kept_buffers: 0,
            references: 0,
            live_slots: 0,
            live_bytes: 0,
            loads: 0,
            shared: 0,
            waits: 0,
            failures: 0,
            timeouts: 0,
            fallbacks: 0,
            frees: 0,
            bytes_mapped: 0,
            bytes_read: 0,
            load_nanos: 0,
            mmap: StrategyStats::default(),
            read: StrategyStats::default(),
            chunked_mmap: StrategyStats::default(),
            direct_bytes: 0,
            direct_fallbacks: 0,
            huge_page_bytes: 0,
        }
    }
}

/// The smallest `size` a caller may pass: room for `size` and one count.
const MIN_SIZE: u64 = 16;

impl Stats {
    /// How many bytes of a `Stats` to give a caller whose struct has
    /// `asked` bytes (its `size` field): whole fields, never more than
    /// either side has, so an older host's shorter struct is never written
    /// past and a newer host's extra fields are left alone. An error for a
    /// `size` too small to hold anything, which means it was not set.
    pub(crate) fn bytes_to_fill(asked: u64) -> Result<u64> {
        let ours = std::mem::size_of::<Stats>() as u64;
        if asked < MIN_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "om_constants_stats: out->size is {asked}; set it to \
                     sizeof(struct om_constants_stats) before the call (this library's is {ours})"
                ),
            ));
        }
        Ok(asked.min(ours) / 8 * 8)
    }
}

#[derive(Default)]
struct StrategyCounters {
    loads: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

/// The cumulative counters of one registry.
#[derive(Default)]
pub(crate) struct Counters {
    shared: AtomicU64,
    waits: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    fallbacks: AtomicU64,
    frees: AtomicU64,
    bytes_read: AtomicU64,
    direct_bytes: AtomicU64,
    direct_fallbacks: AtomicU64,
    per: [StrategyCounters; Strategy::ALL.len()],
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Counters {
    /// A completed load of `bytes` bytes.
    pub(crate) fn loaded(&self, l: &Outcome, bytes: u64) {
        let c = &self.per[l.buffer.strategy() as usize];
        c.loads.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes, Relaxed);
        c.nanos.fetch_add(nanos(l.elapsed), Relaxed);
        self.bytes_read.fetch_add(l.bytes_read, Relaxed);
        self.direct_bytes.fetch_add(l.direct_bytes, Relaxed);
        self.fallbacks
            .fetch_add(u64::from(l.read_after_map_failed), Relaxed);
        self.direct_fallbacks
            .fetch_add(u64::from(l.direct_refused), Relaxed);
    }
    /// An acquire served by an existing buffer.
    pub(crate) fn shared(&self) {
        self.shared.fetch_add(1, Relaxed);
    }
    /// A call that waited for another thread's load.
    pub(crate) fn waited(&self) {
        self.waits.fetch_add(1, Relaxed);
    }
    /// A failed load.
    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Relaxed);
    }
    /// A wait that timed out.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }
    /// Buffers freed.
    pub(crate) fn freed(&self, n: u64) {
        self.frees.fetch_add(n, Relaxed);
    }

    /// Fills the cumulative fields of `out`.
    pub(crate) fn fill(&self, out: &mut Stats) {
        let get = |a: &AtomicU64| a.load(Relaxed);
        out.shared = get(&self.shared);
        out.waits = get(&self.waits);
        out.failures = get(&self.failures);
        out.timeouts = get(&self.timeouts);
        out.fallbacks = get(&self.fallbacks);
        out.frees = get(&self.frees);
        out.bytes_read = get(&self.bytes_read);
        out.direct_bytes = get(&self.direct_bytes);
        out.direct_fallbacks = get(&self.direct_fallbacks);
        let per = |s: Strategy| {
            let c = &self.per[s as usize];
            StrategyStats {
                loads: get(&c.loads),
                bytes: get(&c.bytes),
                nanos: get(&c.nanos),
            }
        };
        out.mmap = per(Strategy::Mmap);
        out.read = per(Strategy::Read);
        out.chunked_mmap = per(Strategy::ChunkedMmap);
        let all = [out.mmap, out.read, out.chunked_mmap];
        out.loads = all.iter().map(|s| s.loads).sum();
        out.load_nanos = all.iter().map(|s| s.nanos).sum();
        out.bytes_mapped = out.mmap.bytes + out.chunked_mmap.bytes;
    }
}

/// How one live buffer is backed ([`crate::Registry::page_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageReport {
    /// Its length.
    pub bytes: u64,
    /// Of those, bytes mapped with 2 MiB entries now (0 where the OS cannot
    /// tell).
    pub huge_page_bytes: u64,
    /// The 2 MiB-page helper is done (docs/WEIGHTS-SPEED.md); false if it
    /// was still at work when the wait ended.
    pub settled: bool,
    /// What the helper (or the load) found: what it did, or why the buffer
    /// is not in 2 MiB pages. `None` when there is nothing to say.
    pub note: Option<String>,
}
