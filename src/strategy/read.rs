//! The `read` strategy: an aligned heap buffer filled with `pread`, in
//! parallel.
//!
//! On a warm page cache the cost of `read` is page-faulting the destination,
//! not copying; so the file is split into 2 MiB-aligned ranges, one per
//! thread (at most `OM_CONSTANT_READ_THREADS`, and the CPUs), and each
//! thread faults in and fills its own huge pages. Each range is read in
//! chunks of at most 1 GiB (z/OS and some kernels cap one transfer), looping
//! on short reads and `EINTR`; a zero-byte read before the end is an error:
//! the file shrank after it was checked.
//!
//! With `OM_CONSTANT_DIRECT_IO=1` the block-aligned part of each range is
//! read with `O_DIRECT` (no second copy in the page cache, for cold loads of
//! files larger than spare RAM); where the file system refuses, the load
//! falls back to buffered reads and says so in the stats and the log.

use std::fs::File;
use std::io;
use std::ops::Range;

use super::heap::{HeapBuf, HUGE_PAGE};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::source::Source;
use crate::sys::{self, Access};

/// The largest single `pread`.
pub(super) const CHUNK: usize = 1 << 30;

/// Below this size one thread reads: spawning costs more than it saves.
pub(super) const PARALLEL_MIN: usize = 16 << 20;

/// `O_DIRECT` transfers are aligned to this (the largest common logical
/// block size; our buffer and range starts are at least this aligned).
const DIRECT_ALIGN: usize = 4096;

/// What a read did besides filling the buffer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReadStats {
    /// Threads used.
    pub threads: usize,
    /// Bytes read with `O_DIRECT`.
    pub direct_bytes: u64,
    /// `O_DIRECT` was asked for and refused somewhere.
    pub direct_refused: bool,
}

/// Allocates `len` bytes and fills them from the start of `source`. On a
/// `remote` volume the threads wait on the network, not on the CPUs: as
/// many as `OM_CONSTANT_READ_THREADS` allows run, however few CPUs there
/// are, so that that many large requests are in flight.
pub(super) fn read(
    source: &Source,
    len: usize,
    config: &Config,
    remote: bool,
) -> Result<(HeapBuf, ReadStats)> {
    let buf = HeapBuf::alloc(len, config.huge_pages.wanted()).ok_or_else(|| {
        Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "cannot allocate {len} bytes for constants file '{}' ({}); free memory, \
                     or use OM_CONSTANT_LOAD=mmap so the file is mapped instead of copied",
                source.fname,
                source.path.display()
            ),
        )
    })?;
    sys::advise_file(&source.file, 0, len, Access::Sequential);

    let mut stats = ReadStats::default();
    let direct = if config.direct_io {
        match open_direct(source) {
            Ok(f) => Some(f),
            Err(_) => {
                stats.direct_refused = true;
                None
            }
        }
    } else {
        None
    };
    let direct = direct.as_ref();

    let threads = if remote && len >= PARALLEL_MIN {
        config.read_threads
    } else {
        thread_count(len, config.read_threads)
    };
    let ranges = split(len, threads, HUGE_PAGE);
    stats.threads = ranges.len();
    let dst = buf.as_ptr() as usize;
    let jobs: Vec<Box<dyn FnOnce() -> Result<RangeStats> + Send + '_>> = ranges
        .iter()
        .cloned()
        .map(|r| {
            Box::new(move || fill_range(source, direct, dst, r))
                as Box<dyn FnOnce() -> Result<RangeStats> + Send + '_>
        })
        .collect();
    let results = crate::threads::run_all(jobs);
    for r in results {
        // On error `buf` is dropped on return, so nothing leaks.
        let r =
            r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "a read thread panicked")))?;
        stats.direct_bytes += r.direct_bytes;
        stats.direct_refused |= r.direct_refused;
    }
    Ok((buf, stats))
}

