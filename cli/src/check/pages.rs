//! The check's "2 MiB pages" line: how the constants file's page cache
//! would back a mapping now, and why not in 2 MiB pages (docs/WEIGHTS-SPEED.md).
//! The file is loaded once with the deployer's options, as a host would,
//! and nothing of it is read that is not already in memory.

use std::path::Path;
use std::sync::atomic::AtomicPtr;
use std::time::Duration;

use om_constants::config::SearchPath;
use om_constants::{Choice, Config, Registry, Request, Strategy};

use crate::HOST_IS_LE;

/// The line, for a file of `size` bytes at `path` loaded by `strategy`.
pub(super) fn line(path: &Path, size: u64, strategy: Strategy) -> String {
    let (config, _) = Config::from_lookup(|n| std::env::var_os(n));
    if !cfg!(target_os = "linux") {
        return "small pages (this OS maps files in small pages)".into();
    }
    if !config.huge_pages.wanted() {
        return "small pages (OM_CONSTANT_HUGE_PAGES=off)".into();
    }
    if size < 2 << 20 {
        return "none: the file is smaller than one 2 MiB page".into();
    }
    if strategy == Strategy::Read {
        return "a heap copy in 2 MiB pages (read, not mapped)".into();
    }
    let reg = Registry::new(Config {
        strategy: Choice::Mmap,
        search_path: SearchPath::Fixed(None),
        log: om_constants::log::Level::Off,
        ..config
    });
    let slot = AtomicPtr::new(std::ptr::null_mut());
    let Ok(req) = Request::new(path.as_os_str(), size as i64, HOST_IS_LE) else {
        return "unknown (the size does not fit)".into();
    };
    let p = match reg.acquire(&slot, &req) {
        Ok(p) => p,
        Err(e) => return format!("unknown ({e})"),
    };
    let report = reg.page_report(p, Duration::from_secs(600));
    let cached = cached_bytes(p.cast(), size as usize);
    let _ = reg.release(&slot);
    let Some(r) = report else {
        return "unknown".into();
    };
    if cached == 0 {
        return "none of it is in the page cache: a mapping reads it in 2 MiB pages as it \
                faults in (on a file system with large folios)"
            .into();
    }
    let share = 100.0 * r.huge_page_bytes as f64 / cached as f64;
    let mut s = format!(
        "{share:.0}% of the {} MiB of it in the page cache",
        cached >> 20
    );
    if let Some(n) = r.note {
        s.push_str(": ");
        s.push_str(&n);
    }
    s
}

/// Bytes of the mapping `[p, p+len)` whose data is in memory (`mincore`).
#[cfg(unix)]
fn cached_bytes(p: *const u8, len: usize) -> u64 {
    let page = 4096usize.max(om_constants_page());
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `p` is the page-aligned start of a live mapping of `len`
    // bytes (held by the caller's slot); one byte per page is written.
    let rc = unsafe { libc::mincore(p as *mut libc::c_void, len, vec.as_mut_ptr().cast()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page as u64
}

#[cfg(not(unix))]
fn cached_bytes(_p: *const u8, _len: usize) -> u64 {
    0
}

#[cfg(unix)]
fn om_constants_page() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}
