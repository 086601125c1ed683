//! The `mmap` strategy: a read-only mapping of the whole file.
//!
//! Zero copy: pages fault in from the page cache on first touch and are
//! shared with every other process mapping the same file. On Unix it is
//! `chunked-mmap`'s mapping with one piece, so that it can start on a 2 MiB
//! boundary and be advised before its first fault (`huge.rs`); on Windows,
//! memmap2's view. The hazard, which the README states: truncating the file
//! in place while it is mapped makes reads past the new end raise SIGBUS;
//! replace files by rename instead.

use super::chunked::{self, Chunked};
use crate::error::Result;
use crate::source::Source;

/// Maps the first `len` bytes of `source` read-only, 2 MiB-aligned and
/// advised for huge pages when `huge` (Unix).
pub fn map(source: &Source, len: usize, huge: bool) -> Result<Chunked> {
    chunked::map(source, len, u64::MAX, huge, "map (mmap)")
}
