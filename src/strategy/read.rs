//! The `read` strategy: an aligned heap buffer filled with `pread`.
//!
//! Reads go in chunks of at most 1 GiB (z/OS and some kernels cap one
//! transfer), loop on short reads and `EINTR`, and treat a zero-byte read
//! before the end as an error: the file shrank after it was checked.

use std::io;
use std::os::unix::io::AsRawFd;

use super::heap::HeapBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::source::Source;

/// The largest single `pread`.
pub const CHUNK: usize = 1 << 30;

/// Allocates `len` bytes and fills them from the start of `source`.
pub fn read(source: &Source, len: usize) -> Result<HeapBuf> {
    let buf = HeapBuf::alloc(len).ok_or_else(|| {
        Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "cannot allocate {len} bytes for constants file '{}' ({}); free memory, \
                 or use OM_CONSTANT_LOAD=mmap so the file is mapped instead of copied",
                source.fname,
                source.path.display()
            ),
        )
    })?;
    // On error `buf` is dropped here, so nothing leaks.
    fill(source, buf.as_ptr(), len, 0)?;
    Ok(buf)
}

/// Reads exactly `len` bytes at file offset `offset` into `dst`.
///
/// `dst` must be valid for `len` bytes of writes and not read by anyone
/// until this returns.
fn fill(source: &Source, dst: *mut u8, len: usize, offset: u64) -> Result<()> {
    let fd = source.file.as_raw_fd();
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(CHUNK);
        let at = offset + done as u64;
        // SAFETY: dst+done .. dst+done+want lies inside the caller's buffer
        // (done + want <= len), which nobody else touches while we fill it;
        // fd is open for reading for the lifetime of `source`.
        let n = unsafe { libc::pread(fd, dst.add(done).cast(), want, at as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io(
                &format!("read (at byte {at})"),
                &source.fname,
                &source.path,
                &e,
            ));
        }
        if n == 0 {
            return Err(Error::new(
                ErrorKind::TooShort,
                format!(
                    "constants file '{}' at {} ended at byte {at} while reading {} bytes: \
                     it shrank after it was opened; do not rewrite the file in place \
                     while models load (replace it by rename)",
                    source.fname,
                    source.path.display(),
                    offset as usize + len
                ),
            ));
        }
        done += n as usize;
    }
    Ok(())
}
