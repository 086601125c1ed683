//! The system calls of POSIX systems, each behind a safe function whose
//! `SAFETY` note says why the call holds. Linux-only calls are marked
//! `cfg(target_os = "linux")`, with a portable fallback beside them, so
//! that macOS and the BSDs have a chance (they are not tested here).

use std::alloc::Layout;
use std::ffi::{CStr, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::raw::c_void;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::MmapRaw;

use super::{touch_pages, Access, FileStamp, Job, Volume};

/// The longest path the system accepts.
pub(crate) const PATH_MAX: usize = libc::PATH_MAX as usize;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---- memory ----------------------------------------------------------

/// `layout.size()` bytes aligned to `layout.align()`, straight from the
/// kernel (an anonymous private mapping, trimmed to the alignment), so that
/// freeing gives them back: glibc keeps freed blocks of up to 32 MiB in its
/// arenas once its mmap threshold has grown, and a host that loads and
/// frees weights would stay at its peak. `None` where the kernel refuses.
pub(crate) fn alloc(layout: Layout) -> Option<NonNull<u8>> {
    let page = page_size();
    let len = layout.size().checked_next_multiple_of(page)?;
    if len == 0 {
        return None;
    }
    let align = layout.align().max(page);
    let span = len.checked_add(align - page)?;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's
    // choice; nothing of ours is replaced.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = (base as usize).next_multiple_of(align);
    let (head, tail) = (start - base as usize, span - (start - base as usize) - len);
    // SAFETY: [base, start) and [start+len, base+span) are page-aligned
    // parts of the mapping just made, used by no one.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut c_void, tail);
        }
    }
    NonNull::new(start as *mut u8)
}

/// Gives back what [`alloc`] returned.
///
/// # Safety
/// `ptr` came from [`alloc`] with this `layout` and is freed once.
pub(crate) unsafe fn dealloc(ptr: NonNull<u8>, layout: Layout) {
    let len = layout.size().next_multiple_of(page_size());
    // SAFETY: by the caller's contract, [ptr, ptr+len) is the mapping
    // `alloc` kept, and nothing uses it any more.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Asks for transparent huge pages for `[ptr, ptr+len)`; a hint, whose
/// refusal (THP off, another OS) changes nothing.
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs the range; it
    // never changes its contents, and a range that is not mapped is an
    // error (ENOMEM), not undefined behaviour.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (ptr, len);
}

/// Maps every page of `[ptr, ptr+len)` now, reading what is not in memory
/// (`MADV_POPULATE_READ`, Linux 5.14). A page that cannot be read (the file
/// shrank under the mapping, or its volume failed) is an error, never the
/// `SIGBUS` a read of it would raise. Where the kernel lacks the call (and
/// off Linux) one byte per page is read instead, which cannot tell.
pub(crate) fn populate(ptr: *mut u8, len: usize) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
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
    }
    touch_pages(ptr, len, page_size());
    Ok(())
}

/// Asks the kernel to read `[ptr, ptr+len)` ahead; a hint.
pub(crate) fn advise_will_need(ptr: *mut u8, len: usize) {
    // SAFETY: MADV_WILLNEED only starts read-ahead; it never changes the
    // range's contents, and an unmapped range is an error, not UB.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_WILLNEED);
    }
}

/// Pins `[ptr, ptr+len)` in RAM (`mlock`).
pub(crate) fn lock_memory(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: mlock only pins pages; it reads and writes no memory, and an
    // unmapped range is an error (ENOMEM), not UB.
    check(unsafe { libc::mlock(ptr.cast(), len) })
}

/// Undoes [`lock_memory`].
pub(crate) fn unlock_memory(ptr: *mut u8, len: usize) {
    // SAFETY: as for mlock.
    unsafe {
        libc::munlock(ptr.cast(), len);
    }
}

// ---- files -----------------------------------------------------------

