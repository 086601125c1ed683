//! `om-constants bench`: writes a constants file, then times every method
//! (baselines and the library's strategies) in interleaved runs, races many
//! threads on one slot, samples the loaded fast path, measures the
//! packed-weights cache, and prints each figure beside its target.
//!
//! Its files are on the map, docs/ARCHITECTURE.md ("Modules").

// Only the options are built off POSIX: `om-constants bench` parses there,
// then says it runs on POSIX systems only.
#![cfg_attr(not(unix), allow(unused_imports))]

#[cfg(unix)]
mod deploy;
#[cfg(unix)]
mod methods;
mod options;
#[cfg(unix)]
mod per_call;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod steady;
#[cfg(unix)]
mod targets;

#[cfg(unix)]
use std::path::Path;

#[cfg(unix)]
use om_constants::{Choice, Config, Strategy};

#[cfg(unix)]
use crate::baseline;
#[cfg(unix)]
use methods::{Method, MethodId, Race, Variant};
pub(crate) use options::Options;
#[cfg(unix)]
use report::Report;
#[cfg(unix)]
use targets::{Goal, Target};

#[cfg(unix)]
pub(crate) fn run(o: Options) -> Result<(), String> {
    let path = o
        .dir
        .join(format!("om-constants-bench-{}.bin", std::process::id()));
    eprintln!("bench: writing {} bytes to {}", o.size, path.display());
    methods::generate(&path, o.size as u64)?;
    let report = measure(&o, &path);
    if !o.keep {
        let _ = std::fs::remove_file(&path);
    }
    let report = report?;
    if o.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    targets::counts_met(&report.targets)
}

/// Every measurement of one bench on the file at `path`.
#[cfg(unix)]
fn measure(o: &Options, path: &Path) -> Result<Report, String> {
    let (size, runs) = (o.size, o.runs);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut methods: Vec<Method> = MethodId::all(cpus)
        .into_iter()
        .map(|id| Method::new(id, o.limit))
        .collect();

    // Warm the page cache (unless measuring cold loads).
    if !o.cold {
        baseline::mmap_pass(path, size).map_err(|e| e.to_string())?;
    }
    // The fast path is sampled once per run, between the runs of the
    // methods, so its figures span the bench like theirs (see per_call.rs).
    let mut fast = per_call::Timer::load(path, size)?;
    for r in 0..runs {
        for m in methods.iter_mut() {
            eprintln!("bench: run {}/{runs}: {}", r + 1, m.name);
            if o.cold {
                methods::drop_cache(path);
            }
            m.measure(path, size)?;
        }
        eprintln!("bench: run {}/{runs}: loaded fast path", r + 1);
        fast.sample()?;
    }
    let expected = methods[0].runs.first().map(|t| t.sum);
    if let Some(bad) = methods
        .iter()
        .find(|m| m.runs.iter().any(|t| Some(t.sum) != expected))
    {
        return Err(format!("{} saw different bytes (sum mismatch)", bad.name));
    }

    eprintln!("bench: {} threads racing on one slot", o.threads);
    let races = race_all(o, path)?;
    eprintln!(
        "bench: peak RSS of {} threads loading with read, in a child process",
        o.threads
    );
    let peak = methods::peak_rss_of_read_race(path, size, o.threads)?;
    eprintln!("bench: packed-weights cache (transpose as the packing stand-in)");
    let cache = {
        let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: a read-only mapping of the bench's own file, which nothing
        // modifies while the bench runs.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| e.to_string())?;
        crate::cache_bench::run(&map, path.parent().unwrap_or(Path::new(".")))?
    };
    for n in runs..per_call::MIN_SAMPLES {
        eprintln!(
            "bench: loaded fast path, sample {}/{}",
            n + 1,
            per_call::MIN_SAMPLES
        );
        fast.sample()?;
    }
    let fast = fast.finish()?;
    let steady = steady::measure(&path.with_extension("after-load.bin"), size, o.limit)?;
    let deploy = deploy::measure(&o.dir, size);

    let mut report = Report {
        methods,
        races,
        targets: Vec::new(),
        size,
        runs,
        cpus,
        cold: o.cold,
        threads: o.threads,
        fast,
        peak,
        cache,
        steady,
        deploy,
    };
    report.targets = targets_of(&report, o.limit)?;
    Ok(report)
}

