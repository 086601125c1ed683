//! How a checked file becomes memory: the strategies (docs/PERFORMANCE.md, "Strategies").
//!
//! `mmap` is zero-copy and lazy; `read` copies into an aligned heap buffer so
//! the weights are resident and immune to the file changing; `chunked-mmap`
//! is zero-copy above a per-mapping limit. `auto` maps, in pieces above the
//! platform's (or `OM_CONSTANT_MMAP_LIMIT`'s) mapping limit, and reads if
//! mapping fails or the file is on a network volume (docs/SEMANTICS.md). Each strategy is a module that turns a [`Source`] into
//! memory; `residency` then applies prefetch and `mlock`.

mod heap;
mod huge;
mod mapping;
mod read;
mod residency;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Choice, Config, Prefetch};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{Level, Notes};
use crate::source::Source;

pub(crate) use heap::{page_size, HeapBuf};
pub(crate) use huge::Settling;
pub(crate) use mapping::{Mapping, DEFAULT_PIECE};

/// The strategy that actually produced a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A read-only mapping of the file.
    Mmap,
    /// An aligned heap buffer filled by `pread`.
    Read,
    /// One reserved range with the file mapped in pieces.
    ChunkedMmap,
}

impl Strategy {
    /// Every strategy, in the order stats report them.
    pub const ALL: [Strategy; 3] = [Strategy::Mmap, Strategy::Read, Strategy::ChunkedMmap];

    /// Its name as `OM_CONSTANT_LOAD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Mmap => "mmap",
            Strategy::Read => "read",
            Strategy::ChunkedMmap => "chunked-mmap",
        }
    }
}

/// The strategy `choice` means for a file of `size` bytes under `limit`.
pub fn resolve(choice: Choice, size: u64, limit: Option<u64>) -> Strategy {
    match choice {
        Choice::Mmap => Strategy::Mmap,
        Choice::Read => Strategy::Read,
        Choice::ChunkedMmap => Strategy::ChunkedMmap,
        Choice::Auto => match limit {
            Some(l) if size > l => Strategy::ChunkedMmap,
            _ => Strategy::Mmap,
        },
    }
}

/// The name of the network or user-space file system `file` is on (NFS,
/// SMB, FUSE, ...), where `auto` reads instead of mapping; `None` for a
/// local one.
pub fn remote_volume(file: &std::fs::File) -> Option<&'static str> {
    match crate::sys::volume_of(file) {
        crate::sys::Volume::Remote(fs) => Some(fs),
        _ => None,
    }
}

/// As [`resolve`], for the open `file`: `auto` reads a file on a network
/// or user-space file system ([`remote_volume`]).
pub fn resolve_for(
    choice: Choice,
    size: u64,
    limit: Option<u64>,
    file: &std::fs::File,
) -> Strategy {
    if choice == Choice::Auto && remote_volume(file).is_some() {
        return Strategy::Read;
    }
    resolve(choice, size, limit)
}

/// Bytes of `[ptr, ptr+len)` mapped with 2 MiB entries now (0 where the
/// OS cannot tell). Only page tables are read, never the bytes, so a range
/// that was unmapped meanwhile is safe to ask about (it reads as 0).
pub fn huge_backed_bytes(ptr: *const u8, len: usize) -> u64 {
    crate::sys::huge_backed_bytes(ptr, len).unwrap_or(0)
}

/// Where a buffer's bytes are.
pub(crate) enum Memory {
    /// A copy on the heap (`read`).
    Heap(HeapBuf),
    /// `mmap` (one piece) and `chunked-mmap`.
    Mapped(Mapping),
}

/// The constants in memory: what the slot points at, freed on drop
/// (unmapped or deallocated, after its prefetch helper stopped).
pub(crate) struct Buffer {
    /// Shared with the helpers that read it (prefetch, 2 MiB pages): the
    /// memory goes when the last lets go, so no helper reads unmapped
    /// memory, and none needs waiting for where a wait could hang (on
    /// Windows, under the loader lock that a thread's exit needs).
    memory: Arc<Memory>,
    strategy: Strategy,
    prefetcher: Option<residency::Prefetcher>,
    /// The 2 MiB-page helper (`huge.rs`), and what it found.
    settler: Option<huge::Settler>,
    settling: Arc<Settling>,
    locked: bool,
}

impl Buffer {
    /// A buffer of this memory, loaded by `strategy`, with no helper yet.
    pub(crate) fn new(memory: Memory, strategy: Strategy) -> Buffer {
        Buffer {
            memory: Arc::new(memory),
            strategy,
            prefetcher: None,
            settler: None,
            settling: Arc::default(),
            locked: false,
        }
    }

    /// What the 2 MiB-page helper found (see [`Settling::wait`]).
    pub(crate) fn settling(&self) -> &Arc<Settling> {
        &self.settling
    }