/// Opens `path` read-only and without blocking: a FIFO or a device given by
/// mistake is opened at once (and then refused by its caller) instead of
/// blocking until a writer appears. For regular files the flag has no
/// effect on Linux.
pub(crate) fn open_read_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Opens `path` read-only and without blocking, refusing a symbolic link
/// at `path` itself (`O_NOFOLLOW`: `ELOOP`): for files whose owner matters.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// True for [`open_no_follow`]'s refusal of a symbolic link (`ELOOP`).
pub(crate) fn is_a_link(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Why a file another user could have written is not to be trusted: owned
/// by someone other than this process's user or root, or writable by its
/// group or others. `None` for a file only this user (or root) could write.
pub(crate) fn untrusted(meta: &Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "it is owned by uid {}, not by this process's user (uid {me}) or root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by its group or by others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Opens `path` read-only with `O_DIRECT` (reads bypass the page cache);
/// `EINVAL` where the file system refuses it or the platform has none.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_NONBLOCK)
        .open(path);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = path;
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// True if `e` is the refusal of direct I/O ([`open_direct`], or a direct
/// read the file system rejects mid-way): `EINVAL`.
pub(crate) fn refuses_direct_io(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Creates `path` for reading and writing, failing if it exists; mode 0644
/// (less the umask), so other users' processes can read the cache.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// The identity of an open file: device and inode, and the times that
/// change when it is written.
pub(crate) fn file_stamp(_file: &File, meta: &Metadata) -> io::Result<FileStamp> {
    Ok(FileStamp {
        volume: meta.dev(),
        index: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    })
}

/// What a file that is neither a regular file nor a folder is, for
/// messages: FIFO, socket or device.
pub(crate) fn special_kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        None
    }
}

/// A file name as C passed it: POSIX names are bytes, taken as they are.
pub(crate) fn path_from_c(bytes: &[u8]) -> Option<&Path> {
    Some(Path::new(OsStr::from_bytes(bytes)))
}

/// Reads up to `buf.len()` bytes at `offset`: the number read (0 at the
/// end of the file), or the OS error (`Interrupted` included).
pub(crate) fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.read_at(buf, offset)
}

/// Writes all of `bytes` at `offset`.
pub(crate) fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(bytes, offset)
}

/// `posix_fadvise` for `[offset, offset+len)` of `file`: a hint whose
/// failure (or absence, on macOS) changes nothing.
pub(crate) fn advise_file(file: &File, offset: usize, len: usize, access: Access) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
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
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let _ = (file, offset, len, access);
}

/// Gives `[offset, offset+len)` of `file` real blocks, so that a full disk
/// is an error now and not a SIGBUS when the range is written through a
/// mapping. Where the file system (or the platform) cannot, the file is
/// extended sparsely instead.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
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
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => return other,
        }
    }
    let end = offset + len;
    if file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

/// True for the errors a file system gives a size it can never hold (too
/// large a file or offset), as against a full disk.
pub(crate) fn is_size_limit_error(code: i32) -> bool {
    code == libc::EFBIG || code == libc::EOVERFLOW || code == libc::EINVAL
}

