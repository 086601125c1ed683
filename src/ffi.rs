//! The C ABI: every `extern "C"` function of the library, and nothing else.
//!
//! Each function checks its pointers, turns them into Rust references, calls
//! the registry inside `catch_unwind`, and turns an error into `false` plus
//! the thread's last error (and one stderr line at the `error` log level).
//! No logic lives here: the semantics are in `registry`.

use crate::sync::AtomicPtr;
use std::ffi::{CStr, OsStr};
use std::os::raw::{c_char, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr as StdAtomicPtr, Ordering};

use crate::cache::Cache;
use crate::error::{self, Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::registry::{global, Request};
use crate::slot::{classify, State};
use crate::stats::Stats;

/// Runs `f` for an ABI call: clears the last error, catches panics, and
/// reports any error; returns `fallback` on failure.
fn call<T>(fallback: T, f: impl FnOnce() -> Result<T>) -> T {
    error::clear_last_error();
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(_) => Error::new(
            ErrorKind::Internal,
            "internal error in om-constants (a panic was caught); please report it",
        ),
    };
    error::set_last_error(&err);
    // The registry may be what failed to initialise; never re-enter it here.
    let level = catch_unwind(|| global().config().log).unwrap_or(Level::Error);
    log::emit(level, Level::Error, err.message());
    fallback
}

/// True if `ptr` can point at a slot: non-NULL and aligned for a pointer.
/// Both tests are always evaluated (`&`, not `&&`), so the fast paths can
/// select on the result instead of branching (see [`peek`]).
#[inline(always)]
fn usable(ptr: *mut *mut c_void) -> bool {
    !ptr.is_null() & (ptr as usize % std::mem::align_of::<*mut c_void>() == 0)
}

/// `ptr` as the slot it points at, if it is [`usable`].
/// (Unit-tested in `tests::as_slot_refuses_null_and_misaligned`.)
///
/// # Safety
/// A non-NULL `ptr` must point at a `void *` that stays valid for `'a` and
/// is accessed by others only through this library or after it returns.
#[inline]
unsafe fn as_slot<'a>(ptr: *mut *mut c_void) -> Option<&'a AtomicPtr<c_void>> {
    // SAFETY: non-NULL and aligned (usable); AtomicPtr<c_void> has the size
    // and alignment of *mut c_void; validity is the caller's contract.
    usable(ptr).then(|| unsafe { &*(ptr as *const AtomicPtr<c_void>) })
}

/// What the per-inference fast paths read in place of a NULL or misaligned
/// pointer. It is never set, so they fall through to their slow paths, which
/// report the bad pointer.
static NEVER_SET: StdAtomicPtr<c_void> = StdAtomicPtr::new(std::ptr::null_mut());

/// The value `ptr` points at (one acquire load), or NULL if `ptr` is NULL or
/// misaligned: the fast paths' only read.
///
/// The pointer checks select what to read (a conditional move) rather than
/// branch, so a fast path has one branch, on the value, like onnx-mlir's
/// bare NULL check. With a branch per check, the call measured 13-25%
/// slower than that check at the same call distance
/// (`scripts/bench-fast-path.sh`). The fast paths use std's atomics even in
/// loom builds: they read the caller's memory, which is never one of loom's
/// modelled cells.
///
/// # Safety
/// A non-NULL, aligned `ptr` must point at a `void *` that stays valid
/// during the call and is accessed by others only through this library or
/// after it returns.
#[inline(always)]
unsafe fn peek(ptr: *mut *mut c_void) -> *mut c_void {
    let cell: *const StdAtomicPtr<c_void> = if usable(ptr) { ptr.cast() } else { &NEVER_SET };
    // SAFETY: `cell` is NEVER_SET or, by the caller's contract, a valid,
    // aligned `void *`; StdAtomicPtr<c_void> has the size and alignment of
    // `*mut c_void`.
    unsafe { (*cell).load(Ordering::Acquire) }
}

