//! `om-constants bench`'s options.

use std::path::PathBuf;

use crate::{parse_count, parse_size};

/// What to measure, and how.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Bytes of the generated constants file (4096, 64MiB, 1G).
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_bench_size)]
    pub size: usize,
    /// Where the file is written (default: the system's temporary folder).
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
    /// Runs of every method (interleaved).
    #[arg(long, value_name = "N", default_value = "3", value_parser = parse_count)]
    pub runs: usize,
    /// Threads racing on one slot.
    #[arg(long, value_name = "N", default_value = "64", value_parser = parse_count)]
    pub threads: usize,
    /// Piece size of `chunked-mmap` (and `auto`'s mapping limit).
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub limit: u64,
    /// Drop the file from the page cache before each run.
    #[arg(long)]
    pub cold: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the generated file.
    #[arg(long)]
    pub keep: bool,
}

/// A file size the bench can hold in memory: at least 8 bytes.
fn parse_bench_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    let n = usize::try_from(n).map_err(|_| "too large for this machine".to_string())?;
    if n < 8 {
        return Err("must be at least 8 bytes".into());
    }
    Ok(n)
}
