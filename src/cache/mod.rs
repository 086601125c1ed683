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
//!
//! A cache is in one of four states (`CacheState`): complete (a valid file,
//! served as it is), building (entries being reserved and packed),
//! committing (a thread writes the file, holding no lock), or committed
//! (the entries are final for this process, persisted or not).
//! The file mechanics are in `file.rs`, a reserved entry in `region.rs`.

mod file;
pub mod format;
mod region;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memmap2::Mmap;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::strategy::{page_size, HeapBuf};
use file::Tmp;
use format::Record;
use region::{Backing, Region};

/// An open cache (C: `struct om_cache`, opaque).
pub struct Cache {
    path: PathBuf,
    identity: Vec<u8>,
    log: Level,
    state: Mutex<CacheState>,
}

/// Where a cache is in its life.
enum CacheState {
    /// A valid file for this identity, mapped read-only: nothing to pack,
    /// nothing to add.
    Complete {
        map: Mmap,
        entries: HashMap<String, Record>,
    },
    /// Entries being reserved and packed.
    Building(Entries),
    /// A thread is committing: the entries are out of the state while their
    /// pages are synced and the file is written, so that no lock is held
    /// during that I/O. Nothing can be looked up or reserved meanwhile.
    Committing,
    /// The entries are final for this process; `persisted` when they are
    /// in the cache file (false when they live on the heap, or persisting
    /// failed).
    Committed { entries: Entries, persisted: bool },
}

/// The entries of a cache being built.
struct Entries {
    /// The temporary file; None when regions come from the heap.
    tmp: Option<Tmp>,
    /// Why the entries will not be persisted, once they cannot be (the
    /// folder cannot hold the file): commit reports it.
    lost: Option<String>,
    /// Where the next region may start in the file.
    next: u64,
    regions: Vec<Region>,
    names: HashMap<String, usize>,
}

impl Entries {
    fn new(tmp: Option<Tmp>, first: u64) -> Entries {
        Entries {
            tmp,
            lost: None,
            next: first,
            regions: Vec::new(),
            names: HashMap::new(),
        }
    }