// Where the per-inference fast paths live: each in a section of its own,
// aligned to a 64-byte cache line, so that none of them (about 40 bytes of
// code) ever straddles two lines. Where the linker happens to put a function
// decides that otherwise: straddling measured 1.2-1.4x slower per call than
// onnx-mlir's check, fitting 0.97-1.01x (`scripts/bench-fast-path.sh`).
// Stable Rust cannot align a function, but the assembler gives a section the
// largest alignment asked for in it: an empty `.p2align 6` in a section of
// the same name and flags as the function's raises that section to 64 bytes.
// The names here and in the `link_section` attributes below must agree;
// tests/symbols.rs checks that the exported fast paths are 64-byte aligned.
// ELF only (the section syntax); other targets keep the linker's placement.
#[cfg(target_os = "linux")]
std::arch::global_asm!(
    ".pushsection .text.om_fast_path.mmap_binary_file,\"ax\",%progbits",
    ".p2align 6",
    ".popsection",
    ".pushsection .text.om_fast_path.get_external_constant_addr,\"ax\",%progbits",
    ".p2align 6",
    ".popsection",
    ".pushsection .text.om_fast_path.omMMapBinaryFile,\"ax\",%progbits",
    ".p2align 6",
    ".popsection",
    ".pushsection .text.om_fast_path.omGetExternalConstantAddr,\"ax\",%progbits",
    ".p2align 6",
    ".popsection",
);

/// `ptr` as the slot it points at, or an error naming `what`.
///
/// # Safety
/// As for [`as_slot`].
unsafe fn slot_ref<'a>(ptr: *mut *mut c_void, what: &str) -> Result<&'a AtomicPtr<c_void>> {
    // SAFETY: the caller's contract is as_slot's.
    unsafe { as_slot(ptr) }.ok_or_else(|| {
        let why = if ptr.is_null() {
            "is NULL"
        } else {
            "is not aligned for a pointer"
        };
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} ({ptr:p}) {why}; pass the address of the model's constants pointer"),
        )
    })
}

/// The request behind a load call.
///
/// # Safety
/// A non-NULL `fname` must be a NUL-terminated string valid for `'a`.
unsafe fn request<'a>(fname: *const c_char, size: i64, is_le: i64) -> Result<Request<'a>> {
    if fname.is_null() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the constants file name (fname) is NULL; pass the file name the model was \
             compiled with",
        ));
    }
    // SAFETY: non-NULL, and NUL-terminated by the caller's contract.
    let name = unsafe { CStr::from_ptr(fname) };
    Request::new(OsStr::from_bytes(name.to_bytes()), size, is_le)
}

/// Acquire: takes one reference on the constants buffer of the slot
/// `*const_addr`, loading the file into it first if the slot is empty.
///
/// `const_addr` points at the model's constants pointer (its "slot"), which
/// must start out NULL; only this library writes it. `fname` names the
/// constants file: an absolute path is used as is, otherwise the file is
/// searched in `$OM_CONSTANT_PATH`, the folder of the shared object that
/// contains the slot, then the current directory. `size` is the number of
/// bytes the model reads (the file may be longer, not shorter); `is_le` is
/// non-zero (any non-zero value, as in onnx-mlir) when the file's data is
/// little-endian and 0 when it is big-endian, and must match this machine.
///
/// Ownership: on success `*const_addr` points at `size` readable bytes that
/// stay valid until this reference is released with
/// `om_free_constant_buffer`. Each successful call must be matched by one
/// release; using the pointer after one's own last release is a bug.
///
/// Thread safety: any number of threads may call this and the other slot
/// functions on the same slot at once; exactly one of them reads the file,
/// the others wait (at most `OM_CONSTANT_WAIT_TIMEOUT` seconds) and share
/// its buffer. Slots that load the same file share one buffer; "the same
/// file" is the same inode, length, mtime and ctime, and a buffer keeps its
/// file open, so a file replaced by rename is never served from the old
/// file's buffer.
///
/// Lifecycle: the library is never unloaded (`dlclose` leaves it mapped),
/// so its helper threads never outlive their code. After `fork`, the child
/// may acquire, release and trim: loads in flight in the parent are not in
/// flight in the child (their slots read NULL again), and buffers it
/// inherited stay valid until it releases them.
///
/// Errors: returns false and leaves the slot as it was (NULL if it was) on a
/// NULL or misaligned `const_addr`, a NULL `fname`, `size <= 0`, a byte-order
/// mismatch, a file that is missing, not a regular file or shorter than
/// `size`, an I/O error, a wait that timed out, a slot already loaded with
/// another file or size (the message names both), or a slot holding a
/// value this library did not write (the LOADING marker with no load in
/// flight); `om_constants_last_error` then says why.
///
/// # Safety
/// `const_addr` is NULL or points at a `void *` that stays valid during the
/// call; `fname` is NULL or points at a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn om_load_constants_from_file(
    const_addr: *mut *mut c_void,
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> bool {
    call(false, || {
        // SAFETY: the caller passes a valid slot and name (documented above).
        let (slot, req) = unsafe {
            (
                slot_ref(const_addr, "const_addr")?,
                request(fname, size, is_le)?,
            )
        };
        global().acquire(slot, &req).map(|_| true)
    })
}

