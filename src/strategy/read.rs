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

use super::heap::HeapBuf;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::source::Source;
use crate::sys::HUGE_PAGE;
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

/// Why a load reads the file into memory: the error for a buffer that
/// cannot be had names what else there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Because {
    /// `OM_CONSTANT_LOAD=read`.
    Asked,
    /// `auto`, on a network volume (its threads wait on the network, not
    /// the CPUs: as many as `OM_CONSTANT_READ_THREADS` allows run).
    Remote,
    /// `auto`, after mapping the file failed.
    MapFailed,
}

/// Allocates `len` bytes and fills them from the start of `source`.
pub(super) fn read(
    source: &Source,
    len: usize,
    config: &Config,
    because: Because,
) -> Result<(HeapBuf, ReadStats)> {
    let remote = because == Because::Remote;
    let no_room = |why: String| {
        let instead = match because {
            Because::Asked => {
                "; use OM_CONSTANT_LOAD=auto or mmap, so that the file is mapped (shared with \
                 the page cache) instead of copied"
            }
            Because::Remote => "",
            Because::MapFailed => "; mapping it failed too (see above)",
        };
        Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "cannot hold constants file '{}' ({}) in memory: {why}{instead}",
                source.fname,
                source.path.display()
            ),
        )
    };
    if let Some(why) = no_room_for(len) {
        return Err(no_room(why));
    }
    let buf = HeapBuf::alloc(len, config.huge_pages.wanted())
        .ok_or_else(|| no_room(format!("cannot allocate {len} bytes; free memory")))?;
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
    // The bytes must be one version of the file: a rewrite in place during
    // the read (its size, times or identity change) reads it again, a few
    // times, then fails.
    let mut before = version(source)?;
    for attempt in 0..=REREADS {
        let (direct_bytes, threads) = fill_all(source, direct, &buf, &ranges)?;
        stats.direct_bytes += direct_bytes.0;
        stats.direct_refused |= direct_bytes.1;
        stats.threads = threads;
        let after = version(source)?;
        if after == before {
            return Ok((buf, stats));
        }
        if after.0 < len as u64 || attempt == REREADS {
            return Err(changed_while_read(source, len, after.0, attempt + 1));
        }
        before = after;
    }
    Err(changed_while_read(source, len, before.0, REREADS + 1))
}

/// Why a `len`-byte heap buffer cannot be had, before it is asked for:
/// beyond the memory cgroup's limit, the kernel kills the process instead
/// of failing the allocation; beyond `RLIMIT_AS`, the allocation fails.
/// The cgroup's files are read only for buffers of [`CGROUP_CHECK_MIN`]
/// and more: a smaller one is within any working limit's slack, and the
/// reads would slow every small load.
fn no_room_for(len: usize) -> Option<String> {
    let len = len as u64;
    let cgroup = if len >= CGROUP_CHECK_MIN {
        sys::memory_headroom()
    } else {
        None
    };
    if let Some(h) = cgroup {
        let room = h.room_for_anonymous();
        if len > room {
            return Some(format!(
                "it needs {} MiB, and this process's memory cgroup has room for {} MiB more \
                 (limit {} MiB); a larger buffer would get the process killed (OOM)",
                len >> 20,
                room >> 20,
                h.limit >> 20
            ));
        }
    }
    if let Some(limit) = sys::address_space_limit() {
        if len > limit {
            return Some(format!(
                "it needs {} MiB, more than the address-space limit of {} MiB (RLIMIT_AS, \
                 ulimit -v); raise the limit",
                len >> 20,
                limit >> 20
            ));
        }
    }
    None
}

/// See [`no_room_for`].
const CGROUP_CHECK_MIN: u64 = 8 << 20;

/// How many times a read that saw the file change is made again.
const REREADS: usize = 3;

/// The file's length and stamp (size, identity, modification and change
/// times) now.
fn version(source: &Source) -> Result<(u64, sys::FileStamp)> {
    let meta = source
        .file
        .metadata()
        .map_err(|e| read_error(source, 0, 0, &e))?;
    let stamp = sys::file_stamp(&source.file, &meta).map_err(|e| read_error(source, 0, 0, &e))?;
    Ok((meta.len(), stamp))
}

fn changed_while_read(source: &Source, len: usize, now: u64, tries: usize) -> Error {
    Error::new(
        ErrorKind::Changed,
        format!(
            "constants file '{}' ({}) changed while it was read ({tries} tries; it needs {len} \
             bytes and now has {now}): it is being rewritten in place. Nothing was loaded. \
             Replace a constants file by writing a new one and renaming it over the old name",
            source.fname,
            source.path.display()
        ),
    )
}

/// One range's read, with the thread that made it.
type RangeJob<'a> = Box<dyn FnOnce() -> Result<(RangeStats, u64)> + Send + 'a>;

/// Reads every range into `buf`, in parallel; the `O_DIRECT` bytes and
/// refusal, and how many threads took part (fewer than ranges where no
/// thread could be had and the caller read inline).
fn fill_all(
    source: &Source,
    direct: Option<&File>,
    buf: &HeapBuf,
    ranges: &[Range<usize>],
) -> Result<((u64, bool), usize)> {
    let dst = buf.as_ptr() as usize;
    let jobs: Vec<RangeJob<'_>> = ranges
        .iter()
        .cloned()
        .map(|r| {
            Box::new(move || fill_range(source, direct, dst, r).map(|s| (s, sys::thread_self())))
                as RangeJob<'_>
        })
        .collect();
    let results = crate::threads::run_all(jobs);
    let (mut direct_bytes, mut refused, mut ids) = (0, false, Vec::new());
    for r in results {
        // On error `buf` is dropped by the caller, so nothing leaks.
        let (r, id) =
            r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "a read thread panicked")))?;
        direct_bytes += r.direct_bytes;
        refused |= r.direct_refused;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(((direct_bytes, refused), ids.len()))
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
        let (buf, stats) = read(&source, size, &config, Because::Asked).unwrap();
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
            let (buf, stats) = read(&source, size, &config, Because::Asked).unwrap();
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