    fn lookup(&self, name: &str) -> Option<(*const u8, usize)> {
        let r = &self.regions[*self.names.get(name)?];
        Some((r.ptr() as *const u8, r.size))
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // Unmap the regions before their temporary file goes (Tmp's drop
        // removes it unless it became the cache).
        self.regions.clear();
        self.tmp = None;
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

impl Cache {
    /// Opens the cache at `path` for `identity`: a valid file is mapped and
    /// served; anything else is ignored and a new one starts being built.
    /// From `config`: the log level.
    pub fn open(path: &Path, identity: &[u8], config: &Config) -> Result<Cache> {
        if identity.len() > format::MAX_IDENTITY {
            return Err(invalid(format!(
                "cache identity is {} bytes; at most {} are kept: pass a hash of it",
                identity.len(),
                format::MAX_IDENTITY
            )));
        }
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            return Err(invalid(format!(
                "cache path '{}' names no file",
                path.display()
            )));
        }
        file::refuse_non_regular(path)?;
        file::remove_stale_temporaries(path);
        let note = |level, msg: &str| log::emit(config.log, level, msg);
        let page = page_size();
        let valid = file::open_existing(path).and_then(|map| match map {
            Some(map) => Ok(Some((
                format::validate(&map, identity, page).map_err(file::Refused::Unusable)?,
                map,
            ))),
            None => Ok(None),
        });
        let first = format::data_start(identity.len(), page) as u64;
        let state = match valid {
            Ok(Some((entries, map))) => CacheState::Complete { map, entries },
            Err(file::Refused::Untrusted(why)) => {
                note(
                    Level::Error,
                    &format!(
                        "not trusting cache {}: {why}; another user could have written it. \
                         Building the cache in memory (not saved). Use a cache path in a \
                         folder only this user can write, or remove the file \
                         (docs/CACHE.md, \"Who is trusted\")",
                        path.display()
                    ),
                );
                CacheState::Building(Entries::new(None, first))
            }
            other => {
                if let Err(file::Refused::Unusable(why)) = other {
                    note(
                        Level::Info,
                        &format!("ignoring cache {}: {why}; rebuilding it", path.display()),
                    );
                }
                let mut entries = Entries::new(None, first);
                match Tmp::create(path) {
                    Ok(tmp) => entries.tmp = Some(tmp),
                    Err(e) => {
                        note(Level::Error, &heap_fallback(path, &mut entries, &e));
                    }
                }
                CacheState::Building(entries)
            }
        };
        Ok(Cache {
            path: path.to_path_buf(),
            identity: identity.to_vec(),
            log: config.log,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the cache came valid from its file (nothing to pack).
    pub fn is_complete(&self) -> bool {
        matches!(*self.lock(), CacheState::Complete { .. })
    }

    /// True when committed entries persist in the file (false on the heap).
    pub fn is_persistent(&self) -> bool {
        match &*self.lock() {
            CacheState::Complete { .. } => true,
            CacheState::Building(e) => e.tmp.is_some(),
            CacheState::Committing => false,
            CacheState::Committed { persisted, .. } => *persisted,
        }
    }

    /// A committed entry: its address (read-only) and size, or None.
    pub fn lookup(&self, name: &str) -> Option<(*const u8, usize)> {
        match &*self.lock() {
            CacheState::Complete { map, entries } => entries.get(name).map(|r| {
                // SAFETY: validate() checked offset+size lies inside the map.
                (
                    unsafe { map.as_ptr().add(r.offset as usize) },
                    r.size as usize,
                )
            }),
            CacheState::Building(_) | CacheState::Committing => None,
            CacheState::Committed { entries, .. } => entries.lookup(name),
        }
    }

    /// Reserves a writable, page-aligned region of `size` bytes for `name`
    /// (`align`, a power of two up to the page size, is always met). The
    /// caller packs into it; commit makes it durable.
    pub fn reserve(&self, name: &str, size: u64, align: u64) -> Result<*mut u8> {
        let page = page_size();
        if name.is_empty() || name.len() > 4096 {
            return Err(invalid(
                "a cache entry needs a name of 1 to 4096 bytes".into(),
            ));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "cache entry '{name}': size {size} is not a positive, addressable size"
                ))
            })?;
        if !align.is_power_of_two() || align > page as u64 {
            return Err(invalid(format!(
                "cache entry '{name}': alignment {align} must be a power of two up to the \
                 page size ({page})"
            )));
        }
        let mut note = None;
        let result = match &mut *self.lock() {
            CacheState::Complete { .. } => Err(invalid(format!(
                "cache {} is complete for its identity; entries are added only while \
                 building (a new identity starts a new build)",
                self.path.display()
            ))),
            CacheState::Committing => Err(invalid(format!(
                "cache {} is being committed by another thread",
                self.path.display()
            ))),
            CacheState::Committed { .. } => Err(invalid(format!(
                "cache {} is already committed",
                self.path.display()
            ))),
            CacheState::Building(entries) => self.reserve_in(entries, name, size, &mut note),
        };
        // Logged after the cache's lock is released.
        if let Some(why) = note {
            log::emit(self.log, Level::Error, &why);
        }
        result
    }

    /// Adds the region for `name` to `entries`: in the temporary file, or
    /// on the heap once the file cannot take it (the reason, to log once,
    /// is left in `note`).
    fn reserve_in(
        &self,
        entries: &mut Entries,
        name: &str,
        size: usize,
        note: &mut Option<String>,
    ) -> Result<*mut u8> {
        if entries.names.contains_key(name) {
            return Err(invalid(format!("cache entry '{name}' is reserved twice")));
        }
        let page = page_size() as u64;
        let offset = entries.next.div_ceil(page) * page;
        let mapped = entries.tmp.as_ref().map(|t| t.map_region(offset, size));
        let memory = match mapped {
            Some(Ok(m)) => {
                entries.next = offset + size as u64;
                Backing::File(m)
            }
            // An entry no file there can hold is this call's mistake: it
            // alone fails, and the cache goes on building in its file.
            Some(Err(e)) if self.never_fits(entries, size, &e) => {
                let folder = self.folder();
                if let Some(t) = &entries.tmp {
                    t.shrink_to(entries.next);
                }
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "cache entry '{name}': {size} bytes cannot be held by a file in \
                         {folder} ({e}); this entry is refused, and the cache goes on \
                         building and persists the others; reserve the size the entry needs"
                    ),
                ));
            }
            other => {
                if let Some(Err(e)) = other {
                    *note = Some(heap_fallback(&self.path, entries, &e));
                }
                Backing::Heap(HeapBuf::alloc(size, false).ok_or_else(|| {
                    Error::new(
                        ErrorKind::OutOfMemory,
                        format!("cannot allocate {size} bytes for cache entry '{name}'"),
                    )
                })?)
            }
        };
        entries.regions.push(Region {
            name: name.to_string(),
            offset,
            size,
            memory,
        });
        entries
            .names
            .insert(name.to_string(), entries.regions.len() - 1);
        Ok(entries.regions[entries.regions.len() - 1].ptr())
    }

    /// Makes everything reserved final for this process, and durable where
    /// it can: makes each file region read-only (so the bytes cannot change
    /// under their checksums, even if the caller is still writing: its
    /// write faults), syncs it, writes the index and header, syncs the
    /// file, renames it over the cache, syncs the folder. If persisting
    /// fails, the error says why, the temporary file is removed, the old
    /// cache file, if any, is untouched, and the entries stay usable.
    /// Committing a complete or committed cache does nothing; a commit
    /// while another thread's is under way is an error. The cache's lock is
    /// not held while the pages are synced and the file is written.
    pub fn commit(&self) -> Result<()> {
        let mut entries = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, CacheState::Committing) {
                CacheState::Building(entries) => entries,
                CacheState::Committing => {
                    return Err(invalid(format!(
                        "cache {} is being committed by another thread",
                        self.path.display()
                    )))
                }
                done => {
                    *state = done;
                    return Ok(());
                }
            }
        };
        // Unlocked: the regions turn read-only and the file is written. The
        // entries go back into the state whatever happens, even on a panic
        // (a bug), since C code holds pointers into their regions.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.freeze_and_persist(&mut entries)
        }));
        let (persisted, result) = match done {
            Ok(r) => r,
            Err(panic) => {
                *self.lock() = CacheState::Committed {
                    entries,
                    persisted: false,
                };
                std::panic::resume_unwind(panic);
            }
        };
        *self.lock() = CacheState::Committed { entries, persisted };
        result
    }

    /// Makes the file regions read-only, then persists them if there is a
    /// temporary file; whether the entries persist, and the outcome.
    fn freeze_and_persist(&self, entries: &mut Entries) -> (bool, Result<()>) {
        let frozen = entries.regions.iter().try_for_each(Region::freeze);
        match entries.tmp.take() {
            None => (
                false,
                Err(Error::new(
                    ErrorKind::NotPersisted,
                    format!(
                        "cache {} is not persisted: {}. The entries stay usable in memory for \
                         this process",
                        self.path.display(),
                        entries
                            .lost
                            .as_deref()
                            .unwrap_or("its folder could not hold the file")
                    ),
                )),
            ),
            Some(tmp) => {
                let done = frozen
                    .map_err(|e| self.commit_error("protecting the regions of", &tmp.path, &e))
                    .and_then(|()| self.persist(entries, tmp));
                (done.is_ok(), done)
            }
        }
    }

    fn commit_error(&self, what: &str, tmp: &Path, e: &io::Error) -> Error {
        // Windows refuses to rename over a file that is open or mapped.
        let fix =
            if cfg!(windows) && what == "renaming" && e.kind() == io::ErrorKind::PermissionDenied {
                "; Windows cannot replace a cache file that a handle (of this or another \
             process) has open: close the other handles of this cache, and the next \
             handle to build it persists it"
            } else {
                ""
            };
        Error::new(
            ErrorKind::Io,
            format!(
                "cannot commit cache {} ({what} {}): {e}; the entries stay usable in \
                 memory for this process, and the old cache file, if any, is untouched{fix}",
                self.path.display(),
                tmp.display()
            ),
        )
    }

    /// Writes the frozen regions of `entries` as a complete cache file and
    /// renames `tmp` over the cache; `tmp` is removed if that fails.
    fn persist(&self, entries: &Entries, tmp: Tmp) -> Result<()> {
        let mut records = Vec::with_capacity(entries.regions.len());
        for r in &entries.regions {
            r.sync()
                .map_err(|e| self.commit_error("syncing", &tmp.path, &e))?;
            let bytes = r.frozen_bytes().ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "a heap region in a persisted cache (a bug in om-constants)",
                )
            })?;
            records.push(Record {
                name: r.name.clone(),
                offset: r.offset,
                size: r.size as u64,
                crc: format::crc(bytes),
            });
        }
        let index = format::encode_index(&records);
        let index_offset = entries.next.div_ceil(8) * 8;
        let file_len = index_offset + index.len() as u64;
        let header = format::encode_header(
            &self.identity,
            index_offset,
            &index,
            records.len() as u64,
            file_len,
        );
        let shown = tmp.path.clone();
        tmp.replace(&self.path, index_offset, &index, &header)
            .map_err(|(what, e)| self.commit_error(what, &shown, &e))
    }
}