/// Release: drops one reference on the slot's buffer. The last release
/// unmaps or frees the buffer and sets `*const_addr` to NULL, so a later
/// acquire loads the file again (unless `OM_CONSTANT_KEEP=1` keeps the
/// buffer cached until `om_constants_trim`).
///
/// Ownership: after the caller's last release its copy of the pointer must
/// not be used.
///
/// Thread safety: may race with acquires and releases on any thread; an
/// acquire never receives a freed buffer.
///
/// Errors: returns false, frees nothing and changes nothing when
/// `const_addr` is NULL or misaligned, or the slot holds no reference (it is
/// NULL, being loaded, or holds a pointer this library did not put there):
/// a double release is reported, never a double free.
///
/// # Safety
/// `const_addr` is NULL or points at a `void *` that stays valid during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn om_free_constant_buffer(const_addr: *mut *mut c_void) -> bool {
    call(false, || {
        // SAFETY: the caller passes a valid slot (documented above).
        let slot = unsafe { slot_ref(const_addr, "const_addr")? };
        global().release(slot).map(|_| true)
    })
}

/// Ensure loaded (onnx-mlir's per-inference call): if the slot already holds
/// a buffer, returns true at once without changing any count (one atomic
/// load: no lock, no shared write, and the last error is left as it was);
/// otherwise loads the file exactly as
/// `om_load_constants_from_file` does, and the slot holds that one reference
/// (released only by an explicit `om_free_constant_buffer`).
///
/// Arguments, thread safety and errors: as `om_load_constants_from_file`.
///
/// # Safety
/// As for `om_load_constants_from_file`.
#[no_mangle]
#[cfg_attr(
    target_os = "linux",
    link_section = ".text.om_fast_path.mmap_binary_file"
)]
pub unsafe extern "C" fn om_mmap_binary_file(
    const_addr: *mut *mut c_void,
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> bool {
    // The per-inference fast path (docs/ARCHITECTURE.md, "A call's way"), kept apart from the slow
    // path so this function has no frame to set up: a few instructions and
    // one branch.
    // SAFETY: the caller passes a valid slot (documented above).
    if matches!(classify(unsafe { peek(const_addr) }), State::Loaded(_)) {
        return true;
    }
    // SAFETY: same contract as this function.
    unsafe { ensure_loaded_slow(const_addr, fname, size, is_le) }
}

/// The slow path of `om_mmap_binary_file`: load (or wait for) the buffer.
/// `extern "C"` (it never unwinds: `call` catches panics) so the fast path
/// reaches it by a tail jump and needs no stack frame of its own.
///
/// # Safety
/// As for `om_mmap_binary_file`.
#[cold]
#[inline(never)]
unsafe extern "C" fn ensure_loaded_slow(
    const_addr: *mut *mut c_void,
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> bool {
    call(false, || {
        // SAFETY: the caller passes a valid slot (documented above).
        let slot = unsafe { slot_ref(const_addr, "const_addr")? };
        global()
            // SAFETY: the caller passes a valid name (documented above).
            .ensure_loaded(slot, || unsafe { request(fname, size, is_le) })
            .map(|_| true)
    })
}

/// Sets `*output_addr` to `*base_addr + offset` (the address of one constant
/// inside the loaded buffer), unless `*output_addr` is already non-NULL.
///
/// `base_addr` is a slot loaded by one of the load functions; `offset` must
/// lie within its buffer (checked against the buffer the slot holds at the
/// moment of the call). Concurrent calls for the same constant agree.
///
/// Errors: on a NULL or misaligned pointer, a base slot that this library
/// did not load (empty, still loading, or holding another pointer), or an
/// offset outside the buffer, leaves `*output_addr` unchanged and sets the
/// last error (the function returns nothing, as onnx-mlir's does). When
/// `*output_addr` is already set it returns at once (one atomic load) and
/// leaves the last error as it was.
///
/// # Safety
/// `output_addr` and `base_addr` are each NULL or point at a `void *` that
/// stays valid during the call.
#[no_mangle]
#[cfg_attr(
    target_os = "linux",
    link_section = ".text.om_fast_path.get_external_constant_addr"
)]
pub unsafe extern "C" fn om_get_external_constant_addr(
    output_addr: *mut *mut c_void,
    base_addr: *mut *mut c_void,
    offset: i64,
) {
    // Legacy models call this for every constant on every inference: once
    // the address is set, one load and return, like om_mmap_binary_file.
    // SAFETY: the caller passes valid pointers (documented above).
    if !unsafe { peek(output_addr) }.is_null() {
        return;
    }
    // SAFETY: same contract as this function.
    unsafe { constant_address_slow(output_addr, base_addr, offset) }
}

