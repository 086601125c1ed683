//! The calls only Linux (and Android) has, with the same signatures as
//! their fallback in `elsewhere.rs`: 2 MiB pages (`MADV_HUGEPAGE`,
//! `MADV_COLLAPSE`, the page tables' and page cache's state), `O_DIRECT`,
//! `fallocate`, read-ahead and write-back of file ranges, and the kind of
//! file system a file is on. Each behind a safe function whose `SAFETY`
//! note says why the call holds.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::raw::c_void;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::os::{self, check};
use super::{extend, touch_pages, Access, Volume};

/// Asks for transparent huge pages for `[ptr, ptr+len)`; a hint, whose
/// refusal (THP off) changes nothing.
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs the range; it
    // never changes its contents, and a range that is not mapped is an
    // error (ENOMEM), not undefined behaviour.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
}

/// Maps every page of `[ptr, ptr+len)` now, reading what is not in memory
/// (`MADV_POPULATE_READ`, Linux 5.14). A page that cannot be read (the file
/// shrank under the mapping, or its volume failed) is an error, never the
/// `SIGBUS` a read of it would raise. Where the kernel lacks the call one
/// byte per page is read instead, which cannot tell.
pub(crate) fn populate(ptr: *mut u8, len: usize) -> io::Result<()> {
    const MADV_POPULATE_READ: libc::c_int = 22;
    // SAFETY: populating only faults pages of the readable mapping in;
    // it never changes its contents, and reports a page it cannot read.
    if unsafe { libc::madvise(ptr.cast(), len, MADV_POPULATE_READ) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    touch_pages(ptr, len, os::page_size());
    Ok(())
}

/// Opens `path` read-only with `O_DIRECT` (reads bypass the page cache);
/// `EINVAL` where the file system refuses it.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_NONBLOCK)
        .open(path)
}

/// True if `e` is the refusal of direct I/O ([`open_direct`], or a direct
/// read the file system rejects mid-way): `EINVAL`.
pub(crate) fn refuses_direct_io(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// `posix_fadvise` for `[offset, offset+len)` of `file`: a hint whose
/// failure changes nothing.
pub(crate) fn advise_file(file: &File, offset: usize, len: usize, access: Access) {
    let advice = match access {
        Access::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Access::WillNeed => libc::POSIX_FADV_WILLNEED,
    };
    // SAFETY: posix_fadvise only records a hint for an open descriptor
    // that `file` keeps open for the call.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            advice,
        );
    }
}

/// Gives `[offset, offset+len)` of `file` real blocks, so that a full disk
/// is an error now and not a SIGBUS when the range is written through a
/// mapping. Where the file system cannot, the file is extended sparsely
/// instead.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate only allocates blocks of an open file that
    // `file` keeps open for the call; it touches no memory of ours.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    match check(rc) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => extend(file, offset + len),
        other => other,
    }
}

/// The transparent huge page setting (`always`, `madvise`, `never`), or
/// `None` where there is none to read (no THP).
pub(crate) fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// Bytes of `[ptr, ptr+len)` mapped now with huge (2 MiB) entries, as the
/// kernel's page table says (`PAGEMAP_SCAN`, Linux 6.7; the mapping's
/// `/proc/self/smaps` lines before that). An error where neither can tell.
pub(crate) fn huge_backed_bytes(ptr: *const u8, len: usize) -> io::Result<u64> {
    pagemap_huge_bytes(ptr, len).or_else(|_| smaps_huge_bytes(ptr, len))
}

fn pagemap_huge_bytes(ptr: *const u8, len: usize) -> io::Result<u64> {
    /// `struct page_region` of `<linux/fs.h>`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    /// `struct pm_scan_arg` of `<linux/fs.h>`.
    #[repr(C)]
    #[derive(Default)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    // _IOWR('f', 16, struct pm_scan_arg)
    const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    const PAGE_IS_HUGE: u64 = 1 << 6;
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut regions = [PageRegion::default(); 64];
    let end = ptr as u64 + len as u64;
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        start: ptr as u64,
        end,
        vec: regions.as_mut_ptr() as u64,
        vec_len: regions.len() as u64,
        category_mask: PAGE_IS_HUGE,
        return_mask: PAGE_IS_HUGE,
        ..PmScanArg::default()
    };
    let mut huge = 0u64;
    loop {
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at
        // `regions`, `vec_len` entries of the kernel's page_region layout,
        // writable for the call; the ioctl only reads this process's page
        // tables over [start, end) and writes `regions` and `arg.walk_end`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(regions.len());
        huge += regions[..n].iter().map(|r| r.end - r.start).sum::<u64>();
        if arg.walk_end >= end || arg.walk_end <= arg.start {
            return Ok(huge);
        }
        arg.start = arg.walk_end;
    }
}

