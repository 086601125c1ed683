//! The loaded fast path: ns per call of `om_mmap_binary_file` on a slot
//! that already holds its buffer, beside onnx-mlir's bare NULL check timed
//! in the same loops.
//!
//! The loop calls through an opaque function pointer with the slot, the
//! name and the size in registers, as a compiled model's inference code
//! calls through its PLT with constant arguments. Keeping them out of memory
//! matters: a loop that reloads the slot address from the stack each call
//! makes the slot's checks wait on store forwarding and measures that
//! instead of the function. The two functions alternate, loop by loop, so
//! both see the same machine; the figure is each one's best loop, which on
//! a shared machine filters out preemption and noisy neighbours.

use std::ffi::CString;
use std::hint::black_box;
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::sync::atomic::AtomicPtr;
use std::sync::Barrier;
use std::time::Instant;

use om_constants::ffi;

/// Calls per timed loop.
const CALLS: u64 = 2_000_000;
/// Timed loops per function and thread.
const LOOPS: usize = 40;

/// The fast-path figures, ns per call, averaged over the threads.
#[derive(Clone, Copy, Debug)]
pub struct FastPath {
    /// `om_mmap_binary_file` with 1 and 2 threads.
    pub ours: (f64, f64),
    /// onnx-mlir's check with 1 and 2 threads.
    pub onnx_mlir: (f64, f64),
}

/// What onnx-mlir's runtime does on a loaded slot (`if (constAddr[0] !=
/// NULL) return true;`), compiled the same way as ours.
#[inline(never)]
extern "C" fn onnx_mlir_check(
    const_addr: *mut *mut c_void,
    _fname: *const c_char,
    _size: i64,
    _is_le: i64,
) -> bool {
    // SAFETY: the bench passes a valid, loaded slot.
    !unsafe { std::ptr::read_volatile(const_addr) }.is_null()
}

type EnsureFn = unsafe extern "C" fn(*mut *mut c_void, *const c_char, i64, i64) -> bool;

/// Loads `path` into a slot once, then times both functions on it with 1
/// and then 2 threads.
pub fn measure(path: &Path, size: usize) -> Result<FastPath, String> {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let fname = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let size = i64::try_from(size).map_err(|e| e.to_string())?;
    // SAFETY: SLOT is a static slot; fname is NUL-terminated.
    if !unsafe { ffi::om_mmap_binary_file(SLOT.as_ptr(), fname.as_ptr(), size, 1) } {
        return Err(format!(
            "fast path: initial load of {} failed: {}",
            path.display(),
            om_constants::error::last_error().unwrap_or_default()
        ));
    }
    let call = Call {
        slot: SLOT.as_ptr() as usize,
        fname: fname.as_ptr() as usize,
        size,
    };
    let one = per_thread(call, 1)?;
    let two = per_thread(call, 2)?;
    let out = FastPath {
        ours: (one.0, two.0),
        onnx_mlir: (one.1, two.1),
    };
    // SAFETY: SLOT was loaded above and nothing else uses it.
    if !unsafe { ffi::om_free_constant_buffer(SLOT.as_ptr()) } {
        return Err(format!(
            "fast path: releasing {} failed: {}",
            path.display(),
            om_constants::error::last_error().unwrap_or_default()
        ));
    }
    Ok(out)
}

/// The arguments of every timed call, as addresses so threads can share
/// them (the slot and the name outlive every thread: see `measure`).
#[derive(Clone, Copy)]
struct Call {
    slot: usize,
    fname: usize,
    size: i64,
}

/// (ours, onnx-mlir's) ns per call, averaged over `threads` threads that
/// run at the same time.
fn per_thread(call: Call, threads: usize) -> Result<(f64, f64), String> {
    let start = Barrier::new(threads);
    let results: Vec<Result<(f64, f64), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let mut best = (f64::INFINITY, f64::INFINITY);
                    for _ in 0..LOOPS {
                        best.0 = best.0.min(time_loop(ffi::om_mmap_binary_file, call)?);
                        best.1 = best.1.min(time_loop(onnx_mlir_check, call)?);
                    }
                    Ok(best)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("fast path: a timing thread panicked".into()))
            })
            .collect()
    });
    let mut sum = (0.0, 0.0);
    for r in results {
        let (a, b) = r?;
        sum.0 += a;
        sum.1 += b;
    }
    Ok((sum.0 / threads as f64, sum.1 / threads as f64))
}

/// ns per call of one loop of `CALLS` calls of `f`; an error if any call
/// returned false (the slot is loaded, so every call must succeed).
fn time_loop(f: EnsureFn, call: Call) -> Result<f64, String> {
    // Opaque to the optimizer, so every call is made, yet kept in
    // registers across the loop.
    let f = black_box(f);
    let slot = black_box(call.slot) as *mut *mut c_void;
    let fname = black_box(call.fname) as *const c_char;
    let size = black_box(call.size);
    let t = Instant::now();
    let mut ok = 0u64;
    for _ in 0..CALLS {
        // SAFETY: the slot and the name outlive every thread (see
        // `measure`); the slot is loaded, so this is the fast path.
        ok += u64::from(unsafe { f(slot, fname, size, 1) });
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / CALLS as f64;
    if black_box(ok) != CALLS {
        return Err(format!(
            "fast path: {} of {CALLS} calls on a loaded slot returned false",
            CALLS - ok
        ));
    }
    Ok(ns)
}
