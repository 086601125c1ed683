//! `om-constants bench`'s options.

use std::path::PathBuf;

use crate::opts::Opts;

/// What to measure, and how.
pub struct Options {
    /// Bytes of the generated constants file.
    pub size: usize,
    /// Where the file is written.
    pub dir: PathBuf,
    /// Runs of every method (interleaved).
    pub runs: usize,
    /// Threads racing on one slot.
    pub threads: usize,
    /// Piece size of `chunked-mmap` (and `auto`'s mapping limit).
    pub limit: u64,
    /// Drop the file from the page cache before each run.
    pub cold: bool,
    /// Print JSON instead of the table.
    pub json: bool,
    /// Keep the generated file.
    pub keep: bool,
}

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let o = Opts::parse(
            args,
            &["size", "dir", "runs", "threads", "limit"],
            &["json", "cold", "keep"],
        )?;
        let size = o.size("size")?.unwrap_or(1 << 30);
        let size = usize::try_from(size).map_err(|_| "--size too large")?;
        if size < 8 {
            return Err("--size must be at least 8 bytes".into());
        }
        Ok(Options {
            size,
            dir: o
                .get("dir")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            runs: o.count("runs", 3)?,
            threads: o.count("threads", 64)?,
            limit: o.size("limit")?.unwrap_or(256 << 20),
            cold: o.flag("cold"),
            json: o.flag("json"),
            keep: o.flag("keep"),
        })
    }
}
