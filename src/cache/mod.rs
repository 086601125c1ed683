//! The packed-weights cache: weights a runtime transforms at load time
//! (packed for a kernel, relaid, dequantised) kept in a file, so that the
//! next start does no packing and the packed weights are clean, file-backed
//! pages instead of dirty anonymous memory.
//!
//! A cache belongs to a key: a path and an identity (the caller's model
//! hash and packing-code version). Opening finds either a valid file for
//! that identity, mapped read-only and served without a single write, or
//! nothing usable (absent, another identity or format, damaged: checked in
//! full, never trusted), and then the caller reserves regions, packs into
//! them and commits. Reserved regions live in a temporary file in the same
//! folder; commit writes the index and header, syncs, and renames the file
//! over the old one, so a crash at any point leaves the old cache or none,
//! never a half-written one, and no file is ever truncated under a live
//! mapping. Two processes building at once each use their own temporary
//! file; both succeed and the last rename wins. Where the folder cannot
//! hold the file (read-only, full), regions come from the heap instead,
//! with one log line, and the process works on without persisting.

pub mod format;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use memmap2::{Mmap, MmapRaw};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::strategy::{page_size, HeapBuf};
use crate::sys;
use format::Record;

/// An open cache (C: `struct om_cache`, opaque).
pub struct Cache {
    path: PathBuf,
    identity: Vec<u8>,
    log: Level,
    inner: Mutex<Inner>,
}

enum Inner {
    /// A valid file for this identity, mapped read-only.
    Loaded {
        map: Mmap,
        entries: HashMap<String, Record>,
    },
    /// Entries being reserved and packed; committed or not.
    Building(Builder),
}

struct Builder {
    /// The temporary file; None once regions come from the heap.
    tmp: Option<Tmp>,
    /// Why regions come from the heap (logged once).
    heap_reason: Option<String>,
    next: u64,
    regions: Vec<Region>,
    names: HashMap<String, usize>,
    committed: bool,
}

struct Tmp {
    path: PathBuf,
    file: File,
}

struct Region {
    name: String,
    offset: u64,
    size: usize,
    memory: Memory,
}

enum Memory {
    /// A shared mapping of a range of the temporary file: writable by the
    /// caller until commit makes it read-only. A raw mapping, because C
    /// code writes it while we hold it: no Rust reference to its bytes is
    /// made until it is read-only (see [`Region::frozen_bytes`]).
    File(MmapRaw),
    Heap(HeapBuf),
}

impl Region {
    fn ptr(&self) -> *mut u8 {
        match &self.memory {
            Memory::File(m) => m.as_mut_ptr(),
            Memory::Heap(h) => h.as_ptr(),
        }
    }

    /// Makes a file region read-only: from now on a stray write by the
    /// caller faults instead of changing bytes under their checksum.
    fn freeze(&self) -> io::Result<()> {
        let Memory::File(m) = &self.memory else {
            return Ok(());
        };
        sys::protect_read_only(m)
    }

    /// The bytes of a region that [`freeze`](Self::freeze) made read-only.
    fn frozen_bytes(&self) -> &[u8] {
        // SAFETY: the region's memory holds `size` bytes for its lifetime,
        // and it was made read-only, so nothing writes them while the slice
        // lives (a write faults).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.size) }
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        // Unmap before removing; an uncommitted temporary file is garbage.
        self.regions.clear();
        if let Some(t) = self.tmp.take() {
            if !self.committed {
                let _ = std::fs::remove_file(&t.path);
            }
        }
    }
}

fn err(kind: ErrorKind, msg: String) -> Error {
    Error::new(kind, msg)
}