/// The whole size in bytes of the file system that holds `folder`
/// (`statvfs`).
pub(crate) fn file_system_size(folder: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(folder.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statvfs is plain data that the call fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

// ---- mappings --------------------------------------------------------

/// Makes a raw mapping read-only: a later write to it faults.
pub(crate) fn protect_read_only(map: &MmapRaw) -> io::Result<()> {
    // SAFETY: [ptr, ptr+len) is exactly the live mapping `map` owns;
    // MmapRaw makes no claim about its protection, and mprotect changes
    // only the access the pages allow.
    check(unsafe { libc::mprotect(map.as_mut_ptr().cast(), map.len(), libc::PROT_READ) })
}

/// A file can be mapped in pieces at fixed places of a [`Reservation`].
pub(crate) const ONE_PIECE_ONLY: bool = false;

/// A range of address space reserved (`PROT_NONE`, no memory), into which
/// pieces of a file are then mapped at fixed places; unmapped on drop.
///
/// `MAP_FIXED`, not `MAP_FIXED_NOREPLACE`: NOREPLACE refuses to map over
/// any existing mapping, including this reservation, so it would need the
/// reservation unmapped first, and another thread's `mmap` could take the
/// hole in between. `MAP_FIXED` over a range we reserved replaces only our
/// own pages and can never clobber anyone else's mapping.
pub(crate) struct Reservation {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the reservation owns its range exclusively; the address has no
// thread affinity and the pieces mapped into it are read-only.
unsafe impl Send for Reservation {}
// SAFETY: shared access only reads the read-only pieces.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `len` bytes (rounded up to whole pages) of address space,
    /// starting at a multiple of `align` (a power of two, at least a page):
    /// the kernel can map a file's 2 MiB folios with 2 MiB entries only at
    /// addresses that are 2 MiB-aligned like their file offsets.
    pub(crate) fn new(len: usize, align: usize) -> io::Result<Reservation> {
        let page = page_size();
        let len = len.div_ceil(page) * page;
        let align = align.max(page);
        if !align.is_power_of_two() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let extra = align - page;
        let total = len
            .checked_add(extra)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: an anonymous PROT_NONE reservation at an address the
        // kernel chooses; it touches no existing mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = base as usize;
        let aligned = start.next_multiple_of(align);
        let (head, tail) = (aligned - start, total - (aligned - start) - len);
        // SAFETY: [start, start+head) and [aligned+len, start+total) are the
        // parts of the reservation just made that lie outside the aligned
        // range we keep; nothing else can be mapped there.
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut c_void, tail);
            }
        }
        let ptr = NonNull::new(aligned as *mut u8)
            .ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Reservation { ptr, len })
    }

    /// The start of the range.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

/// Maps `[offset, offset+len)` of `file`, read-only, at the same offset of
/// `res`. `offset` must be a multiple of the page size and the piece must
/// lie inside the reservation and inside the file. Nothing is faulted in
/// (`populate` does that, after any advice).
pub(crate) fn map_piece(
    res: &Reservation,
    file: &File,
    offset: usize,
    len: usize,
) -> io::Result<()> {
    let inside = offset
        .checked_add(len)
        .is_some_and(|end| end <= res.len && offset % page_size() == 0);
    if !inside {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = libc::MAP_PRIVATE | libc::MAP_FIXED;
    // SAFETY: [ptr+offset, ptr+offset+len) lies inside the reservation
    // (checked above), so MAP_FIXED replaces only pages it owns; offset is
    // page-aligned as mmap requires; `file` stays open for the call.
    let at = unsafe {
        libc::mmap(
            res.ptr.as_ptr().add(offset).cast(),
            len,
            libc::PROT_READ,
            flags,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: [ptr, ptr+len) is the range we reserved; one munmap
        // removes the reservation and every piece mapped into it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// ---- huge pages --------------------------------------------------------

/// The transparent huge page setting (`always`, `madvise`, `never`), or
/// `None` where there is none to read (not Linux, or no THP).
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
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        match pagemap_huge_bytes(ptr, len) {
            Ok(n) => Ok(n),
            Err(_) => smaps_huge_bytes(ptr, len),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (ptr, len);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
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
#[cfg(any(target_os = "linux", target_os = "android"))]
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
    let page = page_size();
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
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
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
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (file, len);
        None
    }
}

/// Asks the kernel to rebuild `[ptr, ptr+len)` in huge pages in place
/// (`MADV_COLLAPSE`, Linux 6.1; for a file mapping, only on kernels built
/// with `CONFIG_READ_ONLY_THP_FOR_FS`). Contents unchanged; a page of the
/// range that is not in memory is read (callers pass resident ranges).
pub(crate) fn collapse(ptr: *mut u8, len: usize) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        const MADV_COLLAPSE: libc::c_int = 25;
        // SAFETY: collapsing only changes how the range is backed, never
        // its contents; an unsuitable range is an error, not UB.
        check(unsafe { libc::madvise(ptr.cast(), len, MADV_COLLAPSE) })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (ptr, len);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Writes the dirty pages of `file`'s bytes `[offset, offset+len)` back and
/// waits for them (`sync_file_range`, Linux; `fdatasync` elsewhere).
pub(crate) fn write_back_range(file: &File, offset: u64, len: usize) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a request about an open descriptor; no memory involved.
        check(unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (offset, len);
        // SAFETY: fdatasync on an open descriptor; no memory is involved.
        check(unsafe { libc::fsync(file.as_raw_fd()) })
    }
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
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
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
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (file, offset);
    Ok(())
}

/// The kind of file system `file` is on (`fstatfs`'s `f_type` on Linux;
/// `Local` where the OS does not say).
pub(crate) fn volume_of(file: &File) -> Volume {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
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
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = file;
        Volume::Local
    }
}

// ---- threads ---------------------------------------------------------

/// The process's address-space limit (`RLIMIT_AS`, `ulimit -v`) in bytes,
/// `None` when unlimited.
pub(crate) fn address_space_limit() -> Option<u64> {
    // SAFETY: zeroed is a valid rlimit to be written; getrlimit writes it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is writable for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur as u64)
}

/// Thread cancellation held off for the calling thread until drop
/// (`pthread_setcancelstate`): a library call is not a cancellation point.
/// A `pthread_cancel` that arrives meanwhile acts at the caller's next
/// cancellation point after the call; unwinding through the library (which
/// catches panics at its boundary) would abort the process instead.
pub(crate) struct CancelOff(libc::c_int, std::marker::PhantomData<*const ()>);

/// `pthread_setcancelstate` where the C library has it; elsewhere nothing.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
))]
mod cancel {
    // The C library's (`libc` does not declare it for these targets); not
    // ours to export: cbindgen.toml keeps it out of the header.
    extern "C" {
        fn pthread_setcancelstate(state: libc::c_int, oldstate: *mut libc::c_int) -> libc::c_int;
    }

