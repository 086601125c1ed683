//! The `mmap` strategy: a read-only, private mapping of the file.
//!
//! Zero copy: pages fault in from the page cache on first touch and are
//! shared with every other process mapping the same file. The hazard, which
//! the README states: truncating the file in place while it is mapped makes
//! reads past the new end raise SIGBUS; replace files by rename instead.

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::source::Source;
use crate::sys;

/// Maps the first `len` bytes of `source` read-only; with `populate`, the
/// kernel maps every page before returning (`MAP_POPULATE`).
pub fn map(source: &Source, len: usize, populate: bool) -> Result<Mmap> {
    sys::map_file(&source.file, len, populate)
        .map_err(|e| Error::io("map (mmap)", &source.fname, &source.path, &e))
}
