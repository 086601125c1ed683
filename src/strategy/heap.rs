//! The aligned heap buffer behind the `read` strategy.
//!
//! Page-aligned so constants at page-aligned offsets are page-aligned in
//! memory (what compilers assume for vector loads); 2 MiB-aligned with
//! `MADV_HUGEPAGE` from 2 MiB up, so filling it faults in huge pages (fewer
//! faults while loading, a faster free). The pages come from the kernel
//! and go back to it on drop (`sys::alloc`: not malloc, whose arenas keep
//! freed blocks resident). Allocation failure is an error, never an abort.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::sys::{self, HUGE_PAGE};

/// The system's page size.
pub(crate) fn page_size() -> usize {
    sys::page_size()
}

/// An owned, aligned, uninitialised heap allocation of `len` bytes.
pub(crate) struct HeapBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: HeapBuf owns its allocation exclusively (like Box<[u8]>); the raw
// pointer is only an address, with no thread affinity.
unsafe impl Send for HeapBuf {}
// SAFETY: shared access only hands out the address; writes happen through
// the owner while filling, before the buffer is shared.
unsafe impl Sync for HeapBuf {}

impl HeapBuf {
    /// Allocates `len` (> 0) bytes; `None` if the allocator refuses.
    /// With `huge`, buffers of 2 MiB and more are 2 MiB-aligned and advised
    /// for transparent huge pages.
    pub(crate) fn alloc(len: usize, huge: bool) -> Option<HeapBuf> {
        let huge = huge && len >= HUGE_PAGE;
        let align = if huge { HUGE_PAGE } else { page_size() };
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        let ptr = sys::alloc(layout)?;
        if huge {
            sys::advise_huge_pages(ptr.as_ptr(), len);
        }
        Some(HeapBuf { ptr, layout })
    }

    /// The start of the allocation.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by sys::alloc with exactly this layout
        // and is freed only here, once.
        unsafe { sys::dealloc(self.ptr, self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_follows_size() {
        let small = HeapBuf::alloc(100, true).unwrap();
        assert_eq!(small.as_ptr() as usize % page_size(), 0);
        assert_eq!(small.len(), 100);
        let big = HeapBuf::alloc(HUGE_PAGE + 1, true).unwrap();
        assert_eq!(big.as_ptr() as usize % HUGE_PAGE, 0);
        let plain = HeapBuf::alloc(HUGE_PAGE + 1, false).unwrap();
        assert_eq!(plain.as_ptr() as usize % page_size(), 0);
    }

    #[test]
    fn absurd_size_is_refused_not_aborted() {
        assert!(HeapBuf::alloc(usize::MAX - 4096, true).is_none());
    }
}
