//! The mapping strategies: `chunked-mmap`, zero copy above a per-mapping
//! size limit, and `mmap`, the same with one piece (`strategy::load`).
//!
//! Zero copy: pages fault in from the page cache on first touch and are
//! shared with every other process mapping the same file. The hazard, which
//! docs/SEMANTICS.md states: truncating the file in place while it is mapped
//! makes reads past the new end raise SIGBUS; replace files by rename.
//!
//! z/OS refuses single mappings above about 1 GiB. We reserve one
//! contiguous address range (`PROT_NONE`, `MAP_NORESERVE`: address space
//! only, no memory), then map the file into it piece by piece, each piece
//! no larger than the limit, with `MAP_FIXED` at its place. The model sees
//! one contiguous buffer, as with `mmap`.
//!
//! (`sys::MapRange` says why `MAP_FIXED` and not `MAP_FIXED_NOREPLACE`.)
//!
//! On Windows the file is mapped as one view, one piece
//! (`sys::ONE_PIECE_ONLY`; docs/PLATFORMS.md).

use crate::error::{Error, Result};
use crate::source::Source;
use crate::sys::{self, MapRange};

/// Piece size when `chunked-mmap` is forced and no limit is configured:
/// z/OS's limit, the reason this strategy exists.
pub(crate) const DEFAULT_PIECE: u64 = 1 << 30;

/// The file mapped into one contiguous range, in one piece (`mmap`) or
/// several (`chunked-mmap`); unmapped on drop.
pub(crate) struct Mapping {
    range: MapRange,
    len: usize,
    #[cfg_attr(not(test), allow(dead_code))] // read by tests only
    pieces: usize,
}

impl Mapping {
    /// The start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.range.as_ptr()
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many pieces were mapped.
    #[cfg(test)]
    pub(crate) fn pieces(&self) -> usize {
        self.pieces
    }
}

/// Maps the first `len` bytes of `source` in pieces of at most `piece`
/// bytes (rounded down to whole pages; one piece for the `mmap` strategy,
/// and on Windows, `sys::ONE_PIECE_ONLY`). With `huge`, the range starts on a
/// 2 MiB boundary (pieces are then whole 2 MiB multiples) and is advised
/// `MADV_HUGEPAGE` before anything faults in: the kernel maps a file's
/// 2 MiB folios with 2 MiB entries only there (`huge.rs`). `populate` is
/// applied by the caller, after that advice.
pub(super) fn map(
    source: &Source,
    len: usize,
    piece: u64,
    huge: bool,
    what: &str,
) -> Result<Mapping> {
    let fail = |e: &std::io::Error| Error::io(what, &source.fname, &source.path, e);
    let page = super::heap::page_size();
    // Pieces smaller than a huge page (a tiny OM_CONSTANT_MMAP_LIMIT, in
    // tests) keep their size: no alignment then.
    let huge = huge && piece >= sys::HUGE_PAGE as u64;
    let unit = if huge { sys::HUGE_PAGE.max(page) } else { page };
    let piece = if sys::ONE_PIECE_ONLY {
        len
    } else {
        (usize::try_from(piece).unwrap_or(usize::MAX) / unit).max(1) * unit
    };
    // From here on, dropping `out` releases everything mapped so far.
    let mut out = Mapping {
        range: MapRange::new(len, unit).map_err(|e| fail(&e))?,
        len,
        pieces: 0,
    };
    let mut offset = 0usize;
    while offset < len {
        let this = piece.min(len - offset);
        sys::map_piece(&out.range, &source.file, offset, this).map_err(|e| fail(&e))?;
        out.pieces += 1;
        offset += this;
    }
    if huge {
        sys::advise_huge_pages(out.as_ptr(), len);
    }
    Ok(out)
}
