//! The fallback for the calls only Linux has (`linux.rs`), on every other
//! OS (Windows, macOS, the BSDs): the same signatures, each giving the
//! answer the library works without. Nothing here calls the system.

use std::fs::File;
use std::io;
use std::path::Path;

use super::os;
use super::{extend, touch_pages, Access, Volume};

fn unsupported() -> io::Error {
    io::Error::from(io::ErrorKind::Unsupported)
}

/// No transparent huge pages to ask for (Windows' large pages need a
/// privilege and `VirtualAlloc(MEM_LARGE_PAGES)`): nothing to do.
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    let _ = (ptr, len);
}

/// Maps every page of `[ptr, ptr+len)` now by reading one byte per page.
/// (Windows refuses to shrink a file while a view of it exists, so there
/// the pages are always there.)
pub(crate) fn populate(ptr: *mut u8, len: usize) -> io::Result<()> {
    touch_pages(ptr, len, os::page_size());
    Ok(())
}

/// Refused: no direct I/O that takes unaligned buffers (Windows'
/// `FILE_FLAG_NO_BUFFERING` needs sector-aligned reads into sector-aligned
/// memory). `read` then reads buffered, as on a file system that refuses
/// `O_DIRECT`.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    let _ = path;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "direct I/O is used on Linux only",
    ))
}

/// True if `e` is the refusal of direct I/O by [`open_direct`].
pub(crate) fn refuses_direct_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

/// No read-ahead hint for an open file (Windows' hint,
/// `FILE_FLAG_SEQUENTIAL_SCAN`, is given at open): nothing to do.
pub(crate) fn advise_file(file: &File, offset: usize, len: usize, access: Access) {
    let _ = (file, offset, len, access);
}

/// Makes `[offset, offset+len)` of `file` part of the file. NTFS allocates
/// the blocks of a file extended by `SetEndOfFile` (it is not sparse
/// unless marked so), so a full disk is an error here, not at write.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    extend(file, offset + len)
}

/// No transparent huge page setting to read.
pub(crate) fn thp_mode() -> Option<String> {
    None
}

/// Cannot tell (and file views are never in large pages).
pub(crate) fn huge_backed_bytes(ptr: *const u8, len: usize) -> io::Result<u64> {
    let _ = (ptr, len);
    Err(unsupported())
}

/// Not asked: file views are never in large pages.
pub(crate) fn resident_map(ptr: *const u8, len: usize) -> io::Result<Vec<u8>> {
    let _ = (ptr, len);
    Err(unsupported())
}

/// Not asked: file views are never in large pages.
pub(crate) fn cached_pages(file: &File, len: u64) -> Option<u64> {
    let _ = (file, len);
    None
}

/// No huge pages to rebuild a mapping in.
pub(crate) fn collapse(ptr: *mut u8, len: usize) -> io::Result<()> {
    let _ = (ptr, len);
    Err(unsupported())
}

/// Not asked: file views are never in large pages.
pub(crate) fn write_back_range(file: &File, offset: u64, len: usize) -> io::Result<()> {
    let _ = (file, offset, len);
    Err(unsupported())
}

/// Not asked: file views are never in large pages.
pub(crate) fn evict_range(file: &File, ptr: *mut u8, offset: u64, len: usize) -> io::Result<()> {
    let _ = (file, ptr, offset, len);
    Err(unsupported())
}

/// Not told apart: every volume counts as local.
pub(crate) fn volume_of(file: &File) -> Volume {
    let _ = file;
    Volume::Local
}
