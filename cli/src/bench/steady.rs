//! The weights' speed after load (docs/WEIGHTS-SPEED.md): for each way of
//! loading, in two page-cache states, the share of the buffer in 2 MiB
//! pages, the load with its first pass, and then the passes every
//! inference makes (a sequential sum, and a gather: one 8-byte read per
//! random 64-byte line, as embedding lookups and sparse weights read),
//! alternating in this process with a 2 MiB-page heap copy of the same
//! bytes: the ratios are to that copy, measured in the same run.
//!
//! The states are the ones every deployment passes through: "just written"
//! (the file written in 1 MiB pieces, as a compiler or `cp` writes it: its
//! page cache in small folios) and "cold" (written back and dropped from
//! the page cache). The file is written anew before each load in the
//! first state, so no load inherits another's page cache.

use std::alloc::Layout;
use std::io::Write;
use std::os::raw::c_void;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicPtr;
use std::time::{Duration, Instant};

use om_constants::config::HugePages;
use om_constants::{Choice, Config, Registry, Request};
use serde_json::{json, Value};

use super::methods::quiet;
use crate::pass::sum;
use crate::HOST_IS_LE;

/// Alternating passes over the buffer and the heap copy; the best of each
/// is compared.
const PASSES: usize = 5;
const HUGE: usize = 2 << 20;

/// A page-cache state before the load.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    JustWritten,
    Cold,
    /// Cold but for its first 16 KiB (a `head`, a checksum of the first
    /// block): the load must not read the rest.
    PartlyCached,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            State::JustWritten => "just written",
            State::Cold => "cold",
            State::PartlyCached => "16 KiB cached",
        }
    }
}

/// How the buffer is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    /// A plain `mmap` of the file, as onnx-mlir's loader makes it.
    PlainMmap,
    /// The library, with the default options but for the strategy.
    Om(Choice),
    /// The library, `auto` with `OM_CONSTANT_HUGE_PAGES=reread`.
    OmReread,
}

impl Way {
    pub(super) fn name(self) -> String {
        match self {
            Way::PlainMmap => "plain mmap (onnx-mlir's loader)".into(),
            Way::Om(Choice::Auto) => "om auto (the default)".into(),
            Way::Om(c) => format!("om {}", choice_name(c)),
            Way::OmReread => "om auto, reread".into(),
        }
    }
}

fn choice_name(c: Choice) -> &'static str {
    match c {
        Choice::Auto => "auto",
        Choice::Mmap => "mmap",
        Choice::Read => "read",
        Choice::ChunkedMmap => "chunked-mmap",
    }
}

/// One load measured in one state.
pub(super) struct Row {
    pub state: State,
    pub way: Way,
    /// Writing the just-written file back before the load (the kernel owes
    /// it anyway; reported apart, and not in `load_first`).
    pub writeback: Duration,
    /// The load call alone.
    pub load_call: Duration,
    /// Load and first full pass.
    pub load_first: Duration,
    /// Share of the buffer in 2 MiB pages after the first pass.
    pub huge_share: f64,
    /// Best sequential pass over the buffer / over the heap copy.
    pub seq: f64,
    /// Best gather over the buffer / over the heap copy.
    pub gather: f64,
    /// The heap copy's share in 2 MiB pages (the baseline's own check).
    pub heap_share: f64,
    /// Best sequential pass over the buffer, for the break-even.
    pub seq_best: Duration,
}

/// The section's figures.
pub(super) struct Steady {
    pub rows: Vec<Row>,
}

impl Steady {
    pub(super) fn row(&self, state: State, way: Way) -> Option<&Row> {
        self.rows.iter().find(|r| r.state == state && r.way == way)
    }