/// The slow path of `om_get_external_constant_addr`: check and set.
///
/// # Safety
/// As for `om_get_external_constant_addr`.
#[cold]
#[inline(never)]
unsafe extern "C" fn constant_address_slow(
    output_addr: *mut *mut c_void,
    base_addr: *mut *mut c_void,
    offset: i64,
) {
    call((), || {
        // SAFETY: the caller passes valid pointers (documented above).
        let (out, base) = unsafe {
            (
                slot_ref(output_addr, "output_addr")?,
                slot_ref(base_addr, "base_addr")?,
            )
        };
        global().constant_address(out, base, offset)
    })
}

/// Returns this thread's last error message, or NULL if the thread's last
/// call succeeded. Every call clears it on entry, except this one and the
/// per-inference fast paths (`om_mmap_binary_file` on a loaded slot,
/// `om_get_external_constant_addr` on a set address), which touch nothing
/// but the pointer; so read it right after a call that reported failure.
///
/// The string is owned by the library and stays valid until this thread's
/// next call into the library; copy it to keep it. Thread-local: another
/// thread's errors are never seen here.
#[no_mangle]
pub extern "C" fn om_constants_last_error() -> *const c_char {
    error::last_error_ptr()
}

/// Fills `*out` with a snapshot of the library's counters: buffers,
/// references and bytes alive now; loads, waits, failures, bytes and time
/// since the process started, per strategy.
///
/// Set `out->size = sizeof(struct om_constants_stats)` before the call. The
/// library fills at most that many bytes (whole fields), so a host built
/// with an older, shorter struct is never written past its end; on return
/// `out->size` holds the bytes filled, and fields past them (a newer
/// host's, unknown to this library) are left as they were.
///
/// Returns false (and sets the last error) if `out` is NULL or `out->size`
/// is smaller than 16 (unset). Thread safety: may be called at any time
/// from any thread; the live figures are taken under the registry's lock
/// and agree with each other.
///
/// # Safety
/// `out` is NULL or points at `out->size` writable bytes (any alignment).
#[no_mangle]
pub unsafe extern "C" fn om_constants_stats(out: *mut Stats) -> bool {
    call(false, || {
        if out.is_null() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "om_constants_stats: out is NULL; pass a struct om_constants_stats to fill",
            ));
        }
        // SAFETY: non-NULL and, by contract, at least its `size` field is
        // readable; read_unaligned tolerates any alignment.
        let asked = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() };
        if asked < crate::stats::MIN_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "om_constants_stats: out->size is {asked}; set it to \
                     sizeof(struct om_constants_stats) before the call (this library's is {})",
                    std::mem::size_of::<Stats>()
                ),
            ));
        }
        let ours = std::mem::size_of::<Stats>() as u64;
        let n = asked.min(ours) / 8 * 8;
        let mut s = global().stats();
        s.size = n;
        // SAFETY: `out` has room for `asked >= n` bytes by contract; `s` is
        // a local of `ours >= n` bytes; the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&s as *const Stats).cast::<u8>(),
                out.cast::<u8>(),
                n as usize,
            )
        };
        Ok(true)
    })
}

