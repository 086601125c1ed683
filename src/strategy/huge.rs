//! Putting a mapping's weights in 2 MiB pages (docs/WEIGHTS-SPEED.md).
//!
//! Every inference reads the weights through the buffer, so how it is
//! backed matters for the life of the process: the same bytes in 4 KiB
//! pages cost 1.1–1.6x in sequential passes and gathers. The kernel maps a
//! file's page cache with 2 MiB entries only where the range is 2 MiB-aligned
//! (the mapping is: `chunked.rs`), advised `MADV_HUGEPAGE` before its first
//! fault (it is), and the file's page-cache folios are 2 MiB. A cold file
//! then faults in as 2 MiB folios. A warm one keeps the folios it has, and
//! those depend on how the file was last written: after writes in small
//! pieces (a compile, `cp`, a download) they are small. With
//! `OM_CONSTANT_HUGE_PAGES=reread` (the default) such a page cache is re-laid
//! once: `MADV_COLLAPSE` where the kernel can (no I/O), else written back and
//! evicted where no process maps it, so that the model's first touches read
//! it again through the aligned mapping in 2 MiB folios (one read of the
//! file, overlapped with the first pass as a cold load's is). Pages another
//! process maps are never evicted, so processes keep sharing one copy.

use std::time::Instant;

use crate::config::HugePages;
use crate::source::Source;
use crate::sys;

/// The share of a buffer in 2 MiB pages that counts as done: the tail of a
/// file that is not a multiple of 2 MiB, and little else, stays small.
const ENOUGH: f64 = 0.9;

/// Lays the page cache behind the fresh, unpublished mapping `[ptr,
/// ptr+len)` of `source` as `mode` says (the mapping was made aligned and
/// advised when `mode` wants huge pages). Returns a line for the `info` log:
/// what was done, or why the buffer is not in 2 MiB pages; `None` when
/// there is nothing to say.
pub(super) fn settle(source: &Source, ptr: *mut u8, len: usize, mode: HugePages) -> Option<String> {
    if !mode.wanted() || len < sys::HUGE_PAGE {
        return None;
    }
    let name = source.path.display();
    let Some(thp) = sys::thp_mode() else {
        return Some(format!(
            "{name} is mapped in small pages: this OS gives file mappings no huge pages"
        ));
    };
    if thp == "never" {
        return Some(format!(
            "{name} is mapped in small pages: transparent huge pages are off \
             (/sys/kernel/mm/transparent_hugepage/enabled is 'never'; 'madvise' or 'always' \
             allows them)"
        ));
    }
    // Nothing in the page cache: the faults to come read 2 MiB folios.
    let resident = sys::resident_pages(ptr, len).ok()?;
    if resident == 0 {
        return None;
    }
    // Map what is there (one fault per 2 MiB), then look at the backing.
    sys::touch_pages(ptr, len, sys::HUGE_PAGE);
    let before = share(ptr, len)?;
    if before >= ENOUGH {
        return None;
    }
    if mode != HugePages::Reread {
        return Some(format!(
            "{name}: {:.0}% in 2 MiB pages: its page cache is in small pages (as after it was \
             written in small pieces or copied); OM_CONSTANT_HUGE_PAGES=reread re-reads it once \
             in 2 MiB pages, or run `om-constants prepare {name}` before starting the workers",
            before * 100.0
        ));
    }
    let start = Instant::now();
    if sys::collapse(ptr, len).is_ok() && share(ptr, len)? >= ENOUGH {
        return Some(format!(
            "{name}: its page cache was in small pages ({:.0}% in 2 MiB pages); collapsed in \
             place (MADV_COLLAPSE) in {:.3} s",
            before * 100.0,
            start.elapsed().as_secs_f64()
        ));
    }
    if let Err(e) = sys::evict_page_cache(&source.file, ptr, len) {
        return Some(format!(
            "{name}: {:.0}% in 2 MiB pages; re-laying its page cache failed: {e}",
            before * 100.0
        ));
    }
    // What is still in the page cache could not be evicted: other
    // processes map it (or it is locked), and it keeps its small pages.
    let page = super::heap::page_size();
    let stayed = sys::resident_pages(ptr, len).ok()? * page;
    let took = start.elapsed().as_secs_f64();
    let mut note = format!(
        "{name}: its page cache was in small pages ({:.0}% in 2 MiB pages, as after it was \
         written in small pieces or copied); written back and evicted in {took:.3} s, so that \
         it is read again, once, in 2 MiB pages as the model first touches it (on a file \
         system with large folios: ext4, XFS)",
        before * 100.0
    );
    if stayed * 10 > len {
        note.push_str(&format!(
            "; {} MiB stayed in small pages: other processes map them, and pages others map \
             are never evicted",
            stayed >> 20
        ));
    }
    Some(note)
}

/// The share of `[ptr, ptr+len)` mapped with 2 MiB entries now.
fn share(ptr: *mut u8, len: usize) -> Option<f64> {
    let huge = sys::huge_backed_bytes(ptr, len).ok()?;
    Some(huge as f64 / len as f64)
}
