//! What the bench times: the baselines and the library's strategies (each
//! a [`Method`], one load + first pass + free per run), the race of many
//! threads on one slot, and the peak memory of a `read` race.

use std::io::Write;
use std::os::raw::c_void;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use om_constants::config::Prefetch;
use om_constants::{Choice, Config, Registry, Request, Stats, Strategy};

use crate::baseline::{self, Timing};
use crate::pass::sum;
use crate::HOST_IS_LE;

/// A method the bench times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MethodId {
    /// Baseline: a plain `mmap` of the file.
    PlainMmap,
    /// Baseline: onnx-mlir's z/OS fallback, one thread `read()` into fresh
    /// memory.
    OneThreadRead,
    /// Baseline: `pread` by N threads into huge pages.
    Pread(usize),
    /// The library.
    Om(Variant),
}

/// The library's configurations the bench times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Mmap,
    MmapPopulate,
    MmapBackground,
    Read,
    ReadDirect,
    Chunked,
    Auto,
}

impl MethodId {
    /// Every method, in the table's order, for a machine of `cpus`.
    pub(super) fn all(cpus: usize) -> Vec<MethodId> {
        let mut pread: Vec<usize> = vec![1, 2, cpus];
        pread.sort();
        pread.dedup();
        let mut all = vec![MethodId::PlainMmap, MethodId::OneThreadRead];
        all.extend(pread.into_iter().map(MethodId::Pread));
        all.extend(
            [
                Variant::Mmap,
                Variant::MmapPopulate,
                Variant::MmapBackground,
                Variant::Read,
                Variant::ReadDirect,
                Variant::Chunked,
                Variant::Auto,
            ]
            .map(MethodId::Om),
        );
        all
    }

    /// Its name in the table and the JSON (`limit`: chunked-mmap's piece).
    pub(super) fn name(self, limit: u64) -> String {
        let mib = limit >> 20;
        match self {
            MethodId::PlainMmap => "baseline: mmap + pass".into(),
            MethodId::OneThreadRead => "baseline: read, 1 thread (onnx-mlir z/OS)".into(),
            MethodId::Pread(n) => format!("baseline: pread, {n} thread(s), huge pages"),
            MethodId::Om(Variant::Mmap) => "om: mmap".into(),
            MethodId::Om(Variant::MmapPopulate) => "om: mmap, prefetch=populate".into(),
            MethodId::Om(Variant::MmapBackground) => "om: mmap, prefetch=background".into(),
            MethodId::Om(Variant::Read) => "om: read".into(),
            MethodId::Om(Variant::ReadDirect) => "om: read, direct-io".into(),
            MethodId::Om(Variant::Chunked) => format!("om: chunked-mmap, limit {mib} MiB"),
            MethodId::Om(Variant::Auto) => format!("om: auto, limit {mib} MiB"),
        }
    }

    /// The library's options for a library method.
    fn config(variant: Variant, limit: u64) -> Config {
        let mut c = quiet(Config::default());
        match variant {
            Variant::Mmap => c.strategy = Choice::Mmap,
            Variant::MmapPopulate => {
                c.strategy = Choice::Mmap;
                c.prefetch = Prefetch::Populate;
            }
            Variant::MmapBackground => {
                c.strategy = Choice::Mmap;
                c.prefetch = Prefetch::Background;
            }
            Variant::Read => c.strategy = Choice::Read,
            Variant::ReadDirect => {
                c.strategy = Choice::Read;
                c.direct_io = true;
            }
            Variant::Chunked => {
                c.strategy = Choice::ChunkedMmap;
                c.mmap_limit = Some(limit);
            }
            Variant::Auto => {
                c.strategy = Choice::Auto;
                c.mmap_limit = Some(limit);
            }
        }
        c
    }
}

/// A method and its runs.
pub(super) struct Method {
    pub id: MethodId,
    pub name: String,
    config: Option<Config>,
    pub runs: Vec<Timing>,
}

impl Method {
    pub(super) fn new(id: MethodId, limit: u64) -> Method {
        Method {
            id,
            name: id.name(limit),
            config: match id {
                MethodId::Om(v) => Some(MethodId::config(v, limit)),
                _ => None,
            },
            runs: Vec::new(),
        }
    }

