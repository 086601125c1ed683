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

/// The temporary file `<cache>.tmp-<pid>-<n>` beside the cache; removed on
/// drop unless it became the cache.
pub(super) struct Tmp {
    pub(super) path: PathBuf,
    file: File,
    replaced: bool,
}

impl Tmp {
    /// Creates a temporary file for the cache at `cache`, exclusively.
    pub(super) fn create(cache: &Path) -> io::Result<Tmp> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = cache
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = cache.with_file_name(format!(
            "{name}.tmp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = sys::create_new(&path)?;
        Ok(Tmp {
            path,
            file,
            replaced: false,
        })
    }

    /// Extends the file to hold `[offset, offset+size)` with blocks
    /// allocated (so a full disk is an error now, not a SIGBUS while
    /// packing) and maps that range read-write. The file's name is unique,
    /// nobody else opens it, and it is never shrunk while mapped.
    pub(super) fn map_region(&self, offset: u64, size: usize) -> io::Result<MmapRaw> {
        sys::allocate(&self.file, offset, size as u64)?;
        sys::map_shared_writable(&self.file, offset, size)
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

/// The cache file at `path`, mapped read-only, if there is one; why it
/// cannot be used otherwise. Opened without blocking, so a FIFO put there
/// since [`refuse_non_regular`] is refused instead of blocking forever.
pub(super) fn open_existing(path: &Path) -> std::result::Result<Option<Mmap>, String> {
    let file = match sys::open_read_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("empty file".into());
    }
    // The cache's writers replace the file by rename, which leaves this
    // mapping on the old, intact file.
    sys::map_whole_file(&file)
        .map(Some)
        .map_err(|e| e.to_string())
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

/// Removes temporary files of the cache at `path` left by processes that
/// died.
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
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !sys::process_exists(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