    /// `PTHREAD_CANCEL_DISABLE` (glibc, musl, bionic, FreeBSD: 1; Apple: 0).
    #[cfg(not(target_vendor = "apple"))]
    pub(super) const DISABLE: libc::c_int = 1;
    #[cfg(target_vendor = "apple")]
    pub(super) const DISABLE: libc::c_int = 0;

    /// Sets the calling thread's cancel state; returns the one it had.
    pub(super) fn set(state: libc::c_int) -> libc::c_int {
        let mut old = 0;
        // SAFETY: sets the calling thread's own cancel state; `old` is
        // writable for the call.
        unsafe { pthread_setcancelstate(state, &mut old) };
        old
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
)))]
mod cancel {
    pub(super) const DISABLE: libc::c_int = 0;

    pub(super) fn set(_state: libc::c_int) -> libc::c_int {
        0
    }
}

impl CancelOff {
    pub(crate) fn new() -> CancelOff {
        CancelOff(cancel::set(cancel::DISABLE), std::marker::PhantomData)
    }
}

impl Drop for CancelOff {
    fn drop(&mut self) {
        // Restores what `new` found, on the same thread: the guard is not
        // `Send` (the raw-pointer marker), so it drops where it was made.
        cancel::set(self.0);
    }
}

/// A number for the calling thread, distinct among live threads
/// (`pthread_self`).
pub(crate) fn thread_self() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as u64 }
}

/// A thread started by [`spawn`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadId(libc::pthread_t);

extern "C" fn trampoline(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the Box<Job> leaked by `spawn` for this thread only.
    let job: Box<Job<'static>> = unsafe { Box::from_raw(arg.cast()) };
    // A panic must not unwind into C; the caller sees the job's missing
    // result instead.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    std::ptr::null_mut()
}

