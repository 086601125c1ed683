//! `om-constants`: load a constants file through the C ABI and report what
//! happened.
//!
//! ```text
//! om-constants demo [--size BYTES] [--dir DIR]
//! om-constants load FILE --size BYTES [--strategy auto|mmap|read] [--threads N]
//! ```
//!
//! `demo` writes a constants file of known bytes, then runs `load` on it once
//! per strategy, each in its own process (options are read once per
//! process), and checks the bytes. `load` acquires the file from N threads
//! at once through `om_load_constants_from_file`, sums it, releases every
//! reference, and prints the library's statistics.

use std::ffi::{CStr, CString};
use std::os::raw::c_void;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Instant;

use om_constants::config::parse_size;
use om_constants::ffi;
use om_constants::Stats;

const USAGE: &str = "usage:
  om-constants demo [--size BYTES] [--dir DIR]
  om-constants load FILE --size BYTES [--strategy auto|mmap|read] [--threads N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("load") => load(&args[1..]),
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("om-constants: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options after the positional arguments.
struct Opts<'a> {
    positional: Vec<&'a str>,
    named: Vec<(&'a str, &'a str)>,
}

impl<'a> Opts<'a> {
    fn parse(args: &'a [String], known: &[&str]) -> Result<Opts<'a>, String> {
        let mut o = Opts {
            positional: Vec::new(),
            named: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !known.contains(&name) {
                    return Err(format!("unknown option --{name}\n{USAGE}"));
                }
                let v = it.next().ok_or(format!("--{name} needs a value"))?;
                o.named.push((name, v));
            } else {
                o.positional.push(a);
            }
        }
        Ok(o)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn size(&self, name: &str) -> Result<Option<u64>, String> {
        self.get(name)
            .map(|v| parse_size(v).ok_or(format!("--{name} {v}: expected a size such as 64MiB")))
            .transpose()
    }
}

fn demo(args: &[String]) -> Result<(), String> {
    let o = Opts::parse(args, &["size", "dir"])?;
    let size = o.size("size")?.unwrap_or(64 << 20);
    let dir = o
        .get("dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("om-constants-demo-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let expect: u64 = data.iter().map(|b| u64::from(*b)).sum();
    println!(
        "generated {} ({size} bytes, byte sum {expect})",
        path.display()
    );
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut ok = true;
    for strategy in ["mmap", "read"] {
        let out = Command::new(&exe)
            .args(["load", path.to_str().unwrap_or_default(), "--size"])
            .arg(size.to_string())
            .args(["--strategy", strategy, "--threads", "8"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let summed = text.contains(&format!("byte sum {expect}"));
        ok &= out.status.success() && summed;
    }
    let _ = std::fs::remove_file(&path);
    if ok {
        println!("demo: both strategies loaded the file once and returned its bytes");
        Ok(())
    } else {
        Err("demo failed (see above)".into())
    }
}

fn load(args: &[String]) -> Result<(), String> {
    let o = Opts::parse(args, &["size", "strategy", "threads"])?;
    let [file] = o.positional[..] else {
        return Err(format!("load takes one FILE\n{USAGE}"));
    };
    let size = o.size("size")?.ok_or("load needs --size BYTES")?;
    let size = i64::try_from(size).map_err(|_| "--size is too large".to_string())?;
    let threads: usize = o
        .get("threads")
        .unwrap_or("1")
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or("--threads takes a positive number")?;
    if let Some(s) = o.get("strategy") {
        // Options are read on the library's first call, which is below;
        // nothing else runs yet, so setting the variable here is race-free.
        std::env::set_var("OM_CONSTANT_LOAD", s);
    }
    let fname = CString::new(file).map_err(|_| "FILE contains a NUL byte".to_string())?;
    let is_le = i64::from(cfg!(target_endian = "little"));

    // The model's global `void *`, shared by the threads like a model's is.
    let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
    let slot_addr = slot.as_ptr() as usize;

    let start = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let fname = &fname;
                s.spawn(move || {
                    // SAFETY: slot_addr is the address of `slot`, alive for
                    // the scope; fname is NUL-terminated.
                    let ok = unsafe {
                        ffi::om_load_constants_from_file(
                            slot_addr as *mut *mut c_void,
                            fname.as_ptr(),
                            size,
                            is_le,
                        )
                    };
                    if ok {
                        Ok(())
                    } else {
                        Err(last_error())
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let load_time = start.elapsed();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("load failed: {e}"));
    }
    let base = slot.load(Ordering::Acquire) as *const u8;
    // SAFETY: the library published `size` readable bytes at `base` and we
    // hold `threads` references on them until the releases below.
    let bytes = unsafe { std::slice::from_raw_parts(base, size as usize) };
    let pass = Instant::now();
    let sum: u64 = bytes.iter().map(|b| u64::from(*b)).sum();
    let pass_time = pass.elapsed();
    let loaded = stats();
    for _ in 0..threads {
        // SAFETY: same slot address as above, still alive.
        if !unsafe { ffi::om_free_constant_buffer(slot_addr as *mut *mut c_void) } {
            return Err(format!("release failed: {}", last_error()));
        }
    }
    let after = stats();
    let strategy = if loaded.read.loads > 0 {
        "read"
    } else {
        "mmap"
    };
    println!(
        "{strategy:>5}: {threads} thread(s) loaded {size} bytes in {:.3} ms (loads={}, waits={}, \
         bytes_read={}, bytes_mapped={}); first pass {:.3} ms, byte sum {sum}; \
         after release: live_buffers={}",
        load_time.as_secs_f64() * 1e3,
        loaded.loads,
        loaded.waits,
        loaded.bytes_read,
        loaded.bytes_mapped,
        pass_time.as_secs_f64() * 1e3,
        after.live_buffers
    );
    if loaded.loads != 1 || after.live_buffers != 0 {
        return Err("expected exactly one load and nothing left after release".into());
    }
    Ok(())
}

fn stats() -> Stats {
    let mut s = Stats::default();
    // SAFETY: `s` is a valid, writable Stats.
    unsafe { ffi::om_constants_stats(&mut s) };
    s
}

fn last_error() -> String {
    let p = ffi::om_constants_last_error();
    if p.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the library returns a NUL-terminated string valid until this
    // thread's next call into it.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