/// Threads for a `len`-byte read: 1 below [`PARALLEL_MIN`], else the
/// smaller of `max` and the CPUs.
pub(super) fn thread_count(len: usize, max: usize) -> usize {
    if len < PARALLEL_MIN {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    max.min(cpus).max(1)
}

/// Splits `0..len` into at most `parts` contiguous ranges whose starts are
/// multiples of `align` (so no two threads fault the same huge page).
pub(super) fn split(len: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let per = len.div_ceil(parts.max(1)).div_ceil(align).max(1) * align;
    (0..parts)
        .map(|i| (i * per).min(len)..((i + 1) * per).min(len))
        .filter(|r| !r.is_empty())
        .collect()
}

#[derive(Default)]
struct RangeStats {
    direct_bytes: u64,
    direct_refused: bool,
}

/// Fills `range` of the buffer at `dst` from the same range of the file.
fn fill_range(
    source: &Source,
    direct: Option<&File>,
    dst: usize,
    range: Range<usize>,
) -> Result<RangeStats> {
    let mut stats = RangeStats::default();
    sys::advise_file(&source.file, range.start, range.len(), Access::WillNeed);
    let mut at = range.start;
    if let Some(direct) = direct {
        let aligned_end = range.start + (range.len() / DIRECT_ALIGN) * DIRECT_ALIGN;
        match fill(direct, dst, at..aligned_end) {
            Ok(()) => {
                stats.direct_bytes = (aligned_end - at) as u64;
                at = aligned_end;
            }
            // Refused mid-way (EINVAL: alignment or file system): the rest
            // of the range is read buffered; anything else is a real error.
            Err((done, e)) if sys::refuses_direct_io(&e) => {
                stats.direct_bytes = (done - at) as u64;
                stats.direct_refused = true;
                at = done;
            }
            Err((done, e)) => return Err(read_error(source, done, range.end, &e)),
        }
    }
    fill(&source.file, dst, at..range.end)
        .map_err(|(done, e)| read_error(source, done, range.end, &e))?;
    Ok(stats)
}

/// Reads file bytes `range` into the same offsets of the buffer at `dst`;
/// on failure, how far it got and why.
fn fill(
    file: &File,
    dst: usize,
    range: Range<usize>,
) -> std::result::Result<(), (usize, io::Error)> {
    let mut at = range.start;
    while at < range.end {
        let want = (range.end - at).min(CHUNK);
        // SAFETY: dst+at .. dst+at+want lies inside the caller's buffer
        // (at + want <= range.end <= its length), and this thread is the
        // only one touching this range while the slice lives (the ranges
        // of the threads are disjoint, and the buffer is not shared until
        // the load completes).
        let buf = unsafe { std::slice::from_raw_parts_mut((dst + at) as *mut u8, want) };
        match sys::pread(file, buf, at as u64) {
            Ok(0) => return Err((at, io::Error::from(io::ErrorKind::UnexpectedEof))),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}

fn read_error(source: &Source, at: usize, end: usize, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return Error::new(
            ErrorKind::TooShort,
            format!(
                "constants file {} ended at byte {at} while reading up to byte {end}: \
                 it shrank after it was opened; do not rewrite the file in place while \
                 models load (replace it by rename)",
                crate::error::file(&source.fname, &source.path)
            ),
        );
    }
    Error::io(
        &format!("read (at byte {at})"),
        &source.fname,
        &source.path,
        e,
    )
}

/// Opens the source's file again with `O_DIRECT`. By path, so the open is
/// checked to have reached the same inode as `source.file`: if the file was
/// replaced by rename since it was opened, direct reads would fill the
/// buffer with another file's bytes, so direct I/O is refused instead and
/// everything is read from the original descriptor.
fn open_direct(source: &Source) -> io::Result<File> {
    let f = sys::open_direct(&source.path)?;
    if !source.key.same_file(&f)? {
        return Err(io::Error::other("the file was replaced while loading"));
    }
    Ok(f)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_once_with_aligned_starts() {
        for (len, parts, align) in [
            (10usize, 3usize, 4usize),
            (1, 4, 4096),
            (HUGE_PAGE * 5 + 7, 2, HUGE_PAGE),
            (HUGE_PAGE * 3, 8, HUGE_PAGE),
            (123_456_789, 7, HUGE_PAGE),
        ] {
            let r = split(len, parts, align);
            assert!(r.len() <= parts && !r.is_empty(), "{len} {parts}: {r:?}");
            assert_eq!(r[0].start, 0);
            assert_eq!(r.last().unwrap().end, len);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start, "contiguous");
            }
            assert!(r.iter().all(|x| x.start % align == 0), "{r:?}");
        }
    }

    /// The property the read threads rely on, for any length, number of
    /// parts and alignment: the ranges cover 0..len exactly once, in order,
    /// each non-empty and starting on the alignment.
    #[test]
    fn split_holds_for_any_length_parts_and_alignment() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Under Miri (scripts/miri.sh), which interprets every step, a
        // sample that ends in seconds; natively, the full sweep.
        let cases = if cfg!(miri) { 300 } else { 200_000 };
        for _ in 0..cases {
            let align = 1usize << (next() % 22);
            let len = (next() >> (next() % 64)) as usize % (1 << 40);
            let parts = 1 + (next() % 64) as usize;
            let r = split(len, parts, align);
            if len == 0 {
                assert!(r.is_empty());
                continue;
            }
            assert!(
                !r.is_empty() && r.len() <= parts,
                "{len} {parts} {align}: {r:?}"
            );
            assert_eq!((r[0].start, r[r.len() - 1].end), (0, len));
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert!(r.iter().all(|x| x.start % align == 0 && !x.is_empty()));
        }
    }

    /// A file of `len` pattern bytes in a fresh folder (removed on drop).
    /// (Its users, direct I/O tests, are Unix-only.)
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) struct TestFile {
        pub dir: std::path::PathBuf,
        pub path: std::path::PathBuf,
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    impl TestFile {
        pub(super) fn new(tag: &str, len: usize) -> TestFile {
            let dir = std::env::temp_dir().join(format!("om-read-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("c.bin");
            std::fs::write(&path, (0..len).map(pattern).collect::<Vec<_>>()).unwrap();
            TestFile { dir, path }
        }
    }

    impl Drop for TestFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn pattern(i: usize) -> u8 {
        ((i * 131 + i / 4099) % 251) as u8
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn assert_pattern(buf: &HeapBuf, len: usize) {
        // SAFETY: the buffer holds `len` initialised bytes (read filled them).
        let got = unsafe { std::slice::from_raw_parts(buf.as_ptr(), len) };
        let bad = got.iter().enumerate().find(|(i, b)| **b != pattern(*i));
        assert!(bad.is_none(), "byte mismatch at {bad:?}");
    }

    #[cfg(unix)] // direct I/O, and a rename over an open file
    #[test]
    fn direct_io_never_mixes_in_the_bytes_of_a_file_renamed_over_the_opened_one() {
        let size = 4 * 4096 + 100;
        let f = TestFile::new("replaced", size);
        let source = Source::open(&f.path, "c.bin", size as u64).unwrap();
        // Replaced by rename after the file was opened, before it is read.
        let tmp = f.dir.join("c.bin.tmp");
        std::fs::write(&tmp, vec![0xEEu8; size]).unwrap();
        std::fs::rename(&tmp, &f.path).unwrap();
        let config = Config {
            direct_io: true,
            ..Config::default()
        };
        let (buf, stats) = read(&source, size, &config, false).unwrap();
        // Every byte comes from the file that was opened.
        assert_pattern(&buf, size);
        assert!(
            stats.direct_refused,
            "direct reads of the new file were refused"
        );
    }

    #[test]
    fn small_reads_use_one_thread() {
        assert_eq!(thread_count(PARALLEL_MIN - 1, 8), 1);
        assert!(thread_count(PARALLEL_MIN, 8) >= 1);
        assert_eq!(thread_count(PARALLEL_MIN, 1), 1);
    }
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build, never against the library that ships.
#[cfg(all(test, feature = "fault-injection"))]
mod injected {
    use super::tests::{assert_pattern, TestFile};
    use super::*;
    use crate::fault::{self, Spec};

    #[test]
    fn direct_io_refused_mid_range_reads_the_rest_of_that_range_buffered() {
        let faults = fault::inject(Spec::default());
        let size = PARALLEL_MIN + 4096 * 3 + 100;
        let f = TestFile::new("direct-mid", size);
        // Direct reads are taken up to 3 MiB into the first range, then refused.
        let at = 3 << 20;
        let config = Config {
            direct_io: true,
            read_threads: 2,
            ..Config::default()
        };
        let load = || {
            let source = Source::open(&f.path, "c.bin", size as u64).unwrap();
            let (buf, stats) = read(&source, size, &config, false).unwrap();
            assert_pattern(&buf, size);
            stats
        };
        // Without the fault, this file system must take O_DIRECT, or the case
        // below would be the refusal at open, which another test covers.
        let plain = load();
        assert!(
            !plain.direct_refused,
            "O_DIRECT is refused on {}: run the tests with TMPDIR on a file system \
             that takes it (ext4, xfs)",
            f.path.display()
        );
        faults.set(Spec {
            direct_io_einval_at: Some(at),
            ..Spec::default()
        });
        let st = load();
        // Every range's block-aligned part is read direct, except the part of
        // the first range from `at` on, which is read buffered.
        let ranges = split(size, thread_count(size, 2), HUGE_PAGE);
        assert!(ranges[0].end as u64 > at, "{ranges:?}");
        let aligned: u64 = ranges.iter().map(|r| (r.len() / 4096 * 4096) as u64).sum();
        assert_eq!(plain.direct_bytes, aligned, "{plain:?}");
        assert!(st.direct_refused, "{st:?}");
        assert_eq!(
            st.direct_bytes,
            aligned - (ranges[0].end as u64 - at),
            "{st:?}"
        );
    }
}