/// Like the methods' rows: the best of `runs` races per strategy, run 1 of
/// every strategy before run 2, so a noisy spell is spread over all.
#[cfg(unix)]
fn race_all(o: &Options, path: &Path) -> Result<Vec<Race>, String> {
    let kinds = [
        (Strategy::Mmap, Choice::Mmap),
        (Strategy::Read, Choice::Read),
        (Strategy::ChunkedMmap, Choice::ChunkedMmap),
    ];
    let mut best: Vec<Option<Race>> = kinds.iter().map(|_| None).collect();
    for _ in 0..o.runs {
        for ((strategy, choice), best) in kinds.iter().zip(best.iter_mut()) {
            let c = methods::quiet(Config {
                strategy: *choice,
                mmap_limit: Some(o.limit),
                ..Config::default()
            });
            let r = methods::race(c, path, o.size, o.threads, *strategy)?;
            if best.as_ref().is_none_or(|b| r.total < b.total) {
                *best = Some(r);
            }
        }
    }
    best.into_iter()
        .collect::<Option<Vec<Race>>>()
        .ok_or_else(|| "no race ran".into())
}

/// The targets of the weights' speed after load, for the default.
#[cfg(unix)]
fn steady_targets(st: &steady::Steady) -> Vec<Target> {
    use steady::{State, Way};
    let default = Way::Om(Choice::Auto);
    let mut t = Vec::new();
    // A just-written file stays in the small pages it has under the
    // default (no re-read: docs/WEIGHTS-SPEED.md), so its targets are the
    // cold file's and the partly cached one's.
    for state in [State::Cold, State::PartlyCached] {
        let Some(r) = st.row(state, default) else {
            continue;
        };
        let name = state.name();
        t.push(Target::new(
            Goal::AfterLoadSequential,
            r.seq,
            format!("after load, {name}: default's sequential pass / 2 MiB-page heap copy"),
        ));
        t.push(Target::new(
            Goal::AfterLoadGather,
            r.gather,
            format!("after load, {name}: default's gather / 2 MiB-page heap copy"),
        ));
        // A partly cached file keeps the small pages its first reader's
        // readahead left: the default reads nothing to change them.
        if state == State::Cold {
            t.push(Target::new(
                Goal::AfterLoadSmallPages,
                1.0 - r.huge_share,
                format!("after load, {name}: share of the default's buffer not in 2 MiB pages"),
            ));
        }
    }
    if let (Some(om), Some(plain)) = (
        st.row(State::Cold, default),
        st.row(State::Cold, Way::PlainMmap),
    ) {
        t.push(Target::new(
            Goal::ColdLoadFirstPass,
            om.load_first.as_secs_f64() / plain.load_first.as_secs_f64(),
            "after load, cold: default's load + first pass / plain mmap's",
        ));
    }
    if let Some(r) = st.row(State::PartlyCached, default) {
        t.push(Target::new(
            Goal::LazyLoadCallMs,
            r.load_call.as_secs_f64() * 1e3,
            "after load, 16 KiB cached: default's load call (ms): reads nothing",
        ));
    }
    if let Some(r) = st.row(State::JustWritten, Way::OmReread) {
        t.push(Target::new(
            Goal::AfterLoadSequential,
            r.seq,
            "after load, just written: reread's sequential pass / 2 MiB-page heap copy",
        ));
        t.push(Target::new(
            Goal::AfterLoadGather,
            r.gather,
            "after load, just written: reread's gather / 2 MiB-page heap copy",
        ));
    }
    t.push(Target::new(
        Goal::RelayVsColdLoad,
        st.relay_vs_cold(),
        "after load: default's load + first pass of a just-written file / of a cold one",
    ));
    t
}