/// Returns the library's version as a static string, e.g. "0.1.0".
/// The string is never freed and never changes.
#[no_mangle]
pub extern "C" fn om_constants_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees every buffer kept with no reference (`OM_CONSTANT_KEEP=1`);
/// returns how many were freed. Buffers still referenced are untouched.
/// Thread safety: may race with any other call.
#[no_mangle]
pub extern "C" fn om_constants_trim() -> u64 {
    call(0, || Ok(global().trim()))
}

/// onnx-mlir name of `om_mmap_binary_file` (ensure loaded), with onnx-mlir's
/// signature, so models compiled by any onnx-mlir version link unchanged.
///
/// # Safety
/// As for `om_mmap_binary_file`.
#[no_mangle]
#[cfg_attr(
    target_os = "linux",
    link_section = ".text.om_fast_path.omMMapBinaryFile"
)]
pub unsafe extern "C" fn omMMapBinaryFile(
    const_addr: *mut *mut c_void,
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> bool {
    // SAFETY: same contract as om_mmap_binary_file.
    unsafe { om_mmap_binary_file(const_addr, fname, size, is_le) }
}

/// onnx-mlir name of `om_get_external_constant_addr`.
///
/// # Safety
/// As for `om_get_external_constant_addr`.
#[no_mangle]
#[cfg_attr(
    target_os = "linux",
    link_section = ".text.om_fast_path.omGetExternalConstantAddr"
)]
pub unsafe extern "C" fn omGetExternalConstantAddr(
    output_addr: *mut *mut c_void,
    base_addr: *mut *mut c_void,
    offset: i64,
) {
    // SAFETY: same contract as om_get_external_constant_addr.
    unsafe { om_get_external_constant_addr(output_addr, base_addr, offset) }
}

/// onnx-mlir name of `om_load_constants_from_file` (acquire), called from
/// the model's global constructor.
///
/// # Safety
/// As for `om_load_constants_from_file`.
#[no_mangle]
pub unsafe extern "C" fn omLoadConstantData(
    const_addr: *mut *mut c_void,
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> bool {
    // SAFETY: same contract as om_load_constants_from_file.
    unsafe { om_load_constants_from_file(const_addr, fname, size, is_le) }
}

/// onnx-mlir name of `om_free_constant_buffer` (release), called from the
/// model's global destructor. `size` is accepted for onnx-mlir's signature
/// and not needed: the library knows each buffer's size.
///
/// # Safety
/// As for `om_free_constant_buffer`.
#[no_mangle]
pub unsafe extern "C" fn omUnloadConstantData(const_addr: *mut *mut c_void, size: i64) -> bool {
    let _ = size;
    // SAFETY: same contract as om_free_constant_buffer.
    unsafe { om_free_constant_buffer(const_addr) }
}

// ---------------------------------------------------------------------
// The packed-weights cache (src/cache): a small, separate part of the ABI.
// ---------------------------------------------------------------------

/// `p` as a UTF-8 string, or an error naming `what`.
///
/// # Safety
/// A non-NULL `p` must be a NUL-terminated string valid for `'a`.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::new(ErrorKind::InvalidArgument, format!("{what} is not UTF-8")))
}

/// `p` as the cache it points at, or an error.
///
/// # Safety
/// A non-NULL `p` must come from `om_cache_open` and not be closed yet.
unsafe fn cache<'a>(p: *const Cache) -> Result<&'a Cache> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            "cache is NULL; pass the handle om_cache_open returned",
        )
    })
}

