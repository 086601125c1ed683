//! `om-constants load`: load a user's file through the C ABI, from N threads
//! at once, sum it once, release every reference, and report.

use std::ffi::CString;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use om_constants::{ffi, Choice, Config, Stats};

use crate::HOST_IS_LE;

/// `om-constants load`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The constants file (found as the library finds a relative name).
    pub file: String,
    /// Bytes the "model" expects (default: the file's length).
    #[arg(long, value_name = "BYTES", value_parser = crate::parse_size)]
    pub size: Option<u64>,
    /// The strategy (sets OM_CONSTANT_LOAD for this run).
    #[arg(long, value_name = "auto|mmap|read|chunked-mmap")]
    pub strategy: Option<String>,
    /// Threads that acquire the slot at once.
    #[arg(long, value_name = "N", default_value = "1", value_parser = crate::parse_count)]
    pub threads: usize,
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    let file = args.file.as_str();
    if let Some(s) = &args.strategy {
        if Choice::parse(s).is_none() {
            return Err(format!("--strategy {s}: expected {}", Choice::EXPECTED));
        }
        // Options are read on the library's first call, which is below;
        // no other thread runs yet, so setting the variable is race-free.
        std::env::set_var("OM_CONSTANT_LOAD", s);
    }
    let size = match args.size {
        Some(s) => s,
        None => file_size(file)?,
    };
    let size = i64::try_from(size).map_err(|_| "--size is too large".to_string())?;
    let threads = args.threads;
    let fname = CString::new(file).map_err(|_| "FILE contains a NUL byte".to_string())?;

    // The model's global `void *`, shared by the threads as a model's is.
    let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
    let slot_addr = slot.as_ptr() as usize;
    let start = Instant::now();
    let load_one = || {
        // SAFETY: slot_addr is `slot`, alive for this function; fname is
        // NUL-terminated.
        let ok = unsafe {
            ffi::om_load_constants_from_file(
                slot_addr as *mut *mut c_void,
                fname.as_ptr(),
                size,
                HOST_IS_LE,
            )
        };
        ok.then_some(()).ok_or_else(last_error)
    };
    // One load runs on this thread: a host under RLIMIT_NPROC may have no
    // other to start.
    let results: Vec<Result<(), String>> = if threads == 1 {
        vec![load_one()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(load_one)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                .collect()
        })
    };
    let load_time = start.elapsed();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("load failed: {e}"));
    }
    let base = slot.load(Ordering::Acquire) as *const u8;
    let pass = Instant::now();
    // SAFETY: the library published `size` readable bytes at `base` and we
    // hold `threads` references on them until the releases below.
    let sum = unsafe { crate::pass::sum(base, size as usize) };
    let pass_time = pass.elapsed();
    // The library's 2 MiB-page helper works after the load returns: its
    // outcome, and the share it left, once it is done.
    let pages = om_constants::global().page_report(base.cast(), Duration::from_secs(600));
    let loaded = stats();
    let free = Instant::now();
    for _ in 0..threads {
        // SAFETY: same slot address as above, still alive.
        if !unsafe { ffi::om_free_constant_buffer(slot_addr as *mut *mut c_void) } {
            return Err(format!("release failed: {}", last_error()));
        }
    }
    let free_time = free.elapsed();
    let after = stats();
    let strategy = [
        (loaded.mmap.loads, "mmap"),
        (loaded.read.loads, "read"),
        (loaded.chunked_mmap.loads, "chunked-mmap"),
    ]
    .iter()
    .find(|(n, _)| *n > 0)
    .map_or("?", |(_, s)| *s);
    println!(
        "{file}: strategy={strategy} threads={threads} size={size} load_ms={:.3} pass_ms={:.3} \
         free_ms={:.3} loads={} waits={} bytes_read={} bytes_mapped={} sum={sum} \
         huge_pages={:.1}% live_after_release={} peak_rss_bytes={}",
        load_time.as_secs_f64() * 1e3,
        pass_time.as_secs_f64() * 1e3,
        free_time.as_secs_f64() * 1e3,
        loaded.loads,
        loaded.waits,
        loaded.bytes_read,
        loaded.bytes_mapped,
        // After the pass: every page of the buffer has been touched.
        100.0 * loaded.huge_page_bytes as f64 / (size as f64).max(1.0),
        after.live_buffers,
        peak_rss().unwrap_or(0)
    );
    if let Some(note) = pages.and_then(|p| p.note) {
        if loaded.huge_page_bytes * 10 < size as u64 * 9 {
            println!("  2 MiB pages: {note}");
        }
    }
    if loaded.loads != 1 || after.live_buffers != 0 {
        return Err("expected exactly one load and nothing left after release".into());
    }
    Ok(())
}

/// The length of the file the library would load for `file`, found the way
/// the library finds it, so that a missing file gets the library's full
/// message (every place tried, and the fix).
fn file_size(file: &str) -> Result<u64, String> {
    let (config, _) = Config::from_lookup(|name| std::env::var_os(name));
    let dir = config.search_path.current();
    let path = om_constants::locate::locate(std::path::Path::new(file), dir.as_ref(), 0)
        .map_err(|e| e.to_string())?
        .path;
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
        .len();
    if len == 0 {
        return Err(format!(
            "{} is empty (0 bytes): a constants file holds the model's weights; pass the \
             file the model was compiled with, or its size with --size",
            path.display()
        ));
    }
    Ok(len)
}

fn stats() -> Stats {
    let mut s = Stats::default();
    // SAFETY: `s` is a valid, writable Stats.
    unsafe { ffi::om_constants_stats(&mut s) };
    s
}

fn last_error() -> String {
    om_constants::error::last_error().unwrap_or_else(|| "unknown error".into())
}

/// The process's peak resident set (VmHWM), in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
