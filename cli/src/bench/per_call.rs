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
//! both see the same machine; a sample is each one's best loop.
//!
//! The bench takes one sample per run, between the runs of the other
//! methods, and reports the best and the median of them. On a shared host a
//! busy spell lasts seconds, and in some of them every function longer than
//! a bare check costs 1.1-1.4x more per call (measured with ten variants of
//! the checks, and with no-op padding: it is not the checks themselves), so
//! samples taken in one go would show one spell, not the machine.

use std::ffi::CString;
use std::hint::black_box;
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use om_constants::ffi;

use crate::HOST_IS_LE;

/// Calls per timed loop.
const CALLS: u64 = 2_000_000;
/// Timed loops per function, thread and sample.
const LOOPS: usize = 16;
/// Samples taken at least, even in a bench of fewer runs.
pub(super) const MIN_SAMPLES: usize = 3;

/// ns per call of both functions with 1 and 2 threads, averaged over the
/// threads.
#[derive(Clone, Copy, Debug)]
pub(super) struct Figures {
    /// `om_mmap_binary_file` with 1 and 2 threads.
    pub ours: (f64, f64),
    /// onnx-mlir's check with 1 and 2 threads.
    pub onnx_mlir: (f64, f64),
}

/// The fast-path figures over every sample of a bench.
#[derive(Clone, Copy, Debug)]
pub(super) struct FastPath {
    /// Each figure's best sample.
    pub best: Figures,
    /// Each figure's median sample.
    pub median: Figures,
    /// How many samples were taken.
    pub samples: usize,
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

/// A slot loaded through the C ABI, to take fast-path samples on between
/// the bench's other runs. Dropping it releases the slot; `finish` does the
/// same and reports a failed release.
pub(super) struct Timer {
    /// Boxed: the slot must not move while it is loaded.
    slot: Box<AtomicPtr<c_void>>,
    fname: CString,
    size: i64,
    samples: Vec<Figures>,
}

impl Timer {
    /// Loads `path` (`size` bytes) into a new slot with
    /// `om_mmap_binary_file`, as a model's first inference does.
    pub(super) fn load(path: &Path, size: usize) -> Result<Timer, String> {
        let fname = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let size = i64::try_from(size).map_err(|e| e.to_string())?;
        let slot = Box::new(AtomicPtr::new(std::ptr::null_mut()));
        // SAFETY: the slot is boxed and outlives its buffer (released in
        // finish or drop); fname is NUL-terminated.
        if !unsafe { ffi::om_mmap_binary_file(slot.as_ptr(), fname.as_ptr(), size, HOST_IS_LE) } {
            return Err(format!(
                "fast path: initial load of {} failed: {}",
                path.display(),
                om_constants::error::last_error().unwrap_or_default()
            ));
        }
        Ok(Timer {
            slot,
            fname,
            size,
            samples: Vec::new(),
        })
    }

    /// Takes one sample: both functions timed on the loaded slot with 1 and
    /// then 2 threads.
    pub(super) fn sample(&mut self) -> Result<(), String> {
        let call = Call {
            slot: self.slot.as_ptr() as usize,
            fname: self.fname.as_ptr() as usize,
            size: self.size,
        };
        let one = per_thread(call, 1)?;
        let two = per_thread(call, 2)?;
        self.samples.push(Figures {
            ours: (one.0, two.0),
            onnx_mlir: (one.1, two.1),
        });
        Ok(())
    }

    /// Releases the slot and returns the best and median of the samples
    /// (at least one must have been taken).
    pub(super) fn finish(mut self) -> Result<FastPath, String> {
        let out = summarize(&self.samples).ok_or("fast path: no sample was taken")?;
        self.release()?;
        Ok(out)
    }