/// `p` if it is non-NULL and aligned for a `T`, or an error naming `what`:
/// the same refusal as for slot pointers, since writing through a
/// misaligned pointer is undefined behaviour.
fn out<T>(p: *mut T, what: &str) -> Result<*mut T> {
    if p.is_null() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} is NULL; pass where to store the result"),
        ));
    }
    if (p as usize) % std::mem::align_of::<T>() != 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{what} ({p:p}) is not aligned for its type ({} bytes); pass the address of \
                 a variable of that type",
                std::mem::align_of::<T>()
            ),
        ));
    }
    Ok(p)
}

/// Opens the packed-weights cache at `path` for `identity` (the caller's
/// model hash and packing-code version, at most 2048 bytes) and stores its
/// handle in `*out`.
///
/// If `path` holds a valid cache built for the same identity by this
/// library's format, it is mapped read-only and every entry is served by
/// `om_cache_lookup` without packing or writing anything. Otherwise (no
/// file, another identity or format version, a damaged file: every
/// checksum is verified) the file is ignored, never trusted, and entries
/// are built with `om_cache_reserve` and `om_cache_commit`.
///
/// Ownership: close the handle with `om_cache_close`; pointers it gave out
/// are valid until then. Thread safety: a handle may be used from several
/// threads; calls on it are serialised.
///
/// Errors: false, with `*out` set to NULL and the last error, on NULL
/// arguments, a misaligned `out`, a path naming no file or naming a FIFO,
/// device or folder (refused without blocking), or an identity too long.
///
/// # Safety
/// `path` and `identity` are NULL or NUL-terminated strings; `out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn om_cache_open(
    path: *const c_char,
    identity: *const c_char,
    out_cache: *mut *mut Cache,
) -> bool {
    call(false, || {
        let out_cache = out(out_cache, "out")?;
        // SAFETY: `out_cache` is non-NULL and writable by contract.
        unsafe { out_cache.write(std::ptr::null_mut()) };
        // SAFETY: the caller passes valid strings (documented above).
        let (path, identity) = unsafe { (text(path, "path")?, text(identity, "identity")?) };
        let c = Cache::open(
            std::path::Path::new(path),
            identity.as_bytes(),
            global().config(),
        )?;
        // SAFETY: as above.
        unsafe { out_cache.write(Box::into_raw(Box::new(c))) };
        Ok(true)
    })
}

/// Looks up the committed entry `name`: if present, sets `*found` to true
/// and `*data` (read-only) and `*size`; if absent, sets `*found` to false.
/// Entries reserved but not yet committed are absent.
///
/// Errors: false and the last error, writing nothing, on NULL arguments or
/// an out-pointer not aligned for its type.
///
/// # Safety
/// `cache` is NULL or an open handle; `name` is NULL or a NUL-terminated
/// string; the out pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn om_cache_lookup(
    cache_handle: *const Cache,
    name: *const c_char,
    data: *mut *const c_void,
    size: *mut u64,
    found: *mut bool,
) -> bool {
    call(false, || {
        // SAFETY: the caller passes valid pointers (documented above).
        let (c, name) = unsafe { (cache(cache_handle)?, text(name, "name")?) };
        let (data, size, found) = (out(data, "data")?, out(size, "size")?, out(found, "found")?);
        let hit = c.lookup(name);
        // SAFETY: the out pointers are non-NULL and writable by contract.
        unsafe {
            found.write(hit.is_some());
            if let Some((p, n)) = hit {
                data.write(p.cast());
                size.write(n as u64);
            }
        }
        Ok(true)
    })
}

