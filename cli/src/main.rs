//! `om-constants`: the library's command-line tool.
//!
//! `bench` writes a constants file (default 1 GiB) and measures every
//! strategy against baselines in the same run (see `bench`); `load` loads a
//! user's file through the C ABI and reports what happened; `check` reads a
//! compiled model (ELF or PE) and says which loader it will use, which
//! constants file it needs and whether it will be found (see `check`);
//! `prepare` lays constants files' page cache in 2 MiB pages once.
//! `om-constants --help` lists the options.

// One visibility style, as in the library: `pub(crate)` for what other
// modules use, since nothing here is reachable from outside.
#![warn(unreachable_pub)]

// Built with `--cfg loom` (model checking), the library's atomics are
// loom's and this tool has nothing to do. `bench` is for POSIX systems: its
// baselines are the raw calls (mmap, pread, madvise) it compares with.
#[cfg(all(unix, not(loom)))]
mod baseline;
#[cfg(not(loom))]
mod bench;
#[cfg(all(unix, not(loom)))]
mod cache_bench;
#[cfg(not(loom))]
mod check;
#[cfg(not(loom))]
mod load;
#[cfg(not(loom))]
mod pass;
#[cfg(not(loom))]
mod prepare;

use std::process::ExitCode;

/// The `is_le` a model compiled for this machine passes: 1 on a
/// little-endian host, 0 on a big-endian one (s390x).
#[cfg(not(loom))]
pub(crate) const HOST_IS_LE: i64 = cfg!(target_endian = "little") as i64;

#[cfg(loom)]
fn main() -> ExitCode {
    eprintln!("om-constants: this build is for model checking (--cfg loom)");
    ExitCode::FAILURE
}

/// The library's command-line tool: measure it, load a file through it,
/// and check a compiled model before deploying it.
#[cfg(not(loom))]
#[derive(clap::Parser)]
#[command(name = "om-constants", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[cfg(not(loom))]
#[derive(clap::Subcommand)]
enum Command {
    /// Write a constants file and time every strategy against baselines
    /// measured in the same run (POSIX only).
    Bench(bench::Options),
    /// Load FILE through the C ABI from N threads, sum it once, release it,
    /// and report what happened.
    Load(load::Args),
    /// Tell a deployer, without running it, which loader a compiled model
    /// uses, which constants file it needs and whether it will be found.
    Check(check::Args),
    /// Lay constants files' page cache in 2 MiB pages once, before starting
    /// the workers that map them (a deploy step; Linux).
    Prepare(prepare::Args),
}

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

/// A byte count for clap: `4096`, `64MiB`, `1G` (the library's parser).
#[cfg(not(loom))]
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    om_constants::config::parse_size(s).ok_or_else(|| "expected a size such as 64MiB".to_string())
}

/// A positive whole number for clap.
#[cfg(not(loom))]
pub(crate) fn parse_count(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "expected a positive number".to_string())
}

#[cfg(not(loom))]
fn main() -> ExitCode {
    use clap::Parser;
    quiet_library_log();
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(unix)]
        Command::Bench(options) => bench::run(options),
        #[cfg(not(unix))]
        Command::Bench(_) => Err("bench runs on POSIX systems only: its baselines are POSIX calls \
                                 (mmap, pread, madvise); on this platform, use `om-constants load FILE`"
            .to_string()),
        Command::Load(args) => load::run(args),
        Command::Check(args) => return check::run(args),
        Command::Prepare(args) => prepare::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("om-constants: {msg}");
            ExitCode::FAILURE
        }
    }
}
