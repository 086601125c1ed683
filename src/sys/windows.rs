//! The system calls of Windows, each behind a safe function whose `SAFETY`
//! note says why the call holds; the same functions as `unix.rs`. Only the
//! Win32 API through `windows-sys`: nothing here is specific to the GNU or
//! the MSVC toolchain (only GNU is tested, under wine: docs/PLATFORMS.md).
//!
//! What differs from POSIX, and why it is fine:
//! - No `fork`: [`at_fork`] has nothing to register.
//! - No `O_DIRECT` equivalent that takes unaligned buffers
//!   (`FILE_FLAG_NO_BUFFERING` needs sector-aligned reads into
//!   sector-aligned memory): `open_direct` refuses (`elsewhere.rs`), and
//!   `read` reads buffered, as on a file system that refuses `O_DIRECT`.
//! - No transparent huge pages, page-cache queries or file system kinds:
//!   the calls only Linux has answer from `elsewhere.rs`.
//! - A file that is open or mapped cannot be truncated by anyone, so the
//!   SIGBUS hazard of POSIX mappings does not exist here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::raw::c_void;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::FileExt;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use memmap2::MmapRaw;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, HMODULE};
use windows_sys::Win32::Storage::FileSystem::{
    FileBasicInfo, GetDiskFreeSpaceExW, GetFileInformationByHandle, GetFileInformationByHandleEx,
    LockFileEx, WriteFile, BY_HANDLE_FILE_INFORMATION, FILE_BASIC_INFO, LOCKFILE_EXCLUSIVE_LOCK,
    LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
use windows_sys::Win32::System::LibraryLoader::{
    GetModuleFileNameW, GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
    GET_MODULE_HANDLE_EX_FLAG_PIN, GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
};
use windows_sys::Win32::System::Memory::{
    PrefetchVirtualMemory, VirtualLock, VirtualProtect, VirtualUnlock, PAGE_PROTECTION_FLAGS,
    PAGE_READONLY, WIN32_MEMORY_RANGE_ENTRY,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::{
    CreateThread, GetCurrentProcess, GetProcessWorkingSetSize, SetProcessWorkingSetSize,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::{FileStamp, Job};

/// The longest path Windows accepts (in UTF-16 units, with the `\\?\`
/// prefix that the standard library adds to long paths).
pub(crate) const PATH_MAX: usize = 32_767;

fn check(ok: i32) -> io::Result<()> {
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---- memory ----------------------------------------------------------

/// `layout.size()` (> 0) bytes aligned to `layout.align()`, uninitialised;
/// `None` if the allocator refuses. Free with [`dealloc`]. The system's
/// allocator: the Windows heap serves large blocks with `VirtualAlloc` and
/// gives them back when they are freed.
pub(crate) fn alloc(layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() == 0 {
        return None;
    }
    // SAFETY: the layout has a non-zero size (checked above).
    NonNull::new(unsafe { System.alloc(layout) })
}

/// Frees what [`alloc`] returned.
///
/// # Safety
/// `ptr` came from [`alloc`] with this `layout` and is freed once.
pub(crate) unsafe fn dealloc(ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's contract is exactly System.dealloc's.
    unsafe { System.dealloc(ptr.as_ptr(), layout) }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: SYSTEM_INFO is plain data; GetSystemInfo only writes it.
    let mut info: SYSTEM_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable SYSTEM_INFO.
    unsafe { GetSystemInfo(&mut info) };
    usize::try_from(info.dwPageSize)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

/// Windows has no address-space limit to read.
pub(crate) fn address_space_limit() -> Option<u64> {
    None
}

/// Asks Windows to read `[ptr, ptr+len)` ahead (`PrefetchVirtualMemory`,
/// Windows 8 and later); a hint whose failure changes nothing.
pub(crate) fn advise_will_need(ptr: *mut u8, len: usize) {
    let range = WIN32_MEMORY_RANGE_ENTRY {
        VirtualAddress: ptr.cast(),
        NumberOfBytes: len,
    };
    // SAFETY: the call only schedules reads of the range into memory; it
    // never changes its contents, and an unmapped range is an error, not
    // undefined behaviour. `range` lives for the call.
    unsafe {
        PrefetchVirtualMemory(GetCurrentProcess(), 1, &range, 0);
    }
}

/// Pins `[ptr, ptr+len)` in RAM (`VirtualLock`). Windows limits locked
/// memory to the process's minimum working set, so that minimum (and the
/// maximum) is first raised by `len`.
pub(crate) fn lock_memory(ptr: *mut u8, len: usize) -> io::Result<()> {
    let (mut min, mut max) = (0usize, 0usize);
    // SAFETY: the pseudo-handle of this process; the two sizes are
    // writable locals.
    if unsafe { GetProcessWorkingSetSize(GetCurrentProcess(), &mut min, &mut max) } != 0 {
        // SAFETY: only changes this process's working-set limits. A
        // refusal shows as VirtualLock's error below.
        unsafe {
            SetProcessWorkingSetSize(
                GetCurrentProcess(),
                min.saturating_add(len),
                max.saturating_add(len),
            );
        }
    }
    // SAFETY: VirtualLock only pins pages; it reads and writes no memory,
    // and a range that is not committed is an error, not UB.
    check(unsafe { VirtualLock(ptr.cast(), len) })
}

/// Undoes [`lock_memory`]: unlocks the range and gives back the working
/// set it added.
pub(crate) fn unlock_memory(ptr: *mut u8, len: usize) {
    // SAFETY: as for VirtualLock.
    unsafe {
        VirtualUnlock(ptr.cast(), len);
    }
    let (mut min, mut max) = (0usize, 0usize);
    // SAFETY: as in lock_memory.
    if unsafe { GetProcessWorkingSetSize(GetCurrentProcess(), &mut min, &mut max) } != 0
        && min > len
    {
        // SAFETY: as in lock_memory; a refusal leaves the limits as they were.
        unsafe {
            SetProcessWorkingSetSize(GetCurrentProcess(), min - len, max.saturating_sub(len));
        }
    }
}

// ---- files -----------------------------------------------------------

/// Opens `path` read-only. Windows has no FIFOs that a path open would
/// block on. The standard library shares the file for reading, writing and
/// deleting, so others can still replace or remove it by name while it is
/// open (and, once unmapped, it goes).
pub(crate) fn open_read_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

/// Opens `path` read-only. Windows follows a symbolic link here: its
/// folder's ACL is what decides who could have written the file.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    open_read_nonblocking(path)
}

/// Never: [`open_no_follow`] follows links on Windows.
pub(crate) fn is_a_link(e: &io::Error) -> bool {
    let _ = e;
    false
}

/// Windows: no owner or mode check is made (the folder's ACL decides who
/// can write there; docs/CACHE.md).
pub(crate) fn untrusted(meta: &Metadata) -> Option<String> {
    let _ = meta;
    None
}

/// Creates `path` for reading and writing, failing if it exists.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// 100-ns intervals since 1601 as nanoseconds.
fn filetime_ns(t: i64) -> i128 {
    i128::from(t) * 100
}

/// The identity of an open file: the volume's serial number and the file's
/// index on it, and its last write and change times.
pub(crate) fn file_stamp(file: &File, _meta: &Metadata) -> io::Result<FileStamp> {
    let handle = file.as_raw_handle() as HANDLE;
    // SAFETY: plain data, written by the call below.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `handle` is the open file `file` keeps open for the call;
    // `info` is writable and of the type the call expects.
    check(unsafe { GetFileInformationByHandle(handle, &mut info) })?;
    // SAFETY: plain data, written by the call below.
    let mut basic: FILE_BASIC_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the size passed is the size of `basic`, which is
    // the structure FileBasicInfo asks for.
    check(unsafe {
        GetFileInformationByHandleEx(
            handle,
            FileBasicInfo,
            (&mut basic as *mut FILE_BASIC_INFO).cast(),
            std::mem::size_of::<FILE_BASIC_INFO>() as u32,
        )
    })?;
    Ok(FileStamp {
        volume: u64::from(info.dwVolumeSerialNumber),
        index: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        mtime_ns: filetime_ns(basic.LastWriteTime),
        ctime_ns: filetime_ns(basic.ChangeTime),
    })
}

/// Windows paths name regular files or folders (devices such as `NUL`
/// show as neither): nothing more specific to say.
pub(crate) fn special_kind(meta: &Metadata) -> Option<&'static str> {
    let _ = meta;
    None
}

/// A file name as C passed it: UTF-8 (what onnx-mlir writes), converted to
/// Windows's UTF-16; `None` if the bytes are not UTF-8.
pub(crate) fn path_from_c(bytes: &[u8]) -> Option<&Path> {
    std::str::from_utf8(bytes).ok().map(Path::new)
}

/// Reads up to `buf.len()` bytes at `offset`: the number read (0 at the
/// end of the file), or the OS error. A positioned `ReadFile`; threads may
/// call it on one handle at once, though Windows serialises synchronous
/// I/O on a handle.
pub(crate) fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.seek_read(buf, offset)
}

/// Writes all of `bytes` at `offset`.
pub(crate) fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    while !bytes.is_empty() {
        match file.seek_write(bytes, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// True for the errors Windows gives a size a volume can never hold.
pub(crate) fn is_size_limit_error(code: i32) -> bool {
    // ERROR_FILE_TOO_LARGE (223), ERROR_INVALID_PARAMETER (87)
    code == 223 || code == 87
}

/// The whole size in bytes of the volume that holds `folder`
/// (`GetDiskFreeSpaceExW`).
pub(crate) fn file_system_size(folder: &Path) -> io::Result<u64> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = folder.as_os_str().encode_wide().chain(Some(0)).collect();
    let mut total = 0u64;
    // SAFETY: `wide` is a NUL-terminated UTF-16 path that lives for the
    // call; `total` is writable; the other two outputs may be NULL.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            wide.as_ptr(),
            std::ptr::null_mut(),
            &mut total,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(total)
}

/// Takes an exclusive lock on `file` without waiting (`LockFileEx`, on one
/// byte far past any data, so that the holder's own reads, writes and
/// views are never in the locked range): true if taken, false if another
/// handle holds it. Held until the handle is closed.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: OVERLAPPED is plain data; all zero but the offset set below.
    let mut at: OVERLAPPED = unsafe { std::mem::zeroed() };
    at.Anonymous.Anonymous.Offset = 0xFFFF_FFFE;
    at.Anonymous.Anonymous.OffsetHigh = 0x7FFF_FFFF;
    // SAFETY: `file`'s handle is open for the call; `at` is a valid,
    // writable OVERLAPPED for a synchronous handle.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle() as HANDLE,
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut at,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    // ERROR_LOCK_VIOLATION (33): another handle holds it.
    if e.raw_os_error() == Some(33) {
        return Ok(false);
    }
    Err(e)
}

// ---- mappings --------------------------------------------------------

/// Makes a raw mapping read-only: a later write to it faults.
pub(crate) fn protect_read_only(map: &MmapRaw) -> io::Result<()> {
    let mut old: PAGE_PROTECTION_FLAGS = 0;
    // SAFETY: [ptr, ptr+len) is exactly the live view `map` owns; MmapRaw
    // makes no claim about its protection, and VirtualProtect changes only
    // the access the pages allow; `old` is writable.
    check(unsafe { VirtualProtect(map.as_mut_ptr().cast(), map.len(), PAGE_READONLY, &mut old) })
}

/// Windows maps a file as one view: pieces at fixed places would need
/// placeholders (`VirtualAlloc2`, `MapViewOfFile3`: Windows 10 1803 and
/// later, and not in the wine that tests the port), and Windows has no
/// per-mapping limit to work around. So a [`MapRange`] takes one piece,
/// the whole range (docs/PLATFORMS.md).
pub(crate) const ONE_PIECE_ONLY: bool = true;

/// The range a file is mapped into: here, the one view [`map_piece`] makes
/// (nothing is reserved before it); unmapped on drop.
pub(crate) struct MapRange {
    view: OnceLock<memmap2::Mmap>,
    len: usize,
}

impl MapRange {
    /// A range of `len` bytes, mapped by one [`map_piece`] call; `align`
    /// has no effect (views start on the allocation granularity, 64 KiB).
    pub(crate) fn new(len: usize, align: usize) -> io::Result<MapRange> {
        let _ = align;
        Ok(MapRange {
            view: OnceLock::new(),
            len,
        })
    }

    /// The start of the range: NULL until it is mapped.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.view
            .get()
            .map_or(std::ptr::null_mut(), |m| m.as_ptr().cast_mut())
    }
}

/// Maps the first `len` bytes of `file` as the reservation's one view:
/// `offset` must be 0 and `len` the whole range, once ([`ONE_PIECE_ONLY`]).
pub(crate) fn map_piece(res: &MapRange, file: &File, offset: usize, len: usize) -> io::Result<()> {
    if offset != 0 || len != res.len || res.view.get().is_some() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: memmap2 marks mapping unsafe because the file can change
    // under the mapping. It is mapped read-only, `len` is within the
    // file's checked length, and the remaining hazard (truncating a mapped
    // file in place) is the user's documented duty (docs/SEMANTICS.md: replace files
    // by rename).
    let view = unsafe { memmap2::MmapOptions::new().len(len).map(file) }?;
    res.view
        .set(view)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

// ---- threads ---------------------------------------------------------

/// Windows has no thread cancellation to hold off.
pub(crate) struct CancelOff;

impl CancelOff {
    pub(crate) fn new() -> CancelOff {
        CancelOff
    }
}

/// A number for the calling thread, distinct among live threads.
pub(crate) fn thread_self() -> u64 {
    // SAFETY: GetCurrentThreadId has no preconditions and cannot fail.
    u64::from(unsafe { windows_sys::Win32::System::Threading::GetCurrentThreadId() })
}

/// A thread started by [`spawn`]: its handle, as an address so that the
/// id can cross threads (a HANDLE is a raw pointer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadId(usize);

unsafe extern "system" fn trampoline(arg: *mut c_void) -> u32 {
    // SAFETY: `arg` is the Box<Job> leaked by `spawn` for this thread only.
    let job: Box<Job<'static>> = unsafe { Box::from_raw(arg.cast()) };
    // A panic must not unwind into the OS; the caller sees the job's
    // missing result instead.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    0
}

/// Starts `job` on a new OS thread (`CreateThread`) that touches no Rust
/// thread-local state (see `threads.rs`); gives the job back if no thread
/// can be had.
///
/// # Safety
/// Everything `job` borrows must outlive its run: before any borrow ends,
/// the caller must know the job has run or has been taken back
/// (`threads::run_into`'s handoff does both), or give it only owned data.
pub(crate) unsafe fn spawn(job: Job<'_>) -> Result<ThreadId, Job<'_>> {
    let raw = Box::into_raw(Box::new(job));
    // SAFETY: the trampoline takes ownership of `raw` only if the thread
    // starts; default security and stack size; no thread id wanted.
    let handle = unsafe {
        CreateThread(
            std::ptr::null(),
            0,
            Some(trampoline),
            raw.cast::<c_void>().cast_const(),
            0,
            std::ptr::null_mut(),
        )
    };
    if handle.is_null() {
        // SAFETY: the thread did not start, so `raw` is still ours.
        Err(*unsafe { Box::from_raw(raw) })
    } else {
        Ok(ThreadId(handle as usize))
    }
}

/// Ends a thread started by [`spawn`] once its job is done or taken
/// (`threads.rs`): closes its handle without waiting. A thread's start and
/// exit need the loader lock, which the caller (inside `DllMain`) or a
/// thread waiting for the caller may hold, so waiting for it could hang.
/// It runs or exits later; the module holding this code is pinned first,
/// so that code is still mapped then. Once per thread.
pub(crate) fn release_thread(id: ThreadId) {
    pin_object_at(release_thread as fn(ThreadId) as usize);
    // SAFETY: `id.0` is the live handle CreateThread returned, neither
    // joined nor let go before; the thread runs on without it.
    unsafe {
        CloseHandle(id.0 as HANDLE);
    }
}

/// Lets a thread started by [`spawn`] run on: as [`release_thread`], since
/// Windows never waits for a thread anyway. Once per thread.
pub(crate) fn detach_thread(id: ThreadId) {
    release_thread(id);
}

/// Windows has no `fork`: no handlers to register.
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    let _ = (prepare, parent, child);
}

// ---- the loader ------------------------------------------------------

/// The module (DLL or executable) whose image contains `addr`, without
/// taking a reference to it.
fn module_at(addr: usize, flags: u32) -> Option<HMODULE> {
    let mut module: HMODULE = std::ptr::null_mut();
    // SAFETY: with FROM_ADDRESS, the "name" is an address that the call
    // only looks up in the loader's tables; it never dereferences it, and
    // writes only `module`.
    let ok = unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | flags,
            addr as *const u16,
            &mut module,
        )
    };
    (ok != 0 && !module.is_null()).then_some(module)
}

