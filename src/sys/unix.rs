//! The system calls of POSIX systems, each behind a safe function whose
//! `SAFETY` note says why the call holds; the same functions as
//! `windows.rs`, in the same sections. The calls only Linux has are in
//! `linux.rs`, with their one fallback in `elsewhere.rs`, so that macOS and
//! the BSDs have a chance (they are not tested here).

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

use super::{FileStamp, Job};

/// The longest path the system accepts.
pub(crate) const PATH_MAX: usize = libc::PATH_MAX as usize;

pub(super) fn check(rc: libc::c_int) -> io::Result<()> {
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

// ---- mappings --------------------------------------------------------

/// Makes a raw mapping read-only: a later write to it faults.
pub(crate) fn protect_read_only(map: &MmapRaw) -> io::Result<()> {
    // SAFETY: [ptr, ptr+len) is exactly the live mapping `map` owns;
    // MmapRaw makes no claim about its protection, and mprotect changes
    // only the access the pages allow.
    check(unsafe { libc::mprotect(map.as_mut_ptr().cast(), map.len(), libc::PROT_READ) })
}

/// A file can be mapped in pieces at fixed places of a [`MapRange`].
pub(crate) const ONE_PIECE_ONLY: bool = false;

/// A range of address space reserved (`PROT_NONE`, no memory), into which
/// pieces of a file are then mapped at fixed places; unmapped on drop.
///
/// `MAP_FIXED`, not `MAP_FIXED_NOREPLACE`: NOREPLACE refuses to map over
/// any existing mapping, including this reservation, so it would need the
/// reservation unmapped first, and another thread's `mmap` could take the
/// hole in between. `MAP_FIXED` over a range we reserved replaces only our
/// own pages and can never clobber anyone else's mapping.
pub(crate) struct MapRange {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the reservation owns its range exclusively; the address has no
// thread affinity and the pieces mapped into it are read-only.
unsafe impl Send for MapRange {}
// SAFETY: shared access only reads the read-only pieces.
unsafe impl Sync for MapRange {}

impl MapRange {
    /// Reserves `len` bytes (rounded up to whole pages) of address space,
    /// starting at a multiple of `align` (a power of two, at least a page):
    /// the kernel can map a file's 2 MiB folios with 2 MiB entries only at
    /// addresses that are 2 MiB-aligned like their file offsets.
    pub(crate) fn new(len: usize, align: usize) -> io::Result<MapRange> {
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
        Ok(MapRange { ptr, len })
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
pub(crate) fn map_piece(res: &MapRange, file: &File, offset: usize, len: usize) -> io::Result<()> {
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

impl Drop for MapRange {
    fn drop(&mut self) {
        // SAFETY: [ptr, ptr+len) is the range we reserved; one munmap
        // removes the reservation and every piece mapped into it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// ---- threads ---------------------------------------------------------

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
/// Everything `job` borrows must outlive its run: before any borrow ends,
/// the caller must know the job has run or has been taken back
/// (`threads::run_into`'s handoff does both), or give it only owned data.
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
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions of this library, which is
    // never unloaded (docs/ARCHITECTURE.md, "Unload"), and never unwind.
    // The only failure is ENOMEM, after which only a child forked at a bad
    // moment is unprotected: nothing to do.
    let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

// ---- the loader ------------------------------------------------------

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
