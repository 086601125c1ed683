//! The packed-weights cache's C functions (`src/cache/`): a small,
//! separate part of the ABI.

use std::os::raw::{c_char, c_void};

use super::args::{cache, out, text};
use super::{call, call_quiet_on};
use crate::cache::Cache;
use crate::error::ErrorKind;
use crate::global::global;

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
/// threads; calls on it are serialised, except that a commit holds no lock
/// while it writes: meanwhile lookups find nothing, and reserve and a
/// second commit fail. A handle is not for use in a child forked while
/// another thread was inside one of its calls.
///
/// Errors: false, with `*out_cache` set to NULL and the last error, on
/// NULL arguments, a misaligned `out_cache`, a path naming no file or naming a FIFO,
/// device or folder (refused without blocking), or an identity too long.
///
/// # Safety
/// `path` and `identity` are NULL or NUL-terminated strings; `out_cache`
/// is NULL or writable.
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
/// `cache_handle` is NULL or an open handle; `name` is NULL or a NUL-terminated
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
/// for this process, without persisting (`om_cache_commit` then returns
/// false and says so).
///
/// Errors: false and the last error on NULL arguments, a misaligned `data`,
/// a zero size, a bad alignment, a name reserved twice, a cache that is
/// already complete for its identity (loaded from its file) or already
/// committed, a size no file in the cache's folder could ever hold (this
/// call alone fails; the cache goes on building in its file), or no
/// memory.
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
/// Errors: false and the last error if writing, syncing or renaming fails
/// (the entries stay usable in memory and the old file is untouched), if
/// the entries could not be persisted at all because the cache's folder
/// could not hold the file (read-only, full: the entries live on the heap
/// and stay usable; that reason was logged once when it happened, and this
/// call's message repeats it without logging it again), or if another
/// thread's commit of this handle is under way.
///
/// # Safety
/// `cache_handle` is NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn om_cache_commit(cache_handle: *mut Cache) -> bool {
    // Not persisted: its reason was logged when the folder refused the file.
    call_quiet_on(Some(ErrorKind::NotPersisted), false, || {
        // SAFETY: the caller passes a valid handle (documented above).
        unsafe { cache(cache_handle)? }.commit().map(|_| true)
    })
}

/// Closes the cache: unmaps or frees every region and removes an
/// uncommitted temporary file. Every pointer the handle gave out becomes
/// invalid. Closing NULL does nothing and returns true (like `free`).
///
/// # Safety
/// `cache_handle` is NULL or an open handle, not used again after this
/// call.
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