    /// The address published in the slot.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        match &*self.memory {
            // The mappings are read-only; the model only reads through the
            // pointer, and C's `void *` has no const to express that.
            Memory::Heap(h) => h.as_ptr(),
            Memory::Mapped(c) => c.as_ptr(),
        }
    }

    /// Its length in bytes (the `size` the model asked for).
    pub(crate) fn len(&self) -> usize {
        match &*self.memory {
            Memory::Heap(h) => h.len(),
            Memory::Mapped(c) => c.len(),
        }
    }

    /// The strategy that produced it.
    pub(crate) fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many mappings it is made of (1 but for `chunked-mmap`).
    #[cfg(test)]
    pub(crate) fn pieces(&self) -> usize {
        match &*self.memory {
            Memory::Mapped(c) => c.pieces(),
            _ => 1,
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // The helpers read the memory: stop them before the memory goes.
        drop(self.prefetcher.take());
        drop(self.settler.take());
        if self.locked {
            residency::unlock(self.as_ptr(), self.len());
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .field("strategy", &self.strategy)
            .finish()
    }
}

/// A finished load: the buffer, and what the load did (for stats and logs).
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The memory.
    pub buffer: Buffer,
    /// Bytes copied by `read` (0 for a mapping).
    pub bytes_read: u64,
    /// Of those, bytes read with `O_DIRECT`.
    pub direct_bytes: u64,
    /// `O_DIRECT` was asked for and the file system refused it.
    pub direct_refused: bool,
    /// Threads that read (0 for a mapping).
    pub read_threads: usize,
    /// Time spent.
    pub elapsed: Duration,
    /// True when `auto` wanted a mapping, it failed, and `read` was used.
    pub read_after_map_failed: bool,
    /// Log lines about the load (a fallback, `mlock` refused under `try`,
    /// the buffer's 2 MiB pages): the caller writes them once nobody waits
    /// on the load, never during it.
    pub notes: Notes,
}