    /// The default's load + first pass in the just-written state (the
    /// re-lay's one-time cost included) / the same for a cold file.
    pub(super) fn relay_vs_cold(&self) -> f64 {
        let d = Way::Om(Choice::Auto);
        match (self.row(State::JustWritten, d), self.row(State::Cold, d)) {
            (Some(w), Some(c)) => w.load_first.as_secs_f64() / c.load_first.as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// Passes after which the default's one-time re-lay has paid for itself
    /// against plain mmap, on a just-written file (sequential passes).
    pub(super) fn break_even_passes(&self) -> f64 {
        let (d, p) = (Way::Om(Choice::Auto), Way::PlainMmap);
        match (
            self.row(State::JustWritten, d),
            self.row(State::JustWritten, p),
        ) {
            (Some(om), Some(plain)) => {
                let cost = om.load_first.as_secs_f64() - plain.load_first.as_secs_f64();
                let gain = plain.seq_best.as_secs_f64() - om.seq_best.as_secs_f64();
                if cost <= 0.0 {
                    0.0
                } else if gain <= 0.0 {
                    f64::INFINITY
                } else {
                    cost / gain
                }
            }
            _ => f64::NAN,
        }
    }

    pub(super) fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "The weights' speed after load: passes over the buffer / over a 2 MiB-page heap copy \
             of the same bytes (best of {PASSES}, alternating):"
        );
        let _ = writeln!(
            out,
            "{:<14} {:<32} {:>10} {:>10} {:>14} {:>8} {:>8} {:>10}",
            "page cache",
            "way",
            "huge pages",
            "load (ms)",
            "load+1st (ms)",
            "seq",
            "gather",
            "writeback"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<14} {:<32} {:>9.1}% {:>10.2} {:>14.2} {:>8.3} {:>8.3} {:>10}",
                r.state.name(),
                r.way.name(),
                r.huge_share * 100.0,
                r.load_call.as_secs_f64() * 1e3,
                r.load_first.as_secs_f64() * 1e3,
                r.seq,
                r.gather,
                if r.state == State::JustWritten {
                    format!("{:.2} ms", r.writeback.as_secs_f64() * 1e3)
                } else {
                    "-".into()
                }
            );
        }
        let _ = writeln!(
            out,
            "  the default on a just-written file: load + first pass {:.3}x a cold load's; \
             its extra cost over plain mmap pays back after {:.1} sequential passes; heap \
             copies {:.0}% in 2 MiB pages",
            self.relay_vs_cold(),
            self.break_even_passes(),
            self.rows.iter().map(|r| r.heap_share).fold(1.0, f64::min) * 100.0
        );
        out
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "passes": PASSES,
            "rows": self.rows.iter().map(|r| json!({
                "page_cache": r.state.name(),
                "way": r.way.name(),
                "huge_page_share": r.huge_share,
                "load_call_ms": r.load_call.as_secs_f64() * 1e3,
                "load_first_pass_ms": r.load_first.as_secs_f64() * 1e3,
                "writeback_ms": r.writeback.as_secs_f64() * 1e3,
                "sequential_vs_heap_copy": r.seq,
                "gather_vs_heap_copy": r.gather,
                "heap_copy_huge_page_share": r.heap_share,
            })).collect::<Vec<_>>(),
            "relay_vs_cold_load_first_pass": self.relay_vs_cold(),
            "break_even_sequential_passes": self.break_even_passes(),
        })
    }
}

