//! The `chunked-mmap` strategy: zero copy above a per-mapping size limit.
//!
//! z/OS refuses single mappings above about 1 GiB. We reserve one
//! contiguous address range (`PROT_NONE`, `MAP_NORESERVE`: address space
//! only, no memory), then map the file into it piece by piece, each piece
//! no larger than the limit, with `MAP_FIXED` at its place. The model sees
//! one contiguous buffer, as with `mmap`.
//!
//! `MAP_FIXED`, not `MAP_FIXED_NOREPLACE`: NOREPLACE refuses to map over any
//! existing mapping, including our own reservation, so it would need the
//! reservation unmapped first, and another thread's `mmap` could take the
//! hole in between. `MAP_FIXED` over a range we reserved replaces our own
//! mapping atomically and can never clobber anyone else's.

use std::io;
use std::os::unix::io::AsRawFd;
use std::ptr::NonNull;

use super::heap::page_size;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::source::Source;

/// Piece size when `chunked-mmap` is forced and no limit is configured:
/// z/OS's limit, the reason this strategy exists.
pub const DEFAULT_PIECE: u64 = 1 << 30;

/// A reserved address range with the file mapped into it; unmapped on drop.
pub struct Chunked {
    ptr: NonNull<u8>,
    len: usize,
    reserved: usize,
    pieces: usize,
}

// SAFETY: Chunked owns its mapping exclusively; the address has no thread
// affinity and the mapping is read-only.
unsafe impl Send for Chunked {}
// SAFETY: shared access only reads the read-only mapping.
unsafe impl Sync for Chunked {}

impl Chunked {
    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (lengths are positive).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces were mapped.
    pub fn pieces(&self) -> usize {
        self.pieces
    }
}

impl Drop for Chunked {
    fn drop(&mut self) {
        // SAFETY: [ptr, ptr+reserved) is the range we reserved and mapped;
        // one munmap removes the reservation and every piece in it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.reserved);
        }
    }
}

/// Maps the first `len` bytes of `source` in pieces of at most `piece`
/// bytes (rounded down to whole pages).
pub fn map(
    source: &Source,
    len: usize,
    piece: u64,
    populate: bool,
    faults: &Faults,
) -> Result<Chunked> {
    let fail = |e: &io::Error| Error::io("map (chunked mmap)", &source.fname, &source.path, e);
    let page = page_size();
    let piece = (usize::try_from(piece).unwrap_or(usize::MAX) / page).max(1) * page;
    let reserved = len.div_ceil(page) * page;
    // SAFETY: an anonymous PROT_NONE reservation at an address the kernel
    // chooses; it touches no existing mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserved,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(fail(&io::Error::last_os_error()));
    }
    let ptr = NonNull::new(base.cast::<u8>()).ok_or_else(|| fail(&io::Error::other("null")))?;
    // From here on, dropping `out` releases everything mapped so far.
    let mut out = Chunked {
        ptr,
        len,
        reserved,
        pieces: 0,
    };
    let flags = libc::MAP_PRIVATE | libc::MAP_FIXED | if populate { libc::MAP_POPULATE } else { 0 };
    let mut offset = 0usize;
    while offset < len {
        let this = piece.min(len - offset);
        if let Some(e) = faults.mmap_error(out.pieces + 1) {
            return Err(fail(&e));
        }
        // SAFETY: [base+offset, base+offset+this) lies inside our own
        // reservation (offset + this <= len <= reserved), so MAP_FIXED
        // replaces only pages we own; offset is a multiple of the page size
        // as mmap requires, and the file is at least `len` bytes long.
        let at = unsafe {
            libc::mmap(
                out.ptr.as_ptr().add(offset).cast(),
                this,
                libc::PROT_READ,
                flags,
                source.file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(fail(&io::Error::last_os_error()));
        }
        out.pieces += 1;
        offset += this;
    }
    Ok(out)
}