/// The targets of one run.
#[cfg(unix)]
fn targets_of(r: &Report, limit: u64) -> Result<Vec<Target>, String> {
    let best_pread = r.best_pread().ok_or("no pread baseline")?;
    let (base_read1, base_pread, base_mmap) = r.baselines();
    let om = |v| r.min_of(MethodId::Om(v));
    let om_read = om(Variant::Read);
    let read_free = r
        .methods
        .iter()
        .find(|m| m.id == MethodId::Om(Variant::Read))
        .map_or(f64::NAN, |m| m.worst_free().as_secs_f64());
    let single = |s: Strategy| match s {
        Strategy::Mmap => om(Variant::Mmap),
        Strategy::Read => om_read,
        Strategy::ChunkedMmap => om(Variant::Chunked),
    };
    let f = &r.fast.best;
    let ((fast1, fast2), (check1, check2)) = (f.ours, f.onnx_mlir);
    let packed_bytes = (r.cache.matrices << 22) as f64;
    let (size, threads) = (r.size as f64, r.threads);
    let mut t = vec![
        Target::new(
            Goal::ReadVsOneThreadRead,
            om_read / base_read1,
            "read total / 1-thread read baseline",
        ),
        Target::new(
            Goal::ReadVsBestPread,
            om_read / base_pread,
            format!("read total / best pread baseline ({})", best_pread.name),
        ),
        Target::new(
            Goal::MmapVsPlainMmap,
            om(Variant::Mmap) / base_mmap,
            "mmap total / plain mmap baseline",
        ),
        Target::new(
            Goal::ChunkedVsPlainMmap,
            om(Variant::Chunked) / base_mmap,
            format!("chunked-mmap ({} MiB pieces) / plain mmap", limit >> 20),
        ),
        Target::new(
            Goal::ChunkedVsRead,
            om(Variant::Chunked) / om_read,
            "chunked-mmap / om read",
        ),
        Target::new(
            Goal::ReadFreeMs,
            read_free * 1e3,
            format!("read: free of {} MiB (ms, worst run)", r.size >> 20),
        ),
        Target::new(Goal::FastPathNs, fast1, "fast path ns/call, 1 thread"),
        Target::new(
            Goal::FastPathVsOnnxMlir,
            fast1 / check1,
            format!("fast path / onnx-mlir's NULL check ({check1:.2} ns, same run)"),
        ),
        Target::new(
            Goal::FastPathTwoThreads,
            fast2 / fast1,
            format!(
                "fast path 2 threads / 1 thread (onnx-mlir's check: {:.3})",
                check2 / check1
            ),
        ),
        Target::new(
            Goal::ReadRacePeakRss,
            r.peak as f64 / size,
            format!("read race: peak RSS / file size ({threads} threads)"),
        ),
        Target::new(
            Goal::CachePacks,
            r.cache.second.packs as f64,
            "cache: packing calls at the second start",
        ),
        Target::new(
            Goal::CacheAnonAfterCommit,
            r.cache.first.anon as f64 / packed_bytes,
            "cache: anonymous memory after commit / packed bytes",
        ),
        Target::new(
            Goal::CacheAnonSecondStart,
            r.cache.second.anon as f64 / packed_bytes,
            "cache: anonymous memory at the second start / packed bytes",
        ),
    ];
    for race in &r.races {
        let s = race.strategy;
        t.push(Target::new(
            Goal::RaceWall(s),
            race.total.as_secs_f64() / single(s),
            format!(
                "{} race: {threads} threads wall / single load (load+pass+free)",
                s.name()
            ),
        ));
        t.push(Target::new(
            Goal::RaceLoads(s),
            race.stats.loads as f64,
            format!("{} race: loads (must be 1)", s.name()),
        ));
        if s == Strategy::Read {
            t.push(Target::new(
                Goal::ReadRaceBytes,
                race.stats.bytes_read as f64 / size,
                "read race: bytes read / file size",
            ));
        }
    }
    t.extend(steady_targets(&r.steady));
    if let Some(f) = &r.deploy.fuse {
        t.push(Target::new(
            Goal::NetworkVsPread,
            1.0 / f.vs_pread(),
            "FUSE volume: default's load / a parallel pread of the file (same run)",
        ));
    }
    Ok(t)
}