/// The loaded module whose image contains `addr`: its load address, and
/// its full path (`GetModuleFileNameW`), or `None` if no module contains
/// `addr`.
pub(crate) fn object_at(addr: usize) -> Option<(usize, Option<PathBuf>)> {
    let module = module_at(addr, GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT)?;
    let mut buf = vec![0u16; 1024];
    let name = loop {
        // SAFETY: `module` is loaded (it holds `addr`, which the caller is
        // using); the call writes at most `buf.len()` units into `buf`.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) } as usize;
        if n == 0 {
            break None;
        }
        if n < buf.len() {
            break Some(PathBuf::from(OsString::from_wide(&buf[..n])));
        }
        if buf.len() > PATH_MAX {
            break None;
        }
        buf.resize((buf.len() * 2).min(PATH_MAX + 1), 0);
    };
    Some((module as usize, name))
}

/// Marks the module holding `addr`, which is this library's code, as never
/// to be unloaded (`GET_MODULE_HANDLE_EX_FLAG_PIN`); for an executable this
/// is harmless. Once per process: the call takes the loader lock, which a
/// thread waiting for one of our loads may hold (a model's `DllMain`), so
/// it is made when the registry is made ([`pin_library`]) and is a no-op on
/// the load paths after that.
pub(crate) fn pin_object_at(addr: usize) {
    if PINNED.load(Ordering::Acquire) {
        return;
    }
    if module_at(addr, GET_MODULE_HANDLE_EX_FLAG_PIN).is_some() {
        PINNED.store(true, Ordering::Release);
    }
}