/// The `FilePmdMapped` and `AnonHugePages` of the mappings that overlap
/// `[ptr, ptr+len)` (whole mappings: the older kernels' approximation).
fn smaps_huge_bytes(ptr: *const u8, len: usize) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let (lo, hi) = (ptr as usize, ptr as usize + len);
    let mut inside = false;
    let mut kb = 0u64;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a < hi && lo < b;
                continue;
            }
        }
        if inside {
            for key in ["FilePmdMapped:", "AnonHugePages:"] {
                if let Some(v) = line.strip_prefix(key) {
                    kb += v
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            }
        }
    }
    Ok((kb * 1024).min(len as u64))
}

/// One byte per page of `[ptr, ptr+len)`, bit 0 set where the page's
/// data is in memory (the page cache, for a file mapping), mapped or not
/// (`mincore`; no I/O). The range is page-aligned.
pub(crate) fn resident_map(ptr: *const u8, len: usize) -> io::Result<Vec<u8>> {
    let page = os::page_size();
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `ptr` is page-aligned and [ptr, ptr+len) is a mapping of
    // ours; `vec` has one byte per page of it, writable for the call.
    check(unsafe { libc::mincore(ptr as *mut c_void, len, vec.as_mut_ptr().cast()) })?;
    Ok(vec)
}

/// Pages of `file`'s bytes `[0, len)` in the page cache (`cachestat`,
/// Linux 6.5: one walk of the cache's tree, cheap when little is cached);
/// `None` where the kernel has no such call.
pub(crate) fn cached_pages(file: &File, len: u64) -> Option<u64> {
    /// `struct cachestat_range` and `struct cachestat` of `<linux/mman.h>`.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // The same number on every architecture (the unified table).
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: 0, len };
    let mut stat = Stat::default();
    // SAFETY: both structs have the kernel's layout and live for the
    // call; the kernel reads `range` and writes `stat`; flags are 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    (rc == 0).then_some(stat.nr_cache)
}

/// Asks the kernel to rebuild `[ptr, ptr+len)` in huge pages in place
/// (`MADV_COLLAPSE`, Linux 6.1; for a file mapping, only on kernels built
/// with `CONFIG_READ_ONLY_THP_FOR_FS`). Contents unchanged; a page of the
/// range that is not in memory is read (callers pass resident ranges).
pub(crate) fn collapse(ptr: *mut u8, len: usize) -> io::Result<()> {
    const MADV_COLLAPSE: libc::c_int = 25;
    // SAFETY: collapsing only changes how the range is backed, never
    // its contents; an unsuitable range is an error, not UB.
    check(unsafe { libc::madvise(ptr.cast(), len, MADV_COLLAPSE) })
}

/// Writes the dirty pages of `file`'s bytes `[offset, offset+len)` back and
/// waits for them (`sync_file_range`).
pub(crate) fn write_back_range(file: &File, offset: u64, len: usize) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a request about an open descriptor; no memory involved.
    check(unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) })
}

/// Drops this process's page-table entries for `[ptr, ptr+len)`, a private
/// read-only mapping of `file` at `offset`, and evicts the clean pages of
/// that part of the file that no process maps, so that the next touch
/// reads it again through the mapping (in 2 MiB folios where the mapping
/// is aligned and advised). Pages other processes map stay where they are.
pub(crate) fn evict_range(file: &File, ptr: *mut u8, offset: u64, len: usize) -> io::Result<()> {
    // SAFETY: MADV_DONTNEED on a private read-only file mapping only drops
    // page-table entries: the next read faults the same file bytes back in,
    // so a reader of the range meanwhile sees the same contents.
    check(unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) })?;
    // SAFETY: a hint about the open file; it drops only clean,
    // unmapped page-cache pages, which are read back on demand.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// The kind of file system `file` is on (`fstatfs`'s `f_type`; `Local`
/// where it cannot be read).
pub(crate) fn volume_of(file: &File) -> Volume {
    // SAFETY: zeroed is a valid statfs to be written; fstatfs writes it
    // for an open descriptor.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above; `s` is writable for the call.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } != 0 {
        return Volume::Local;
    }
    // `f_type` is signed on some targets and 32 bits on others.
    Volume::of_magic((s.f_type as u64) & 0xFFFF_FFFF)
}