/// Loads the first `size` bytes of `source` as `config` says.
pub(crate) fn load(source: &Source, size: u64, config: &Config) -> Result<Outcome> {
    let start = Instant::now();
    let len = usize::try_from(size).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "constants file '{}' needs {size} bytes, more than this process can address",
                source.fname
            ),
        )
    })?;
    let populate = config.prefetch == Prefetch::Populate;
    let huge = config.huge_pages.wanted();
    let mut notes = Notes::default();
    let strategy = resolve_for(config.strategy, size, config.mmap_limit, &source.file);
    let mut remote = false;
    if strategy == Strategy::Read && config.strategy == Choice::Auto {
        if let Some(fs) = remote_volume(&source.file) {
            remote = true;
            // See docs/SEMANTICS.md, "Network and user-space file systems".
            notes.push(
                Level::Info,
                format!(
                    "{} is on {fs}: read into memory in large parallel requests, since a \
                     mapping would fetch it page by page and a lost server would be a SIGBUS \
                     mid-inference (OM_CONSTANT_LOAD=mmap maps it, sharing one copy between \
                     processes)",
                    source.path.display()
                ),
            );
        }
    }
    let mapped = match strategy {
        Strategy::Read => None,
        // `mmap` is `chunked-mmap` with one piece, so that on Unix it too
        // starts on a 2 MiB boundary and is advised before its first fault.
        Strategy::Mmap => Some(
            mapping::map(source, len, u64::MAX, huge, "map (mmap)")
                .map(|m| (Memory::Mapped(m), Strategy::Mmap)),
        ),
        Strategy::ChunkedMmap => {
            let piece = config.mmap_limit.unwrap_or(DEFAULT_PIECE);
            Some(
                mapping::map(source, len, piece, huge, "map (chunked mmap)")
                    .map(|c| (Memory::Mapped(c), Strategy::ChunkedMmap)),
            )
        }
    };
    let (memory, strategy, read_stats, read_after_map_failed) = match mapped {
        Some(Ok((memory, strategy))) => (memory, strategy, read::ReadStats::default(), false),
        Some(Err(e)) if config.strategy != Choice::Auto => return Err(e),
        Some(Err(e)) => {
            notes.push(
                Level::Info,
                format!("{e}; reading the file into memory instead"),
            );
            let (h, r) = read::read(source, len, config, read::Because::MapFailed)?;
            (Memory::Heap(h), Strategy::Read, r, true)
        }
        None => {
            let because = if remote {
                read::Because::Remote
            } else {
                read::Because::Asked
            };
            match read::read(source, len, config, because) {
                Ok((h, r)) => (Memory::Heap(h), Strategy::Read, r, false),
                // `auto` on a network volume: no room for a copy, so map.
                Err(e) if remote && e.kind() == ErrorKind::OutOfMemory => {
                    notes.push(Level::Info, format!("{e}; mapping it instead"));
                    let (piece, st) = match resolve(Choice::Auto, size, config.mmap_limit) {
                        Strategy::ChunkedMmap => (
                            config.mmap_limit.unwrap_or(DEFAULT_PIECE),
                            Strategy::ChunkedMmap,
                        ),
                        _ => (u64::MAX, Strategy::Mmap),
                    };
                    let m = mapping::map(source, len, piece, huge, "map (mmap)")?;
                    (Memory::Mapped(m), st, read::ReadStats::default(), false)
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut buffer = Buffer::new(memory, strategy);
    if strategy != Strategy::Read && populate {
        if let Err(e) = crate::sys::populate(buffer.as_ptr(), len) {
            return Err(changed_under_mapping(source, len, e));
        }
    }
    let what = format!("constants file '{}'", source.fname);
    buffer.locked = residency::lock(buffer.as_ptr(), len, config, &what, &mut notes)?;
    if strategy != Strategy::Read {
        let keep = Arc::clone(&buffer.memory);
        buffer.prefetcher = residency::prefetch(buffer.as_ptr(), len, config, keep);
        // Off the load call: the helper starts here and works after the
        // pointer is published (see huge.rs).
        let started = huge::start(
            source,
            buffer.as_ptr(),
            len,
            config.huge_pages,
            &buffer.settling,
            config.log,
            Arc::clone(&buffer.memory),
        );
        buffer.settler = started.settler;
        notes.push_some(Level::Info, started.note);
    } else {
        buffer.settling.finish_now();
    }
    if read_stats.direct_refused {
        notes.push(
            Level::Info,
            format!(
                "O_DIRECT refused for {}; read through the page cache instead",
                source.path.display()
            ),
        );
    }
    Ok(Outcome {
        bytes_read: if strategy == Strategy::Read { size } else { 0 },
        direct_bytes: read_stats.direct_bytes,
        direct_refused: read_stats.direct_refused,
        read_threads: read_stats.threads,
        buffer,
        elapsed: start.elapsed(),
        read_after_map_failed,
        notes,
    })
}

/// The error for a mapping whose pages could not all be read in: the file
/// shrank (or its volume failed) after it was checked.
fn changed_under_mapping(source: &Source, len: usize, e: std::io::Error) -> Error {
    let now = source
        .file
        .metadata()
        .map_or_else(|_| "unknown".into(), |m| m.len().to_string());
    Error::new(
        ErrorKind::Changed,
        format!(
            "constants file '{}' ({}) could not be read in while it was mapped: {e}; it \
             needs {len} bytes and now has {now}: it was truncated or rewritten in place \
             during the load (or its volume failed). Nothing was loaded. Replace a \
             constants file by writing a new one and renaming it over the old name",
            source.fname,
            source.path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_maps_up_to_the_limit_and_in_pieces_above() {
        assert_eq!(resolve(Choice::Auto, 10, None), Strategy::Mmap);
        assert_eq!(resolve(Choice::Auto, 10, Some(10)), Strategy::Mmap);
        assert_eq!(resolve(Choice::Auto, 11, Some(10)), Strategy::ChunkedMmap);
        assert_eq!(resolve(Choice::Mmap, 11, Some(10)), Strategy::Mmap);
        assert_eq!(resolve(Choice::Read, 1, None), Strategy::Read);
    }

    fn file_with(bytes: &[u8], name: &str) -> (std::path::PathBuf, Source) {
        let p = std::env::temp_dir().join(format!("om-strategy-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let s = Source::open(&p, name, bytes.len() as u64).unwrap();
        (p, s)
    }

    #[test]
    fn every_strategy_yields_the_file_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (p, src) = file_with(&data, "bytes");
        for choice in [
            Choice::Mmap,
            Choice::Read,
            Choice::Auto,
            Choice::ChunkedMmap,
        ] {
            let config = Config {
                strategy: choice,
                ..Config::default()
            };
            let l = load(&src, 99_999, &config).unwrap();
            assert_eq!(l.buffer.len(), 99_999);
            // SAFETY: the buffer is live for this scope and holds len bytes.
            let got = unsafe { std::slice::from_raw_parts(l.buffer.as_ptr(), l.buffer.len()) };
            assert_eq!(got, &data[..99_999], "{choice:?}");
            let expect_read = if choice == Choice::Read { 99_999 } else { 0 };
            assert_eq!(l.bytes_read, expect_read);
            assert!(!l.read_after_map_failed);
        }
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn chunked_mmap_maps_in_pieces_of_whole_pages_under_the_limit() {
        let size = 4 * 16384 + 1234;
        let (p, src) = file_with(&vec![9u8; size], "pieces");
        for (limit, pieces) in [(16384u64, 5), (10_000, size.div_ceil(8192)), (1 << 30, 1)] {
            // Windows maps one view whatever the limit.
            let pieces = if crate::sys::ONE_PIECE_ONLY {
                1
            } else {
                pieces
            };
            let config = Config {
                strategy: Choice::ChunkedMmap,
                mmap_limit: Some(limit),
                ..Config::default()
            };
            let l = load(&src, size as u64, &config).unwrap();
            assert_eq!(l.buffer.pieces(), pieces, "limit {limit}");
            assert_eq!(l.buffer.strategy(), Strategy::ChunkedMmap);
        }
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn heap_buffers_are_page_aligned() {
        let (p, src) = file_with(&[3u8; 5000], "align");
        let config = Config {
            strategy: Choice::Read,
            ..Config::default()
        };
        let l = load(&src, 5000, &config).unwrap();
        assert_eq!(l.buffer.as_ptr() as usize % heap::page_size(), 0);
        std::fs::remove_file(p).unwrap();
    }
}