/// Whether [`pin_object_at`] has pinned this library's module.
static PINNED: AtomicBool = AtomicBool::new(false);

/// Pins the module holding this library's code, once per process; called
/// when the process-wide registry is made, before any load can be waited
/// for (see [`pin_object_at`]).
pub(crate) fn pin_library() {
    pin_object_at(pin_library as fn() as usize);
}

// ---- stderr ----------------------------------------------------------

/// Writes `bytes` to the standard error handle with plain `WriteFile`
/// calls: no lock, one call for a short line. A closed or failing stderr
/// is not the library's to report.
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    // SAFETY: no preconditions; the handle may be NULL or invalid, which
    // WriteFile then reports as an error.
    let handle = unsafe { GetStdHandle(STD_ERROR_HANDLE) };
    if handle.is_null() {
        return;
    }
    while !bytes.is_empty() {
        let want = bytes.len().min(u32::MAX as usize) as u32;
        let mut wrote = 0u32;
        // SAFETY: `bytes` is a live slice of at least `want` bytes; `wrote`
        // is writable; no OVERLAPPED (a synchronous write).
        let ok = unsafe {
            WriteFile(
                handle,
                bytes.as_ptr(),
                want,
                &mut wrote,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || wrote == 0 {
            return;
        }
        bytes = &bytes[wrote as usize..];
    }
}
