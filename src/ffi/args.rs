//! The checks every C entry point makes on its arguments, one family:
//! a pointer is NULL, or misaligned for what it points at, or a string is
//! not what it must be; each is an `InvalidArgument` error that names the
//! argument and says what to pass instead.

use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, Result};
use crate::request::Request;
use crate::sync::AtomicPtr;
use crate::sys;

/// True if `ptr` can point at a slot: non-NULL and aligned for a pointer.
/// Both tests are always evaluated (`&`, not `&&`), so the fast paths can
/// select on the result instead of branching (see `fast_path::peek`).
#[inline(always)]
pub(crate) fn usable(ptr: *mut *mut c_void) -> bool {
    !ptr.is_null() & (ptr as usize % std::mem::align_of::<*mut c_void>() == 0)
}

/// `ptr` as the slot it points at, if it is [`usable`].
/// (Unit-tested in `tests::as_slot_refuses_null_and_misaligned`.)
///
/// # Safety
/// A non-NULL `ptr` must point at a `void *` that stays valid for `'a` and
/// is accessed by others only through this library or after it returns.
#[inline]
pub(crate) unsafe fn as_slot<'a>(ptr: *mut *mut c_void) -> Option<&'a AtomicPtr<c_void>> {
    // SAFETY: non-NULL and aligned (usable); AtomicPtr<c_void> has the size
    // and alignment of *mut c_void; validity is the caller's contract.
    usable(ptr).then(|| unsafe { &*(ptr as *const AtomicPtr<c_void>) })
}

/// `p` if it is non-NULL and aligned for a `T`; otherwise the one error
/// shape of the boundary: "`what` is NULL; `fix`" or "`what` (address) is
/// not aligned for its type (N bytes); `fix`". Reading or writing through
/// a misaligned pointer is undefined behaviour, so it is refused as NULL is.
pub(crate) fn checked<T>(p: *const T, what: &str, fix: &str) -> Result<*const T> {
    let align = std::mem::align_of::<T>();
    let why = if p.is_null() {
        format!("{what} is NULL")
    } else if p as usize % align != 0 {
        format!("{what} ({p:p}) is not aligned for its type ({align} bytes)")
    } else {
        return Ok(p);
    };
    Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("{why}; {fix}"),
    ))
}

/// `ptr` as the slot it points at, or an error naming `what`.
///
/// # Safety
/// As for [`as_slot`].
pub(crate) unsafe fn slot_ref<'a>(
    ptr: *mut *mut c_void,
    what: &str,
) -> Result<&'a AtomicPtr<c_void>> {
    checked(
        ptr,
        what,
        "pass the address of the model's constants pointer",
    )?;
    // SAFETY: non-NULL and aligned (checked); validity is the caller's
    // contract, as for as_slot.
    unsafe { as_slot(ptr) }.ok_or_else(|| unreachable_refusal(what))
}

/// `as_slot` refuses exactly what `checked` refuses; should they ever
/// disagree, the call still fails cleanly.
fn unreachable_refusal(what: &str) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("{what}: the pointer checks disagree (a bug in om-constants; please report it)"),
    )
}

/// `p` as a C string, or an error naming `what`.
///
/// # Safety
/// A non-NULL `p` must be a NUL-terminated string valid for `'a`.
unsafe fn c_str<'a>(p: *const c_char, what: &str, fix: &str) -> Result<&'a CStr> {
    checked(p, what, fix)?;
    // SAFETY: non-NULL, and NUL-terminated by the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// The request behind a load call.
///
/// # Safety
/// A non-NULL `fname` must be a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn request<'a>(
    fname: *const c_char,
    size: i64,
    is_le: i64,
) -> Result<Request<'a>> {
    let what = "the constants file name (fname)";
    // SAFETY: the caller's contract.
    let name = unsafe {
        c_str(
            fname,
            what,
            "pass the file name the model was compiled with",
        )?
    };
    let Some(path) = sys::path_from_c(name.to_bytes()) else {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the constants file name (fname) {:?} is not valid UTF-8, which file names \
                 from C must be on this platform; pass the name as UTF-8",
                String::from_utf8_lossy(name.to_bytes())
            ),
        ));
    };
    Request::new(path.as_os_str(), size, is_le)
}

/// `p` as a UTF-8 string, or an error naming `what`.
///
/// # Safety
/// A non-NULL `p` must be a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    // SAFETY: the caller's contract.
    unsafe { c_str(p, what, "pass a NUL-terminated UTF-8 string")? }
        .to_str()
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{what} is not UTF-8; pass a NUL-terminated UTF-8 string"),
            )
        })
}

/// `p` as the cache it points at, or an error.
///
/// # Safety
/// A non-NULL `p` must come from `om_cache_open` and not be closed yet.
pub(crate) unsafe fn cache<'a>(p: *const Cache) -> Result<&'a Cache> {
    checked(p, "cache", "pass the handle om_cache_open returned")?;
    // SAFETY: non-NULL and aligned; valid by the caller's contract.
    Ok(unsafe { &*p })
}

/// `p`, where a result is to be written, if it is non-NULL and aligned for
/// a `T`, or an error naming `what`.
pub(crate) fn out<T>(p: *mut T, what: &str) -> Result<*mut T> {
    checked(p, what, "pass where to store the result").map(|p| p.cast_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_slot_refuses_null_and_misaligned() {
        let mut cells = [std::ptr::null_mut::<c_void>(); 2];
        let base = cells.as_mut_ptr();
        // SAFETY: every pointer given to as_slot is NULL, misaligned
        // (refused before any reference is made) or points into `cells`.
        unsafe {
            assert!(as_slot(std::ptr::null_mut()).is_none());
            for off in 1..8 {
                let p = base.cast::<u8>().wrapping_add(off).cast::<*mut c_void>();
                assert!(as_slot(p).is_none(), "offset {off}");
            }
            assert!(as_slot(base).is_some());
            assert!(as_slot(base.add(1)).is_some());
        }
        // The highest addresses: refused when misaligned, accepted when
        // aligned (only checked, never made a reference: nothing is there,
        // and a reference to nothing is undefined behaviour, as Miri says).
        assert!(!usable(std::ptr::without_provenance_mut(usize::MAX)));
        assert!(usable(std::ptr::without_provenance_mut(usize::MAX - 7)));
    }
}
