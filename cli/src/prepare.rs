//! `om-constants prepare FILE...`: the deploy step between copying a model
//! and starting its workers. Lays each file's page cache in 2 MiB folios
//! once (the library's `OM_CONSTANT_HUGE_PAGES=reread` load, through the C
//! ABI), so that every process that maps it afterwards gets 2 MiB pages
//! without re-reading it (docs/WEIGHTS-SPEED.md).

use std::ffi::CString;
use std::os::raw::c_void;
use std::sync::atomic::AtomicPtr;
use std::time::Duration;

use om_constants::{ffi, Stats};

use crate::HOST_IS_LE;

/// `om-constants prepare`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The constants files (found as the library finds a relative name).
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Print JSON instead of text: `{"files": [{"file", "huge_page_share",
    /// "prepared", "note", "error"}]}`, one entry per file, in order.
    #[arg(long)]
    pub json: bool,
}

/// The share of a file that counts as prepared (its tail may be small).
const ENOUGH: f64 = 0.9;

pub(crate) fn run(args: Args) -> Result<(), String> {
    // Read on the library's first call, below; no other thread runs yet.
    std::env::set_var("OM_CONSTANT_HUGE_PAGES", "reread");
    std::env::set_var("OM_CONSTANT_LOAD", "mmap");
    if std::env::var_os("OM_CONSTANT_LOG").is_none_or(|v| v == "off") {
        // What was done to each file, and why not where it failed.
        std::env::set_var("OM_CONSTANT_LOG", "info");
    }
    let mut failed = Vec::new();
    let mut results = Vec::new();
    for file in &args.files {
        let outcome = prepare(file);
        let (share, note, error) = match &outcome {
            Ok((share, note)) => (Some(*share), note.clone(), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        let prepared = share.is_some_and(|s| s >= ENOUGH);
        if let Some(share) = share {
            if !args.json {
                println!("{file}: {:.1}% in 2 MiB pages", share * 100.0);
            }
            if !prepared {
                failed.push(format!(
                    "{file} is {:.1}% in 2 MiB pages: {}",
                    share * 100.0,
                    note.as_deref().unwrap_or("the log above says why")
                ));
            }
        }
        if let Some(e) = &error {
            failed.push(format!("{file}: {e}"));
        }
        results.push(serde_json::json!({
            "file": file,
            "huge_page_share": share,
            "prepared": prepared,
            "note": note,
            "error": error,
        }));
    }
    if args.json {
        println!("{}", serde_json::json!({ "files": results }));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Loads `file` once with `reread`, and returns the share of it in 2 MiB
/// pages, and what the library's helper said.
fn prepare(file: &str) -> Result<(f64, Option<String>), String> {
    let size = std::fs::metadata(file)
        .map_err(|e| format!("cannot inspect it: {e}"))?
        .len();
    if size == 0 {
        return Err("it is empty".into());
    }
    let len = i64::try_from(size).map_err(|_| "it is too large".to_string())?;
    let fname = CString::new(file).map_err(|_| "the name contains a NUL byte".to_string())?;
    let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
    // SAFETY: `slot` lives until the release below; `fname` is
    // NUL-terminated.
    if !unsafe { ffi::om_load_constants_from_file(slot.as_ptr(), fname.as_ptr(), len, HOST_IS_LE) }
    {
        return Err(last_error());
    }
    // The re-lay runs on the library's helper thread: wait for it. Then a
    // cold file (mapped, not read) is read now, one fault per 2 MiB, which
    // brings it into the page cache in 2 MiB folios.
    let base = slot.load(std::sync::atomic::Ordering::Acquire) as *const u8;
    let report = om_constants::global().page_report(base.cast(), Duration::from_secs(3600));
    for off in (0..size as usize).step_by(2 << 20) {
        // SAFETY: the library published `size` readable bytes at `base`,
        // held until the release below.
        unsafe { std::ptr::read_volatile(base.add(off)) };
    }
    let mut stats = Stats::default();
    // SAFETY: `stats` is a whole struct whose `size` is set (Default).
    unsafe { ffi::om_constants_stats(&mut stats) };
    // SAFETY: the slot holds the one reference taken above.
    if !unsafe { ffi::om_free_constant_buffer(slot.as_ptr()) } {
        return Err(last_error());
    }
    let note = report.and_then(|r| r.note);
    Ok((stats.huge_page_bytes as f64 / size as f64, note))
}

fn last_error() -> String {
    om_constants::error::last_error().unwrap_or_else(|| "unknown error".into())
}