/// Starts `job` on a new pthread that touches no Rust thread-local state
/// (see `threads.rs` for why); gives the job back if no thread can be had.
///
/// # Safety
/// Everything `job` borrows must outlive the thread: the caller must
/// [`join`] it before any borrow ends.
pub(crate) unsafe fn spawn(job: Job<'_>) -> Result<ThreadId, Job<'_>> {
    let raw = Box::into_raw(Box::new(job));
    // SAFETY: zeroed is a valid "not yet written" pthread_t.
    let mut id: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: the trampoline takes ownership of `raw` only if the thread
    // starts; default attributes; `id` is written on success.
    let rc = unsafe { libc::pthread_create(&mut id, std::ptr::null(), trampoline, raw.cast()) };
    if rc == 0 {
        Ok(ThreadId(id))
    } else {
        // SAFETY: the thread did not start, so `raw` is still ours.
        Err(*unsafe { Box::from_raw(raw) })
    }
}

/// Ends a thread started by [`spawn`] once its job is done or taken
/// (`threads.rs`): here, joins it. A raw pthread starts and exits without
/// any loader lock, even inside `dlopen`, so it ends at once; joining keeps
/// its stack reusable and no code of ours running after the call. Once per
/// thread.
pub(crate) fn release_thread(id: ThreadId) {
    // SAFETY: `id` names a joinable thread started by spawn; ThreadId is
    // only made there, and callers let each go once.
    unsafe {
        libc::pthread_join(id.0, std::ptr::null_mut());
    }
}

/// Lets a thread started by [`spawn`] run on unjoined: its resources go
/// when it ends. For a job that owns everything it uses. Once per thread,
/// instead of [`release_thread`].
pub(crate) fn detach_thread(id: ThreadId) {
    // SAFETY: `id` names a joinable thread started by spawn, neither joined
    // nor detached before (callers let each go once).
    unsafe {
        libc::pthread_detach(id.0);
    }
}

/// Registers `fork` handlers for the whole process.
#[cfg(not(loom))]
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions of this library, which is
    // never unloaded (docs/ARCHITECTURE.md, "Unload"), and never unwind.
    // The only failure is ENOMEM, after which only a child forked at a bad
    // moment is unprotected: nothing to do.
    let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Takes an exclusive lock on all of `file` without waiting (`flock`):
/// true if taken, false if another open file holds it (in this or any
/// process, in any pid namespace; over NFS, through the server's lock
/// manager). Held until the file is closed.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor `file` keeps open; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

// ---- the dynamic loader ----------------------------------------------

/// The loaded object (shared library or executable) whose image contains
/// `addr`: its load address, and its name as the loader knows it (which may
/// be relative), or `None` if no object contains `addr`.
pub(crate) fn object_at(addr: usize) -> Option<(usize, Option<PathBuf>)> {
    // SAFETY: `Dl_info` is plain data; all-zero is a valid value for it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only looks the address up in the loader's tables; it
    // never dereferences `addr`, and writes only `info`.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 {
        return None;
    }
    let name = (!info.dli_fname.is_null()).then(|| {
        // SAFETY: on success dli_fname is a NUL-terminated string owned by
        // the loader, alive while the object is loaded, which it is during
        // this call (it holds `addr`, which the caller is using).
        let bytes = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
        PathBuf::from(OsStr::from_bytes(bytes))
    });
    Some((
        info.dli_fbase as usize,
        name.filter(|p| !p.as_os_str().is_empty()),
    ))
}

/// Marks the object holding `addr` as never to be unloaded (`dlopen` of it
/// by the name the loader knows, with `RTLD_NOLOAD | RTLD_NODELETE`). For
/// the main program this may find nothing, which is harmless.
pub(crate) fn pin_object_at(addr: usize) {
    // SAFETY: `Dl_info` is plain data; all-zero is a valid value for it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as in object_at.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return;
    }
    // SAFETY: dli_fname is the loader's name of a loaded object;
    // RTLD_NOLOAD only finds that object again (by the same name) and adds
    // NODELETE; the handle is deliberately never closed.
    unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        );
    }
}

/// Nothing to do when the registry is made: on POSIX, pinning takes no
/// lock a waiter may hold (a raw pthread starts and exits without the
/// loader's lock), so each user pins as it goes ([`pin_object_at`]).
pub(crate) fn pin_library() {}

// ---- stderr ----------------------------------------------------------

/// Writes `bytes` to file descriptor 2 with plain `write` calls: no lock
/// (a thread blocked on a full stderr pipe must hold nothing another
/// thread or a forked child would wait for), one call for a short line, so
/// that concurrent lines do not interleave. A closed or failing stderr is
/// not the library's to report.
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write reads at most its length.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return;
        }
    }
}
