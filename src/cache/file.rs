//! The cache's files: the temporary file that entries are reserved in, its
//! crash-safe replacement of the cache (write, sync, rename, sync the
//! folder), reading a candidate cache file, and removing the temporary
//! files of processes that died.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapRaw};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// The temporary file `<cache>.tmp-<pid>-<random>` beside the cache;
/// removed on drop unless it became the cache. The random part keeps
/// another user of a shared folder from creating the names ahead of us.
pub(super) struct Tmp {
    pub(super) path: PathBuf,
    file: File,
    replaced: bool,
}

impl Tmp {
    /// Creates a temporary file for the cache at `cache`, exclusively, and
    /// locks it: the lock, held while this builder lives, is the mark that
    /// the file is in use, which another process's clean-up can see
    /// whatever its pid namespace or machine (`remove_stale_temporaries`).
    ///
    /// Between making the file and locking it, a clean-up may find it
    /// unlocked and remove it: then the lock fails (the clean-up holds it)
    /// or the name no longer leads to this file, and another name is
    /// tried.
    pub(super) fn create(cache: &Path) -> io::Result<Tmp> {
        let name = cache
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut last = None;
        for _ in 0..8 {
            let path = cache.with_file_name(format!(
                "{name}.tmp-{}-{:016x}",
                std::process::id(),
                random()
            ));
            let file = match sys::create_new(&path) {
                Ok(f) => f,
                // Taken (by chance, or by someone guessing): another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(path);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if sys::try_lock_exclusive(&file)? && same_file(&file, &path) {
                return Ok(Tmp {
                    path,
                    file,
                    replaced: false,
                });
            }
            last = Some(path);
        }
        Err(io::Error::other(format!(
            "another process's clean-up removed each new temporary file of the cache (the last \
             {}) before it could be locked",
            last.map_or_else(String::new, |p| p.display().to_string())
        )))
    }

    /// Extends the file to hold `[offset, offset+size)` with blocks
    /// allocated (so a full disk is an error now, not a SIGBUS while
    /// packing) and maps that range read-write. The file's name is unique,
    /// nobody else opens it, and it is never shrunk while mapped.
    pub(super) fn map_region(&self, offset: u64, size: usize) -> io::Result<MmapRaw> {
        sys::allocate(&self.file, offset, size as u64)?;
        sys::map_shared_writable(&self.file, offset, size)
    }

    /// Gives back what a refused region may have allocated past `len`
    /// (the end of the last region); regions before it stay mapped.
    pub(super) fn shrink_to(&self, len: u64) {
        if self.file.metadata().is_ok_and(|m| m.len() > len) {
            let _ = self.file.set_len(len);
        }
    }

    /// Writes the index at `index_offset` and the header at 0, syncs the
    /// file, renames it over `cache` and syncs the folder: a crash at any
    /// point leaves the old cache or the new one, never a mix. On failure,
    /// the step that failed and why.
    pub(super) fn replace(
        mut self,
        cache: &Path,
        index_offset: u64,
        index: &[u8],
        header: &[u8],
    ) -> std::result::Result<(), (&'static str, io::Error)> {
        let len = index_offset + index.len() as u64;
        self.file
            .set_len(len)
            .and_then(|_| sys::write_all_at(&self.file, index, index_offset))
            .and_then(|_| sys::write_all_at(&self.file, header, 0))
            .and_then(|_| self.file.sync_all())
            .map_err(|e| ("writing", e))?;
        std::fs::rename(&self.path, cache).map_err(|e| ("renaming", e))?;
        self.replaced = true;
        if let Some(dir) = cache.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.replaced {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A random number from the standard library's per-process random keys
/// (seeded by the OS); no two calls of a process give the same.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Why a cache file at the path is not used.
pub(super) enum Refused {
    /// It is damaged or unreadable: it is rebuilt in its place.
    Unusable(String),
    /// Another user could have written it (or it is a symbolic link): it is
    /// never read, and nothing is written beside it; the cache is built in
    /// memory (docs/CACHE.md, "Who is trusted").
    Untrusted(String),
}

/// The cache file at `path`, mapped read-only and read in, if there is
/// one; why it is not used otherwise. Opened without blocking (a FIFO put
/// there since [`refuse_non_regular`] is refused instead of blocking
/// forever) and without following a symbolic link; trusted only when only
/// this user or root could have written it; read in through a call that
/// reports a truncated file rather than faulting on it.
pub(super) fn open_existing(path: &Path) -> std::result::Result<Option<Mmap>, Refused> {
    let unusable = |e: &dyn std::fmt::Display| Refused::Unusable(e.to_string());
    let file = match sys::open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if sys::is_a_link(&e) => {
            return Err(Refused::Untrusted("it is a symbolic link".into()))
        }
        Err(e) => return Err(unusable(&e)),
    };
    let meta = file.metadata().map_err(|e| unusable(&e))?;
    if !meta.is_file() {
        return Err(unusable(&"not a regular file"));
    }
    if let Some(why) = sys::untrusted(&meta) {
        return Err(Refused::Untrusted(why));
    }
    if meta.len() == 0 {
        return Err(unusable(&"empty file"));
    }
    // The cache's writers replace the file by rename, which leaves this
    // mapping on the old, intact file.
    let map = sys::map_whole_file(&file).map_err(|e| unusable(&e))?;
    sys::populate(map.as_ptr().cast_mut(), map.len())
        .map_err(|e| unusable(&format!("it shrank while it was read ({e})")))?;
    Ok(Some(map))
}

/// An error if `path` exists and is not a regular file (a FIFO, a device,
/// a folder): opening a FIFO would block, and a commit would rename over
/// whatever it is.
pub(super) fn refuse_non_regular(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let what = crate::source::describe(&meta);
            Err(Error::new(
                ErrorKind::NotAFile,
                format!(
                    "cache path {} is {what}, not a regular file; pass om_cache_open the path \
                     of a cache file (it need not exist yet)",
                    path.display()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// True when `path` still names the open `file` (the same volume and file
/// number).
fn same_file(file: &File, path: &Path) -> bool {
    let ours = file.metadata().and_then(|m| sys::file_stamp(file, &m));
    let named = sys::open_read_nonblocking(path).and_then(|f| {
        let m = f.metadata()?;
        sys::file_stamp(&f, &m)
    });
    matches!((ours, named), (Ok(a), Ok(b)) if (a.volume, a.index) == (b.volume, b.index))
}

/// Removes temporary files of the cache at `path` left by builders that
/// died: a live builder holds a lock on its file (`Tmp::create`), so a
/// file whose lock can be taken has no builder. Pids decide nothing: a
/// builder in another container (pid namespace) or on another machine
/// sharing the folder has a pid this process cannot see. Over NFS the
/// locks are the server's (NFSv4, or NLM for v3); a mount with `nolock`
/// keeps them local, and then machines sharing the folder must not share
/// a cache path (docs/CACHE.md).
pub(super) fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        // Only regular files (not a link or a FIFO of that name), opened
        // without blocking.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(f) = sys::open_no_follow(&entry.path()) else {
            continue;
        };
        if f.metadata().is_ok_and(|m| m.is_file()) && sys::try_lock_exclusive(&f).unwrap_or(false) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
