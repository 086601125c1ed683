//! What the bench promises: each target is a [`Goal`] (its limit, and
//! whether it is a count or a measurement) with the value one run measured.

use om_constants::Strategy;

/// A promise of the bench.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Goal {
    /// om `read` total / onnx-mlir's 1-thread read.
    ReadVsOneThreadRead,
    /// om `read` total / the best raw `pread` baseline.
    ReadVsBestPread,
    /// om `mmap` total / plain mmap.
    MmapVsPlainMmap,
    /// om `chunked-mmap` total / plain mmap.
    ChunkedVsPlainMmap,
    /// om `chunked-mmap` total / om `read`.
    ChunkedVsRead,
    /// Freeing the `read` buffer, ms, worst run.
    ReadFreeMs,
    /// The loaded fast path, ns per call, 1 thread.
    FastPathNs,
    /// The fast path / onnx-mlir's NULL check.
    FastPathVsOnnxMlir,
    /// The fast path with 2 threads / with 1.
    FastPathTwoThreads,
    /// Peak RSS of the `read` race / the file size.
    ReadRacePeakRss,
    /// Packing calls at the cache's second start.
    CachePacks,
    /// Anonymous memory after the cache's commit / packed bytes.
    CacheAnonAfterCommit,
    /// Anonymous memory at the cache's second start / packed bytes.
    CacheAnonSecondStart,
    /// A race's wall time / a single load of that strategy.
    RaceWall(Strategy),
    /// Loads in a race (must be 1).
    RaceLoads(Strategy),
    /// Bytes read in the `read` race / the file size.
    ReadRaceBytes,
    /// The default's (or `reread`'s) sequential pass after load / a 2 MiB-page heap copy's.
    AfterLoadSequential,
    /// The default's (or `reread`'s) gather after load / a 2 MiB-page heap copy's.
    AfterLoadGather,
    /// The share of the default's buffer not in 2 MiB pages after load.
    AfterLoadSmallPages,
    /// The default's cold load + first pass / plain mmap's.
    ColdLoadFirstPass,
    /// The default's load + first pass of a just-written file / of a cold
    /// file.
    RelayVsColdLoad,
    /// The default's load call with 16 KiB of the file cached, in ms: it
    /// reads nothing.
    LazyLoadCallMs,
    /// The default's load of a file on a FUSE volume / a parallel pread of
    /// it in the same run.
    NetworkVsPread,
}

impl Goal {
    /// The value must be at most this.
    pub(super) fn limit(self) -> f64 {
        match self {
            Goal::ReadVsOneThreadRead => 0.45,
            Goal::ReadVsBestPread => 1.15,
            Goal::MmapVsPlainMmap => 1.10,
            Goal::ChunkedVsPlainMmap => 1.20,
            Goal::ChunkedVsRead => 0.5,
            Goal::ReadFreeMs => 10.0,
            Goal::FastPathNs => 2.0,
            Goal::FastPathVsOnnxMlir => 1.10,
            Goal::FastPathTwoThreads => 1.05,
            Goal::ReadRacePeakRss => 1.05,
            Goal::CachePacks => 0.0,
            Goal::CacheAnonAfterCommit | Goal::CacheAnonSecondStart => 0.05,
            Goal::RaceWall(_) => 1.10,
            Goal::RaceLoads(_) | Goal::ReadRaceBytes => 1.0,
            Goal::AfterLoadSequential | Goal::AfterLoadGather => 1.05,
            Goal::AfterLoadSmallPages => 0.10,
            Goal::ColdLoadFirstPass | Goal::RelayVsColdLoad => 1.10,
            Goal::LazyLoadCallMs => 50.0,
            // The load at 0.8x or more of a parallel pread's speed.
            Goal::NetworkVsPread => 1.25,
        }
    }

    /// A count (loads, bytes read, packing calls), not a measurement: a
    /// miss is a bug, whatever the machine, and fails the bench.
    pub(super) fn is_count(self) -> bool {
        matches!(
            self,
            Goal::CachePacks | Goal::RaceLoads(_) | Goal::ReadRaceBytes
        )
    }
}

/// A goal, what this run measured for it, and its label.
pub(super) struct Target {
    pub goal: Goal,
    pub value: f64,
    pub label: String,
}

impl Target {
    pub(super) fn new(goal: Goal, value: f64, label: impl Into<String>) -> Target {
        Target {
            goal,
            value,
            label: label.into(),
        }
    }

    /// Met when the value is at most the goal's limit.
    pub(super) fn met(&self) -> bool {
        self.value <= self.goal.limit()
    }
}

/// The one-line verdict: how many targets were met, and what a miss means.
pub(super) fn verdict(targets: &[Target]) -> String {
    let met = targets.iter().filter(|t| t.met()).count();
    let total = targets.len();
    if met == total {
        return format!("verdict: {met} of {total} targets met");
    }
    format!(
        "verdict: {met} of {total} targets met; {} missed. On a shared machine a missed \
         timing is a measurement to repeat (other tenants move the figures), not a failure; \
         a missed count (loads, bytes read, packing calls) is a bug, and fails the bench. \
         The targets are stated for the conditions in docs/PERFORMANCE.md",
        total - met
    )
}

/// An error naming every counted target missed: those are bugs, not noise.
pub(super) fn counts_met(targets: &[Target]) -> Result<(), String> {
    let broken: Vec<&str> = targets
        .iter()
        .filter(|t| t.goal.is_count() && !t.met())
        .map(|t| t.label.as_str())
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    Err(format!(
        "counted targets missed (a bug in om-constants, not noise): {}",
        broken.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_counts_met_targets_and_explains_a_miss() {
        let t = |v| Target::new(Goal::RaceWall(Strategy::Mmap), v, "x");
        let all = [t(0.5), t(1.1)];
        assert_eq!(verdict(&all), "verdict: 2 of 2 targets met");
        let one_missed = [t(0.5), t(1.5), t(0.9)];
        let v = verdict(&one_missed);
        assert!(
            v.starts_with("verdict: 2 of 3 targets met; 1 missed."),
            "{v}"
        );
        assert!(v.contains("not a failure"), "{v}");
    }

    #[test]
    fn a_missed_count_fails_the_bench_and_a_missed_timing_does_not() {
        let timing = Target::new(Goal::RaceWall(Strategy::Read), 1.5, "wall");
        assert!(
            counts_met(&[timing]).is_ok(),
            "a missed timing is not an error"
        );
        let loads = Target::new(Goal::RaceLoads(Strategy::Read), 2.0, "read race: loads");
        let e = counts_met(&[loads]).unwrap_err();
        assert!(e.contains("read race: loads"), "{e}");
    }
}
