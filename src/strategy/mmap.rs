//! The `mmap` strategy: a read-only, private mapping of the file.
//!
//! Zero copy: pages fault in from the page cache on first touch and are
//! shared with every other process mapping the same file. The hazard, which
//! the README states: truncating the file in place while it is mapped makes
//! reads past the new end raise SIGBUS; replace files by rename instead.

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::source::Source;

/// Maps the first `len` bytes of `source` read-only; with `populate`, the
/// kernel maps every page before returning (`MAP_POPULATE`).
pub fn map(source: &Source, len: usize, populate: bool, faults: &Faults) -> Result<Mmap> {
    if let Some(e) = faults.mmap_error(1) {
        return Err(Error::io("map (mmap)", &source.fname, &source.path, &e));
    }
    let mut options = MmapOptions::new();
    options.len(len);
    if populate {
        options.populate();
    }
    // SAFETY: memmap2 marks mapping unsafe because the file can change
    // under the mapping. We map read-only, `len` is within the file's checked
    // length, and the remaining hazard (in-place truncation) is the caller's
    // duty, documented in the README; the mapping outlives the `File`.
    unsafe { options.map(&source.file) }
        .map_err(|e| Error::io("map (mmap)", &source.fname, &source.path, &e))
}
