//! The per-inference calls: `om_mmap_binary_file` (ensure loaded) and
//! `om_get_external_constant_addr`, and their onnx-mlir names. Legacy
//! models call them on every inference, so on a loaded slot (a set address)
//! each is one acquire load and one branch, with no frame to set up; the
//! rest is a cold slow path reached by a tail jump. The measured rationale
//! for each detail is beside it.

use std::os::raw::{c_char, c_void};
use std::sync::atomic::{AtomicPtr as StdAtomicPtr, Ordering};

use super::args::{request, slot_ref, usable};
use super::call;
use crate::global::global;
use crate::registry::{classify, SlotState};

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
/// (`scripts/bench-fast-path.sh`). The fast paths use std's atomics, never
/// `crate::sync`'s: they read the caller's memory, which is never a
/// modelled cell.
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

/// Ensure loaded (onnx-mlir's per-inference call): if the slot already holds
/// a buffer, returns true at once without changing any count (one atomic
/// load: no lock, no shared write, and the last error is left as it was);
/// otherwise loads the file exactly as
/// `om_load_constants_from_file` does, and the slot holds that one reference
/// (released only by an explicit `om_free_constant_buffer`).
///
/// Ownership: on a slot that was already loaded, this call takes no
/// reference: the buffer lives as long as the references already on the
/// slot. A host that mixes this call with acquire and release on one slot
/// uses the buffer only while it holds an acquire of its own.
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
    if matches!(classify(unsafe { peek(const_addr) }), SlotState::Holds(_)) {
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
                let p = base.cast::<u8>().wrapping_add(off).cast::<*mut c_void>();
                assert!(peek(p).is_null(), "offset {off}");
            }
        }
        assert!(NEVER_SET.load(Ordering::Relaxed).is_null());
    }
}
