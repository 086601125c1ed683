//! `om-constants`: the library's command-line tool.
//!
//! ```text
//! om-constants bench [--size BYTES] [--dir DIR] [--runs N] [--threads N]
//!                    [--limit BYTES] [--cold] [--json] [--keep]
//! om-constants load FILE [--size BYTES] [--strategy auto|mmap|read|chunked-mmap]
//!                        [--threads N]
//! ```
//!
//! `bench` writes a constants file (default 1 GiB) and measures every
//! strategy against baselines in the same run (see `bench`); `load` loads a
//! user's file through the C ABI and reports what happened.

// Built with `--cfg loom` (model checking), the library's atomics are
// loom's and this tool has nothing to do. `bench` is for POSIX systems: its
// baselines are the raw calls (mmap, pread, madvise) it compares with.
#[cfg(all(unix, not(loom)))]
mod baseline;
#[cfg(all(unix, not(loom)))]
mod bench;
#[cfg(all(unix, not(loom)))]
mod cache_bench;
#[cfg(all(unix, not(loom)))]
mod fast_path;
#[cfg(not(loom))]
mod load;
#[cfg(not(loom))]
mod opts;
#[cfg(not(loom))]
mod pass;

use std::process::ExitCode;

/// The `is_le` a model compiled for this machine passes: 1 on a
/// little-endian host, 0 on a big-endian one (s390x).
pub(crate) const HOST_IS_LE: i64 = cfg!(target_endian = "little") as i64;

#[cfg(loom)]
fn main() -> ExitCode {
    eprintln!("om-constants: this build is for model checking (--cfg loom)");
    ExitCode::FAILURE
}

#[cfg(not(loom))]
const USAGE: &str = "usage:
  om-constants bench [--size BYTES] [--dir DIR] [--runs N] [--threads N] [--limit BYTES]
                     [--cold] [--json] [--keep]
  om-constants load FILE [--size BYTES] [--strategy auto|mmap|read|chunked-mmap] [--threads N]";

/// The tool reports every error itself, once: the library's own stderr line
/// for a failed call (OM_CONSTANT_LOG's default, `error`) would repeat it.
/// So the library logs nothing unless the user set OM_CONSTANT_LOG. Called
/// before the first call into the library, which reads its options once.
#[cfg(not(loom))]
pub fn quiet_library_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("OM_CONSTANT_LOG").is_none() {
            std::env::set_var("OM_CONSTANT_LOG", "off");
        }
    });
}

#[cfg(not(loom))]
fn main() -> ExitCode {
    quiet_library_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = |a: &String| a == "-h" || a == "--help";
    let result = match args.first().map(String::as_str) {
        // `om-constants bench --help` asks for usage, not for a bench.
        Some("bench" | "load") if args[1..].iter().any(help) => {
            println!("{USAGE}");
            Ok(())
        }
        #[cfg(unix)]
        Some("bench") => bench::run(&args[1..]),
        #[cfg(not(unix))]
        Some("bench") => Err("bench runs on POSIX systems only: its baselines are POSIX calls \
                              (mmap, pread, madvise); on this platform, use `om-constants load FILE`"
            .to_string()),
        Some("load") => load::run(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
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
