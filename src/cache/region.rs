//! One reserved entry of a cache being built: its memory, a range of the
//! temporary file or (where the folder cannot hold the file) the heap.

use std::io;

use memmap2::MmapRaw;

use crate::strategy::HeapBuf;
use crate::sys;

pub(super) struct Region {
    pub(super) name: String,
    pub(super) offset: u64,
    pub(super) size: usize,
    pub(super) memory: Backing,
}

pub(super) enum Backing {
    /// A shared mapping of a range of the temporary file: writable by the
    /// caller until commit makes it read-only. A raw mapping, because C
    /// code writes it while we hold it: no Rust reference to its bytes is
    /// made until it is read-only (see [`Region::frozen_bytes`]).
    File(MmapRaw),
    Heap(HeapBuf),
}

impl Region {
    pub(super) fn ptr(&self) -> *mut u8 {
        match &self.memory {
            Backing::File(m) => m.as_mut_ptr(),
            Backing::Heap(h) => h.as_ptr(),
        }
    }

    /// Makes a file region read-only: from now on a stray write by the
    /// caller faults instead of changing bytes under their checksum.
    pub(super) fn freeze(&self) -> io::Result<()> {
        match &self.memory {
            Backing::File(m) => sys::protect_read_only(m),
            Backing::Heap(_) => Ok(()),
        }
    }

    /// Syncs a file region's pages to its file.
    pub(super) fn sync(&self) -> io::Result<()> {
        match &self.memory {
            Backing::File(m) => m.flush(),
            Backing::Heap(_) => Ok(()),
        }
    }

    /// The bytes of a file region that [`freeze`](Self::freeze) made
    /// read-only; `None` for the heap, whose bytes C code may still write.
    pub(super) fn frozen_bytes(&self) -> Option<&[u8]> {
        let Backing::File(m) = &self.memory else {
            return None;
        };
        // SAFETY: the mapping holds `size` bytes for the region's lifetime,
        // and it was made read-only, so nothing writes them while the slice
        // lives (a write faults).
        Some(unsafe { std::slice::from_raw_parts(m.as_ptr(), self.size) })
    }
}