impl Cache {
    /// Opens the cache at `path` for `identity`: a valid file is mapped and
    /// served; anything else is ignored and a new one starts being built.
    /// From `config`: the log level.
    pub fn open(path: &Path, identity: &[u8], config: &Config) -> Result<Cache> {
        if identity.len() > format::MAX_IDENTITY {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "cache identity is {} bytes; at most {} are kept: pass a hash of it",
                    identity.len(),
                    format::MAX_IDENTITY
                ),
            ));
        }
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("cache path '{}' names no file", path.display()),
            ));
        }
        refuse_non_regular(path)?;
        remove_stale_temporaries(path);
        let mut cache = Cache {
            path: path.to_path_buf(),
            identity: identity.to_vec(),
            log: config.log,
            inner: Mutex::new(Inner::Building(Builder::empty())),
        };
        match cache.load_existing() {
            Ok(Some(inner)) => {
                cache.inner = Mutex::new(inner);
                return Ok(cache);
            }
            Ok(None) => {}
            Err(why) => cache.note(
                Level::Info,
                &format!("ignoring cache {}: {why}; rebuilding it", path.display()),
            ),
        }
        let builder = cache.start_building();
        cache.inner = Mutex::new(Inner::Building(builder));
        Ok(cache)
    }

    fn note(&self, level: Level, msg: &str) {
        log::emit(self.log, level, msg);
    }

    /// A valid file for this identity, or None if there is none, or why
    /// the one there cannot be used.
    fn load_existing(&self) -> std::result::Result<Option<Inner>, String> {
        // O_NONBLOCK: a FIFO put there since the check above is refused
        // below instead of blocking this open forever.
        let file = match sys::open_read_nonblocking(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let len = meta.len();
        if len == 0 {
            return Err("empty file".into());
        }
        // The cache's writers replace the file by rename, which leaves this
        // mapping on the old, intact file.
        let map = sys::map_whole_file(&file).map_err(|e| e.to_string())?;
        let entries = format::validate(&map, &self.identity, page_size())?;
        Ok(Some(Inner::Loaded { map, entries }))
    }

    fn start_building(&self) -> Builder {
        let mut b = Builder::empty();
        b.next = format::data_start(self.identity.len(), page_size()) as u64;
        match create_temporary(&self.path) {
            Ok(tmp) => b.tmp = Some(tmp),
            Err(e) => {
                if let Some(why) = self.fall_back_to_heap(&mut b, &e) {
                    self.note(Level::Error, &why);
                }
            }
        }
        b
    }

    /// Switches `b` to heap regions; returns the line to log (once, by the
    /// caller, after it has released the cache's lock).
    fn fall_back_to_heap(&self, b: &mut Builder, e: &io::Error) -> Option<String> {
        if b.heap_reason.is_some() {
            return None;
        }
        let folder = self
            .path
            .parent()
            .map_or_else(|| ".".into(), |p| p.display().to_string());
        let why = format!(
            "cannot keep the packed-weights cache {} in {folder}: {e}; packed weights stay in \
             memory for this process and are packed again next time (make the folder \
             writable, or free space)",
            self.path.display()
        );
        b.heap_reason = Some(why.clone());
        if let Some(t) = b.tmp.take() {
            let _ = std::fs::remove_file(&t.path);
        }
        Some(why)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the cache came valid from its file (nothing to pack).
    pub fn is_loaded(&self) -> bool {
        matches!(*self.lock(), Inner::Loaded { .. })
    }

    /// True when committed entries persist in the file (false on the heap).
    pub fn is_persistent(&self) -> bool {
        match &*self.lock() {
            Inner::Loaded { .. } => true,
            Inner::Building(b) => b.tmp.is_some(),
        }
    }

    /// A committed entry: its address (read-only) and size, or None.
    pub fn lookup(&self, name: &str) -> Option<(*const u8, usize)> {
        match &*self.lock() {
            Inner::Loaded { map, entries } => entries.get(name).map(|r| {
                // SAFETY: validate() checked offset+size lies inside the map.
                (
                    unsafe { map.as_ptr().add(r.offset as usize) },
                    r.size as usize,
                )
            }),
            Inner::Building(b) if b.committed => b
                .names
                .get(name)
                .map(|i| (b.regions[*i].ptr() as *const u8, b.regions[*i].size)),
            Inner::Building(_) => None,
        }
    }

    /// Reserves a writable, page-aligned region of `size` bytes for `name`
    /// (`align`, a power of two up to the page size, is always met). The
    /// caller packs into it; commit makes it durable.
    pub fn reserve(&self, name: &str, size: u64, align: u64) -> Result<*mut u8> {
        let page = page_size();
        let bad = |m: String| Err(err(ErrorKind::InvalidArgument, m));
        if name.is_empty() || name.len() > 4096 {
            return bad("a cache entry needs a name of 1 to 4096 bytes".into());
        }
        if size == 0 || usize::try_from(size).is_err() {
            return bad(format!(
                "cache entry '{name}': size {size} is not a positive, addressable size"
            ));
        }
        if !align.is_power_of_two() || align > page as u64 {
            return bad(format!(
                "cache entry '{name}': alignment {align} must be a power of two up to the page size ({page})"
            ));
        }
        let mut note = None;
        let result = self.reserve_in(&mut self.lock(), name, size, &mut note);
        if let Some(why) = note {
            self.note(Level::Error, &why);
        }
        result
    }

    /// The part of [`reserve`](Self::reserve) done under the cache's lock;
    /// a line to log is left in `note`.
    fn reserve_in(
        &self,
        inner: &mut Inner,
        name: &str,
        size: u64,
        note: &mut Option<String>,
    ) -> Result<*mut u8> {
        let page = page_size();
        let bad = |m: String| Err(err(ErrorKind::InvalidArgument, m));
        let b = match inner {
            Inner::Loaded { .. } => {
                return bad(format!(
                    "cache {} is complete for its identity; entries are added only while \
                     building (a new identity starts a new build)",
                    self.path.display()
                ))
            }
            Inner::Building(b) if b.committed => {
                return bad(format!(
                    "cache {} is already committed",
                    self.path.display()
                ))
            }
            Inner::Building(b) => b,
        };
        if b.names.contains_key(name) {
            return bad(format!("cache entry '{name}' is reserved twice"));
        }
        let size = size as usize;
        let offset = b.next.div_ceil(page as u64) * page as u64;
        let memory = match b.tmp.as_ref().map(|t| map_region(&t.file, offset, size)) {
            Some(Ok(m)) => Some(Memory::File(m)),
            Some(Err(e)) => {
                *note = self.fall_back_to_heap(b, &e);
                None
            }
            None => None,
        };
        let memory = match memory {
            Some(m) => {
                b.next = offset + size as u64;
                m
            }
            None => Memory::Heap(HeapBuf::alloc(size, false).ok_or_else(|| {
                err(
                    ErrorKind::OutOfMemory,
                    format!("cannot allocate {size} bytes for cache entry '{name}'"),
                )
            })?),
        };
        b.regions.push(Region {
            name: name.to_string(),
            offset,
            size,
            memory,
        });
        b.names.insert(name.to_string(), b.regions.len() - 1);
        Ok(b.regions[b.regions.len() - 1].ptr())
    }

    /// Makes everything reserved durable and its pages clean: make each
    /// file region read-only (so the bytes cannot change under their
    /// checksums, even if the caller is still writing: its write faults),
    /// sync it, write the index and header, sync the file, rename it over
    /// the cache, sync the folder. Then (persisted or not) the entries are
    /// committed for this process. If persisting fails, the error says why,
    /// the temporary file is removed and the old cache file, if any, is
    /// untouched.
    pub fn commit(&self) -> Result<()> {
        let mut inner = self.lock();
        let b = match &mut *inner {
            Inner::Loaded { .. } => return Ok(()),
            Inner::Building(b) if b.committed => return Ok(()),
            Inner::Building(b) => b,
        };
        let frozen = b.regions.iter().try_for_each(Region::freeze);
        let mut result = Ok(());
        if let Some(t) = &b.tmp {
            let persisted = frozen
                .map_err(|e| self.commit_error("protecting the regions of", t, &e))
                .and_then(|()| self.persist(&b.regions, b.next, t));
            if let Err(e) = persisted {
                let _ = std::fs::remove_file(&t.path);
                b.tmp = None;
                result = Err(e);
            }
        }
        b.committed = true;
        result
    }

    fn commit_error(&self, what: &str, t: &Tmp, e: &io::Error) -> Error {
        err(
            ErrorKind::Io,
            format!(
                "cannot commit cache {} ({what} {}): {e}; the entries stay usable in \
                 memory for this process, and the old cache file, if any, is untouched",
                self.path.display(),
                t.path.display()
            ),
        )
    }

    /// Writes `regions` (reserved up to `next`) as a complete cache file
    /// and renames it over the cache.
    fn persist(&self, regions: &[Region], next: u64, t: &Tmp) -> Result<()> {
        let fail = |what: &str, e: &io::Error| self.commit_error(what, t, e);
        let mut records = Vec::with_capacity(regions.len());
        for r in regions {
            if let Memory::File(m) = &r.memory {
                m.flush().map_err(|e| fail("syncing", &e))?;
            }
            records.push(Record {
                name: r.name.clone(),
                offset: r.offset,
                size: r.size as u64,
                crc: format::crc(r.frozen_bytes()),
            });
        }
        let index = format::encode_index(&records);
        let index_offset = next.div_ceil(8) * 8;
        let file_len = index_offset + index.len() as u64;
        let header = format::encode_header(
            &self.identity,
            index_offset,
            &index,
            records.len() as u64,
            file_len,
        );
        t.file
            .set_len(file_len)
            .and_then(|_| sys::write_all_at(&t.file, &index, index_offset))
            .and_then(|_| sys::write_all_at(&t.file, &header, 0))
            .and_then(|_| t.file.sync_all())
            .map_err(|e| fail("writing", &e))?;
        std::fs::rename(&t.path, &self.path).map_err(|e| fail("renaming", &e))?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Builder {
    fn empty() -> Builder {
        Builder {
            tmp: None,
            heap_reason: None,
            next: 0,
            regions: Vec::new(),
            names: HashMap::new(),
            committed: false,
        }
    }
}

/// `<cache>.tmp-<pid>-<n>` beside the cache, created exclusively.
fn create_temporary(path: &Path) -> io::Result<Tmp> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        "{name}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    Ok(Tmp { path: tmp, file })
}

/// Extends the temporary file to hold `[offset, offset+size)` with blocks
/// allocated (so a full disk is an error now, not a SIGBUS while packing)
/// and maps that range read-write. The temporary file's name is unique and
/// nobody else opens it, and it is never shrunk while mapped.
fn map_region(file: &File, offset: u64, size: usize) -> io::Result<MmapRaw> {
    sys::allocate(file, offset, size as u64)?;
    sys::map_shared_writable(file, offset, size)
}

/// An error if `path` exists and is not a regular file (a FIFO, a device,
/// a folder): opening a FIFO would block, and a commit would rename over
/// whatever it is.
fn refuse_non_regular(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let what = crate::source::describe(&meta);
            Err(err(
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

/// Removes temporary files of this cache left by processes that died.
fn remove_stale_temporaries(path: &Path) {
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
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !sys::process_exists(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
