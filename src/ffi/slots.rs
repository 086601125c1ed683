//! The slot functions: acquire and release (and onnx-mlir's names for
//! them), and the library-wide calls: last error, stats, version, trim.

use std::os::raw::{c_char, c_void};

use super::args::{checked, request, slot_ref};
use super::{call, call_quiet_on};
use crate::error::{self, ErrorKind};
use crate::global::global;
use crate::stats::Stats;

/// Acquire: takes one reference on the constants buffer of the slot
/// `*const_addr`, loading the file into it first if the slot is empty.
///
/// `const_addr` points at the model's constants pointer (its "slot"), which
/// must start out NULL; only this library writes it. `fname` names the
/// constants file: an absolute path is used as is; otherwise, when the
/// environment variable `OM_CONSTANT_PATH` is set (read at each call that
/// loads, as onnx-mlir's loader reads it), only in that folder; else in the
/// folder of the shared library (or DLL) that contains the slot, then in
/// the current directory. On POSIX
/// systems `fname` is bytes, taken as they are; on Windows it is UTF-8,
/// converted to UTF-16 (a name that is not UTF-8 is an error). `size` is the number of
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
/// value this library did not write (a pointer, or `OM_CONSTANTS_LOADING` with
/// no load in flight); `om_constants_last_error` then says why.
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

/// Returns this thread's last error message, or NULL if the thread's last
/// call succeeded. Every call clears it on entry, except this one and the
/// per-inference fast paths (`om_mmap_binary_file` on a loaded slot,
/// `om_get_external_constant_addr` on a set address), which touch nothing
/// but the pointer; so read it right after a call that reported failure.
///
/// The string is owned by the library and stays valid until this thread's
/// next call into the library; copy it to keep it. Thread-local: another
/// thread's errors are never seen here. A message longer than 8191 bytes is
/// cut, ending in "...".
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
        // Any alignment will do (the struct is read and written bytewise).
        checked(
            out.cast::<u8>(),
            "out",
            "pass a struct om_constants_stats to fill",
        )?;
        // SAFETY: non-NULL and, by contract, at least its `size` field is
        // readable; read_unaligned tolerates any alignment.
        let asked = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() };
        let n = Stats::bytes_to_fill(asked)?;
        let mut s = global().stats();
        s.size = n;
        // SAFETY: `out` has room for `asked >= n` bytes by contract; `s` is
        // a local Stats, of at least `n` bytes; the two cannot overlap.
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
/// One difference, as onnx-mlir's own loader: a NULL slot (the model's
/// constructor failed to load, so its destructor releases nothing) returns
/// false quietly. The last error is set, but nothing is logged at the
/// default level (`OM_CONSTANT_LOG=debug` shows it).
///
/// # Safety
/// As for `om_free_constant_buffer`.
#[no_mangle]
pub unsafe extern "C" fn omUnloadConstantData(const_addr: *mut *mut c_void, size: i64) -> bool {
    let _ = size;
    call_quiet_on(Some(ErrorKind::NotLoaded), false, || {
        // SAFETY: the caller passes a valid slot (as for om_free_constant_buffer).
        let slot = unsafe { slot_ref(const_addr, "const_addr")? };
        global().release(slot).map(|_| true)
    })
}