    fn release(&mut self) -> Result<(), String> {
        if self.slot.load(Ordering::Acquire).is_null() {
            return Ok(());
        }
        // SAFETY: the slot holds the one reference taken in `load`.
        if !unsafe { ffi::om_free_constant_buffer(self.slot.as_ptr()) } {
            return Err(format!(
                "fast path: releasing {} failed: {}",
                self.fname.to_string_lossy(),
                om_constants::error::last_error().unwrap_or_default()
            ));
        }
        Ok(())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Only when the bench stops early on another error, which is the
        // one it reports; `finish` reports a failed release.
        let _ = self.release();
    }
}

/// Each figure's best and median over `samples`, or None if there are none.
fn summarize(samples: &[Figures]) -> Option<FastPath> {
    let pick = |get: fn(&Figures) -> f64, median: bool| {
        let mut v: Vec<f64> = samples.iter().map(get).collect();
        v.sort_by(f64::total_cmp);
        if median {
            v[v.len() / 2]
        } else {
            v[0]
        }
    };
    let figures = |median: bool| Figures {
        ours: (pick(|f| f.ours.0, median), pick(|f| f.ours.1, median)),
        onnx_mlir: (
            pick(|f| f.onnx_mlir.0, median),
            pick(|f| f.onnx_mlir.1, median),
        ),
    };
    (!samples.is_empty()).then(|| FastPath {
        best: figures(false),
        median: figures(true),
        samples: samples.len(),
    })
}

/// The arguments of every timed call, as addresses so threads can share
/// them (the slot and the name outlive every thread: they belong to the `Timer`).
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
        // SAFETY: the slot and the name belong to the `Timer`, which
        // outlives every thread; the slot is loaded: this is the fast path.
        ok += u64::from(unsafe { f(slot, fname, size, HOST_IS_LE) });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(x: f64) -> Figures {
        Figures {
            ours: (x, x + 0.5),
            onnx_mlir: (x - 0.25, 10.0 - x),
        }
    }

    #[test]
    fn summarize_takes_each_figures_best_and_median() {
        assert!(summarize(&[]).is_none());
        let s = summarize(&[figures(3.0), figures(1.0), figures(2.0)]).unwrap();
        assert_eq!(s.samples, 3);
        assert_eq!(s.best.ours, (1.0, 1.5));
        // Each figure on its own: the best onnx-mlir 2-thread figure comes
        // from the sample with the worst 1-thread figures.
        assert_eq!(s.best.onnx_mlir, (0.75, 7.0));
        assert_eq!(s.median.ours, (2.0, 2.5));
        assert_eq!(s.median.onnx_mlir, (1.75, 8.0));
    }

    #[test]
    fn timer_load_of_a_missing_file_says_which_and_why() {
        crate::quiet_library_log();
        let path =
            std::env::temp_dir().join(format!("om-fast-path-missing-{}", std::process::id()));
        let e = Timer::load(&path, 8192)
            .err()
            .expect("a missing file is an error");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("No such file"), "the library's reason: {e}");
    }

    #[test]
    fn timer_samples_a_loaded_slot_and_releases_it() {
        crate::quiet_library_log();
        let dir = std::env::temp_dir().join(format!("om-fast-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.constants.bin");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let live = || om_constants::global().stats().live_buffers;
        let before = live();
        let mut t = Timer::load(&path, 8192).unwrap();
        assert!(!t.slot.load(Ordering::Acquire).is_null());
        assert_eq!(live(), before + 1);
        t.sample().unwrap();
        t.sample().unwrap();
        let s = t.finish().unwrap();
        assert_eq!(s.samples, 2);
        assert!(s.best.ours.0 > 0.0 && s.best.onnx_mlir.1 > 0.0, "{s:?}");
        assert!(s.best.ours.0 <= s.median.ours.0, "{s:?}");
        assert_eq!(live(), before, "finish released the slot");
        // A timer dropped without finish (the bench stopping on another
        // error) releases its slot too.
        drop(Timer::load(&path, 8192).unwrap());
        assert_eq!(live(), before, "drop released the slot");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