/// Measures every way in both states on a file of `size` bytes at `path`
/// (written anew here), with `limit` as `chunked-mmap`'s piece size.
pub(super) fn measure(path: &Path, size: usize, limit: u64) -> Result<Steady, String> {
    let ways = [
        Way::PlainMmap,
        Way::Om(Choice::Auto),
        Way::Om(Choice::Read),
        Way::Om(Choice::ChunkedMmap),
        Way::OmReread,
    ];
    let mut rows = Vec::new();
    for state in [State::JustWritten, State::Cold, State::PartlyCached] {
        for way in ways {
            // `reread` differs from the default only where it re-lays.
            if way == Way::OmReread && state != State::JustWritten {
                continue;
            }
            eprintln!(
                "bench: after load, {} page cache: {}",
                state.name(),
                way.name()
            );
            write_in_pieces(path, size)?;
            let writeback = write_back(path)?;
            if state != State::JustWritten {
                drop_cache(path)?;
            }
            if state == State::PartlyCached {
                let mut head = [0u8; 16384];
                let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
                std::io::Read::read_exact(&mut f, &mut head).map_err(|e| e.to_string())?;
            }
            rows.push(one(path, size, limit, state, way, writeback)?);
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(Steady { rows })
}

/// The file as a compiler writes it: 1 MiB pieces.
pub(super) fn write_in_pieces(path: &Path, size: usize) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    // A new file each time: the old one's page cache goes with it.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::File::create(path).map_err(fail)?;
    let mut piece = vec![0u8; 1 << 20];
    let mut k = 0u64;
    let mut left = size;
    while left > 0 {
        for w in piece.chunks_exact_mut(8) {
            w.copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            k += 1;
        }
        let n = left.min(piece.len());
        f.write_all(&piece[..n]).map_err(fail)?;
        left -= n;
    }
    Ok(())
}

pub(super) fn write_back(path: &Path) -> Result<Duration, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let t = Instant::now();
    f.sync_data().map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

pub(super) fn drop_cache(path: &Path) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: a hint on our own descriptor; it changes no memory.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!(
            "posix_fadvise: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    Ok(())
}

/// The buffer a way made, released on drop.
pub(super) enum Loaded {
    Plain(memmap2::Mmap),
    Om(Box<Registry>, Box<AtomicPtr<c_void>>),
}

impl Loaded {
    pub(super) fn ptr(&self) -> *const u8 {
        match self {
            Loaded::Plain(m) => m.as_ptr(),
            Loaded::Om(_, slot) => slot.load(std::sync::atomic::Ordering::Acquire) as *const u8,
        }
    }

    /// Waits for the library's 2 MiB-page helper; its note, if any.
    pub(super) fn settle(&self) -> Option<String> {
        match self {
            Loaded::Plain(_) => None,
            Loaded::Om(reg, _) => reg
                .page_report(self.ptr().cast(), Duration::from_secs(3600))
                .and_then(|r| r.note),
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if let Loaded::Om(reg, slot) = self {
            let _ = reg.release(slot);
        }
    }
}

pub(super) fn load(path: &Path, size: usize, limit: u64, way: Way) -> Result<Loaded, String> {
    match way {
        Way::PlainMmap => {
            let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
            // SAFETY: a read-only mapping of the bench's own file, which
            // nothing changes while it is mapped.
            let m = unsafe { memmap2::MmapOptions::new().len(size).map(&f) }
                .map_err(|e| e.to_string())?;
            Ok(Loaded::Plain(m))
        }
        Way::Om(_) | Way::OmReread => {
            let (choice, huge_pages) = match way {
                Way::Om(c) => (c, Config::default().huge_pages),
                _ => (Choice::Auto, HugePages::Reread),
            };
            let reg = Registry::new(quiet(Config {
                strategy: choice,
                mmap_limit: Some(limit),
                huge_pages,
                ..Config::default()
            }));
            debug_assert_eq!(Config::default().huge_pages, HugePages::On);
            let slot = Box::new(AtomicPtr::new(std::ptr::null_mut::<c_void>()));
            let req = Request::new(path.as_os_str(), size as i64, HOST_IS_LE)
                .map_err(|e| e.to_string())?;
            reg.acquire(&slot, &req).map_err(|e| e.to_string())?;
            Ok(Loaded::Om(Box::new(reg), slot))
        }
    }
}

fn one(
    path: &Path,
    size: usize,
    limit: u64,
    state: State,
    way: Way,
    writeback: Duration,
) -> Result<Row, String> {
    let t = Instant::now();
    let loaded = load(path, size, limit, way)?;
    let load_call = t.elapsed();
    let p = loaded.ptr();
    // SAFETY: `size` readable bytes at `p`, alive while `loaded` is.
    let first = unsafe { sum(p, size) };
    let load_first = t.elapsed();
    // The passes below measure the buffer as the helper leaves it.
    loaded.settle();
    let huge_share = share_in_huge_pages(p, size);

    let heap = HeapCopy::of(p, size)?;
    // SAFETY: the heap copy holds `size` bytes.
    if unsafe { sum(heap.ptr, size) } != first {
        return Err("the heap copy differs from the buffer".into());
    }
    let heap_share = share_in_huge_pages(heap.ptr, size);
    let (mut seq, mut seq_heap) = (Duration::MAX, Duration::MAX);
    let (mut gat, mut gat_heap) = (Duration::MAX, Duration::MAX);
    for _ in 0..PASSES {
        seq = seq.min(timed(|| {
            // SAFETY: as above.
            unsafe { sum(p, size) }
        }));
        seq_heap = seq_heap.min(timed(|| {
            // SAFETY: the heap copy holds `size` bytes.
            unsafe { sum(heap.ptr, size) }
        }));
        gat = gat.min(timed(|| gather(p, size)));
        gat_heap = gat_heap.min(timed(|| gather(heap.ptr, size)));
    }
    Ok(Row {
        state,
        way,
        writeback,
        load_call,
        load_first,
        huge_share,
        seq: seq.as_secs_f64() / seq_heap.as_secs_f64(),
        gather: gat.as_secs_f64() / gat_heap.as_secs_f64(),
        heap_share,
        seq_best: seq,
    })
}

fn timed(f: impl FnOnce() -> u64) -> Duration {
    let t = Instant::now();
    std::hint::black_box(f());
    t.elapsed()
}

/// One 8-byte read per random 64-byte line, as many reads as the buffer
/// has lines (at most 4 Mi of them, to bound the time).
pub(super) fn gather(p: *const u8, size: usize) -> u64 {
    let lines = size / 64;
    if lines == 0 {
        return 0;
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut acc = 0u64;
    for _ in 0..lines.min(4 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = (x % lines as u64) as usize;
        // SAFETY: line*64 + 8 <= size; the line start is 8-byte aligned.
        acc = acc.wrapping_add(unsafe { std::ptr::read_volatile(p.add(line * 64).cast::<u64>()) });
    }
    acc
}

/// A 2 MiB-aligned heap copy advised `MADV_HUGEPAGE` before it is written:
/// the same bytes in 2 MiB pages, the baseline every ratio divides by.
struct HeapCopy {
    ptr: *mut u8,
    layout: Layout,
}

impl HeapCopy {
    fn of(src: *const u8, size: usize) -> Result<HeapCopy, String> {
        let layout = Layout::from_size_align(size.next_multiple_of(HUGE), HUGE)
            .map_err(|e| e.to_string())?;
        // SAFETY: a non-zero size (the bench's file is at least 8 bytes).
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(format!("cannot allocate {size} bytes for the heap copy"));
        }
        // SAFETY: [ptr, ptr+layout.size()) is our fresh allocation; the
        // advice changes how it is backed, not its contents. Then `size`
        // bytes are copied from the live buffer `src` into it.
        unsafe {
            libc::madvise(ptr.cast(), layout.size(), libc::MADV_HUGEPAGE);
            std::ptr::copy_nonoverlapping(src, ptr, size);
        }
        Ok(HeapCopy { ptr, layout })
    }
}

impl Drop for HeapCopy {
    fn drop(&mut self) {
        // SAFETY: allocated in `of` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The share of `[p, p+size)` in 2 MiB pages, as the library reads it
/// from the kernel's page tables.
pub(super) fn share_in_huge_pages(p: *const u8, size: usize) -> f64 {
    (om_constants::huge_backed_bytes(p, size) as f64 / size as f64).min(1.0)
}