/// Switches `entries` to heap regions (removing the temporary file);
/// returns the line to log. Called once per cache: at open when no
/// temporary file can be made, or at the first reserve the file refuses;
/// either way there is no temporary file afterwards, so it is not called
/// again.
impl Cache {
    /// The folder of the cache, for messages.
    fn folder(&self) -> String {
        self.path
            .parent()
            .map_or_else(|| ".".into(), |p| p.display().to_string())
    }

    /// True when `size` bytes could never be held by a file in the cache's
    /// folder, whatever is freed: the file system's limits refused it
    /// (`EFBIG`, `EOVERFLOW`, `EINVAL`), or it exceeds the file system's
    /// whole size. A full disk is not that.
    fn never_fits(&self, entries: &Entries, size: usize, e: &io::Error) -> bool {
        if matches!(
            e.raw_os_error(),
            Some(code) if crate::sys::is_size_limit_error(code)
        ) {
            return true;
        }
        let folder = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::sys::file_system_size(folder)
            .is_ok_and(|total| entries.next.saturating_add(size as u64) > total)
    }
}

fn heap_fallback(path: &Path, entries: &mut Entries, e: &io::Error) -> String {
    let folder = path
        .parent()
        .map_or_else(|| ".".into(), |p| p.display().to_string());
    let why = format!(
        "cannot keep the packed-weights cache {} in {folder}: {e}; packed weights stay in \
         memory for this process and are packed again next time (make the folder \
         writable, or free space)",
        path.display()
    );
    entries.tmp = None;
    entries.lost = Some(why.clone());
    why
}