    /// One more run: load, first pass, free.
    pub(super) fn measure(&mut self, path: &Path, size: usize) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        let t = match (self.id, &self.config) {
            (MethodId::PlainMmap, _) => baseline::mmap_pass(path, size).map_err(io)?,
            (MethodId::OneThreadRead, _) => baseline::read_single(path, size).map_err(io)?,
            (MethodId::Pread(n), _) => baseline::pread_parallel(path, size, n).map_err(io)?,
            (MethodId::Om(_), Some(c)) => library(c, path, size)?.0,
            (MethodId::Om(_), None) => return Err(format!("{}: no options", self.name)),
        };
        self.runs.push(t);
        Ok(())
    }

    fn totals(&self) -> Vec<Duration> {
        let mut t: Vec<Duration> = self.runs.iter().map(Timing::total).collect();
        t.sort();
        t
    }

    /// The fastest run's total.
    pub(super) fn min(&self) -> Duration {
        self.totals().first().copied().unwrap_or_default()
    }

    /// The median run's total.
    pub(super) fn median(&self) -> Duration {
        let t = self.totals();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }

    /// The run whose total is the median, for its components.
    pub(super) fn median_run(&self) -> Timing {
        let m = self.median();
        self.runs
            .iter()
            .find(|r| r.total() == m)
            .or(self.runs.first())
            .copied()
            .unwrap_or_default()
    }

    /// The slowest free of any run.
    pub(super) fn worst_free(&self) -> Duration {
        self.runs.iter().map(|r| r.free).max().unwrap_or_default()
    }
}

/// The library's options with its log off (the bench reports errors).
pub(super) fn quiet(c: Config) -> Config {
    Config {
        log: om_constants::log::Level::Off,
        ..c
    }
}

/// One load + pass + free through a fresh registry with `config`.
fn library(config: &Config, path: &Path, size: usize) -> Result<(Timing, Stats), String> {
    let reg = Registry::new(config.clone());
    let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
    let req = Request::new(path.as_os_str(), size as i64, HOST_IS_LE).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let p = reg.acquire(&slot, &req).map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    // SAFETY: the buffer holds `size` bytes while we hold the reference.
    let s = unsafe { sum(p.cast(), size) };
    let t2 = Instant::now();
    let stats = reg.stats();
    reg.release(&slot).map_err(|e| e.to_string())?;
    Ok((
        Timing {
            load: t1 - t0,
            pass: t2 - t1,
            free: t2.elapsed(),
            sum: s,
        },
        stats,
    ))
}

/// A race of many threads on one slot.
pub(super) struct Race {
    pub strategy: Strategy,
    pub total: Duration,
    pub acquired: Duration,
    pub stats: Stats,
}

/// `threads` threads acquire one slot at once; then one pass; then all
/// release. Total wall time, and the time until all had acquired.
pub(super) fn race(
    config: Config,
    path: &Path,
    size: usize,
    threads: usize,
    strategy: Strategy,
) -> Result<Race, String> {
    let name = strategy.name();
    let reg = Arc::new(Registry::new(config));
    let slot: &'static AtomicPtr<c_void> =
        Box::leak(Box::new(AtomicPtr::new(std::ptr::null_mut())));
    let gates: Vec<Arc<Barrier>> = (0..3)
        .map(|_| Arc::new(Barrier::new(threads + 1)))
        .collect();
    let name_os = path.as_os_str().to_os_string();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (reg, gates, name_os) = (reg.clone(), gates.clone(), name_os.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let req =
                    Request::new(&name_os, size as i64, HOST_IS_LE).map_err(|e| e.to_string())?;
                gates[0].wait();
                let r = reg
                    .acquire(slot, &req)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                gates[1].wait();
                gates[2].wait();
                r?;
                reg.release(slot).map_err(|e| e.to_string())
            })
        })
        .collect();
    let t0 = Instant::now();
    gates[0].wait();
    gates[1].wait();
    let acquired = t0.elapsed();
    let p = slot.load(Ordering::Acquire);
    if p.is_null() {
        gates[2].wait();
        return Err(format!("{name}: race: the slot is empty after acquire"));
    }
    // SAFETY: every thread holds a reference until gate 2 opens.
    std::hint::black_box(unsafe { sum(p.cast(), size) });
    let stats = reg.stats();
    gates[2].wait();
    for h in handles {
        h.join().map_err(|_| "race thread panicked".to_string())??;
    }
    Ok(Race {
        strategy,
        total: t0.elapsed(),
        acquired,
        stats,
    })
}

/// Writes the bench's constants file: `size` bytes of a known pattern.
pub(super) fn generate(path: &Path, size: u64) -> Result<(), String> {
    let mut f = std::io::BufWriter::with_capacity(
        8 << 20,
        std::fs::File::create(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
    );
    let mut k = 0u64;
    let mut left = size;
    let mut block = vec![0u8; 8 << 20];
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            w.copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            k += 1;
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        left -= n as u64;
    }
    f.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Drops `path` from the page cache (for `--cold`).
pub(super) fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a hint on our own descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// The peak RSS of `threads` threads loading `path` with `read`, in a
/// child process (this tool's `load`), so that it is that load's alone.
pub(super) fn peak_rss_of_read_race(
    path: &Path,
    size: usize,
    threads: usize,
) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("load")
        .arg(path)
        .args([
            "--size",
            &size.to_string(),
            "--strategy",
            "read",
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "load child failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("peak_rss_bytes="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no peak_rss_bytes in: {text}"))
}