/// Reserves a writable region of `size` bytes for the entry `name`,
/// aligned to `align` (a power of two up to the page size; regions are
/// page-aligned), and stores its address in `*data`. Pack into it, then
/// call `om_cache_commit`. When the cache's folder is read-only or full,
/// the region comes from the heap (logged once) and everything still works
/// for this process, without persisting.
///
/// Errors: false and the last error on NULL arguments, a misaligned `data`,
/// a zero size, a bad alignment, a name reserved twice, a cache that is
/// already complete for its identity (loaded from its file) or already
/// committed, or no memory.
///
/// # Safety
/// As for `om_cache_lookup`; `data` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn om_cache_reserve(
    cache_handle: *mut Cache,
    name: *const c_char,
    size: u64,
    align: u64,
    data: *mut *mut c_void,
) -> bool {
    call(false, || {
        // SAFETY: the caller passes valid pointers (documented above).
        let (c, name) = unsafe { (cache(cache_handle)?, text(name, "name")?) };
        let data = out(data, "data")?;
        let p = c.reserve(name, size, align)?;
        // SAFETY: `data` is non-NULL and writable by contract.
        unsafe { data.write(p.cast()) };
        Ok(true)
    })
}

/// Makes every reserved entry durable and its pages clean: makes the
/// regions read-only, syncs them, writes the index and header (with
/// checksums) into the temporary file, syncs it and renames it over the
/// cache file, so that a crash at any point leaves the old cache or none.
/// Finish writing every region before calling: a write after the regions
/// turn read-only faults (so a file never holds checksums that disagree
/// with its bytes). Region addresses stay valid. Committing a loaded or
/// committed cache does nothing.
///
/// Errors: false and the last error if writing, syncing or renaming fails;
/// the entries stay usable in memory and the old file is untouched.
///
/// # Safety
/// `cache` is NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn om_cache_commit(cache_handle: *mut Cache) -> bool {
    call(false, || {
        // SAFETY: the caller passes a valid handle (documented above).
        unsafe { cache(cache_handle)? }.commit().map(|_| true)
    })
}

/// Closes the cache: unmaps or frees every region and removes an
/// uncommitted temporary file. Every pointer the handle gave out becomes
/// invalid. Closing NULL does nothing and returns true (like `free`).
///
/// # Safety
/// `cache` is NULL or an open handle, not used again after this call.
#[no_mangle]
pub unsafe extern "C" fn om_cache_close(cache_handle: *mut Cache) -> bool {
    call(false, || {
        if !cache_handle.is_null() {
            // SAFETY: the handle came from Box::into_raw in om_cache_open
            // and, by contract, is closed once.
            drop(unsafe { Box::from_raw(cache_handle) });
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_aligned_slots_and_nothing_else() {
        let mut word = 0u64;
        let mut cells = [
            std::ptr::null_mut::<c_void>(),
            &mut word as *mut u64 as *mut c_void,
        ];
        let base = cells.as_mut_ptr();
        // SAFETY: every pointer peeked is NULL, misaligned (never read) or
        // points into `cells`.
        unsafe {
            assert!(peek(std::ptr::null_mut()).is_null());
            assert!(peek(base).is_null());
            assert_eq!(peek(base.add(1)), cells[1]);
            for off in 1..8 {
                let p = (base as usize + off) as *mut *mut c_void;
                assert!(peek(p).is_null(), "offset {off}");
            }
        }
        assert!(NEVER_SET.load(Ordering::Relaxed).is_null());
    }

    #[test]
    fn as_slot_refuses_null_and_misaligned() {
        let mut cells = [std::ptr::null_mut::<c_void>(); 2];
        let base = cells.as_mut_ptr();
        // SAFETY: every pointer tested is NULL, misaligned (refused before
        // any access) or points into `cells`.
        unsafe {
            assert!(as_slot(std::ptr::null_mut()).is_none());
            for off in 1..8 {
                let p = (base as usize + off) as *mut *mut c_void;
                assert!(as_slot(p).is_none(), "offset {off}");
            }
            assert!(as_slot(base).is_some());
            assert!(as_slot(base.add(1)).is_some());
            assert!(as_slot(usize::MAX as *mut *mut c_void).is_none());
            assert!(
                as_slot((usize::MAX - 7) as *mut *mut c_void).is_some_and(|s| {
                    std::ptr::eq(s as *const _ as *const u8, (usize::MAX - 7) as *const u8)
                })
            );
        }
    }
}
