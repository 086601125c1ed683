//! The baselines the bench measures in the same run, written directly on
//! libc, independent of the library's strategy code:
//! - plain `mmap` of the file, then the pass;
//! - what onnx-mlir does on z/OS today: one thread `read()`s the file in
//!   1 GiB chunks into a fresh `posix_memalign` buffer;
//! - the best raw `pread` we can do: N threads into a fresh 2 MiB-aligned
//!   buffer advised for huge pages.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::pass::sum;

/// One measured load + pass + free.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timing {
    pub load: Duration,
    pub pass: Duration,
    pub free: Duration,
    /// The pass's result, to check every method saw the same bytes.
    pub sum: u64,
}

impl Timing {
    pub(crate) fn total(&self) -> Duration {
        self.load + self.pass + self.free
    }
}

const CHUNK: usize = 1 << 30;
const HUGE: usize = 2 << 20;

/// Plain mmap + pass + munmap.
pub(crate) fn mmap_pass(path: &Path, size: usize) -> io::Result<Timing> {
    let f = File::open(path)?;
    let t0 = Instant::now();
    // SAFETY: a fresh read-only private mapping of `size` bytes of an open
    // file at least that long; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let t1 = Instant::now();
    // SAFETY: the mapping holds `size` readable bytes until munmap.
    let s = unsafe { sum(p.cast(), size) };
    let t2 = Instant::now();
    // SAFETY: unmapping the mapping made above, once.
    unsafe { libc::munmap(p, size) };
    Ok(Timing {
        load: t1 - t0,
        pass: t2 - t1,
        free: t2.elapsed(),
        sum: s,
    })
}

/// Times the pass over a filled heap buffer and its `free`; `t0` is when
/// the load started.
///
/// # Safety
/// `p` must come from posix_memalign, hold `size` initialised bytes, and
/// not be used after this call.
unsafe fn pass_and_free(t0: Instant, p: *mut libc::c_void, size: usize) -> Timing {
    let t1 = Instant::now();
    // SAFETY: the buffer holds `size` initialised bytes.
    let s = unsafe { sum(p.cast(), size) };
    let t2 = Instant::now();
    // SAFETY: freeing the caller's allocation, once.
    unsafe { libc::free(p) };
    Timing {
        load: t1 - t0,
        pass: t2 - t1,
        free: t2.elapsed(),
        sum: s,
    }
}

/// onnx-mlir's z/OS method: posix_memalign(4096), one thread, read() in
/// 1 GiB chunks, then the pass and free().
pub(crate) fn read_single(path: &Path, size: usize) -> io::Result<Timing> {
    let f = File::open(path)?;
    let t0 = Instant::now();
    let mut p: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes a fresh allocation into `p` on success.
    if unsafe { libc::posix_memalign(&mut p, 4096, size) } != 0 {
        return Err(io::Error::from(io::ErrorKind::OutOfMemory));
    }
    let mut done = 0;
    while done < size {
        let want = (size - done).min(CHUNK);
        // SAFETY: p+done .. p+done+want is inside the allocation.
        let n = unsafe { libc::read(f.as_raw_fd(), p.cast::<u8>().add(done).cast(), want) };
        if n <= 0 {
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // SAFETY: freeing the allocation made above, once.
            unsafe { libc::free(p) };
            return Err(if n == 0 {
                io::ErrorKind::UnexpectedEof.into()
            } else {
                e
            });
        }
        done += n as usize;
    }
    // SAFETY: the buffer was allocated with posix_memalign and filled.
    Ok(unsafe { pass_and_free(t0, p, size) })
}

/// `threads` threads pread 2 MiB-aligned ranges into a fresh 2 MiB-aligned
/// buffer advised MADV_HUGEPAGE, then the pass and free().
pub(crate) fn pread_parallel(path: &Path, size: usize, threads: usize) -> io::Result<Timing> {
    let f = File::open(path)?;
    let fd = f.as_raw_fd();
    let t0 = Instant::now();
    let mut p: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes a fresh allocation into `p` on success.
    if unsafe { libc::posix_memalign(&mut p, HUGE, size) } != 0 {
        return Err(io::Error::from(io::ErrorKind::OutOfMemory));
    }
    // SAFETY: advising our own fresh allocation; failure is harmless.
    unsafe { libc::madvise(p, size, libc::MADV_HUGEPAGE) };
    let per = size.div_ceil(threads).div_ceil(HUGE) * HUGE;
    let base = p as usize;
    let ok = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn(move || {
                    let (mut at, end) = ((i * per).min(size), ((i + 1) * per).min(size));
                    while at < end {
                        let want = (end - at).min(CHUNK);
                        // SAFETY: [at, at+want) is this thread's own range of
                        // the live allocation.
                        let n = unsafe {
                            libc::pread(fd, (base + at) as *mut _, want, at as libc::off_t)
                        };
                        if n <= 0 {
                            if n < 0
                                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                            {
                                continue;
                            }
                            return false;
                        }
                        at += n as usize;
                    }
                    true
                })
            })
            .collect();
        hs.into_iter().all(|h| h.join().unwrap_or(false))
    });
    if !ok {
        // SAFETY: freeing the allocation made above, once.
        unsafe { libc::free(p) };
        return Err(io::Error::other("pread failed"));
    }
    // SAFETY: the buffer was allocated with posix_memalign and filled.
    Ok(unsafe { pass_and_free(t0, p, size) })
}
