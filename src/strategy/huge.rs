//! Putting a mapping's weights in 2 MiB pages, off the load call
//! (docs/WEIGHTS-SPEED.md).
//!
//! Every inference reads the weights through the buffer, so how it is
//! backed matters for the life of the process. The kernel maps a file's
//! page cache with 2 MiB entries where the range is 2 MiB-aligned and
//! advised before its first fault (`mapping.rs` makes it so) and the
//! file's folios are 2 MiB: a cold file then faults in as 2 MiB folios.
//! What is already in the page cache keeps its folios, which are small
//! after a file was written in small pieces or copied.
//!
//! The load call never reads the file for this: once the pointer is made
//! (addresses never change), a helper thread looks at what is in memory,
//! one 2 MiB block at a time. Blocks wholly in the page cache are mapped
//! (no I/O) and, where they are in small pages, collapsed in place
//! (`MADV_COLLAPSE`) where the kernel can and the admin allows. Under
//! `reread` only, blocks still small are written back, evicted and read
//! again in 2 MiB folios, never where that costs what the process may not
//! have (a memory cgroup that cannot hold them, a file system without
//! large folios, a network volume), and never twice for one file. Its
//! findings go to the `info` log and to [`Settling`], and are remembered:
//! a later load of the same unchanged file starts no thread.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::HugePages;
use crate::log::{self, Level};
use crate::source::{FileKey, Source};
use crate::sys::{self, Volume, HUGE_PAGE};

/// The share of a buffer in 2 MiB pages that counts as done: the tail of a
/// file that is not a multiple of 2 MiB, and little else, stays small.
const ENOUGH: f64 = 0.9;

/// What the helper found and did for one buffer, for whoever asks
/// (`Registry::huge_page_note`); empty until it is done.
#[derive(Debug, Default)]
pub(crate) struct Settling {
    done: Mutex<Option<Option<String>>>,
    ready: Condvar,
}

impl Settling {
    /// Done, with nothing to say (a buffer no helper looks at).
    pub(super) fn finish_now(&self) {
        self.finish(None);
    }

    fn finish(&self, note: Option<String>) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(note);
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for the helper; then its note (`Some(None)`:
    /// done, nothing to say), or `None` if it is still at work.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Option<String>> {
        let guard = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .ready
            .wait_timeout_while(guard, timeout, |d| d.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }
}

/// The helper's work for one buffer (`helper.rs`): told to stop on drop,
/// never waited for, and taken off the queue if it has not started. The
/// job owns what it uses (the memory's `Arc`, its flag, a copy of the
/// file): the memory goes when the buffer and the job have both let go.
pub(super) struct Settler {
    stop: Arc<AtomicBool>,
    _ticket: crate::helper::Ticket,
}

impl Drop for Settler {
    fn drop(&mut self) {
        // Before the ticket (fields drop after this), so a job already
        // running sees it.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What [`start`] leaves: the helper, if one runs, and a line for the
/// `info` log known at once.
pub(super) struct Started {
    pub settler: Option<Settler>,
    pub note: Option<String>,
}

/// Starts the helper for the fresh mapping `[ptr, ptr+len)` of `source`
/// (made aligned and advised when `mode` wants huge pages). Cheap: reads a
/// setting and queues a job for the helper thread; the helper keeps `keep` (the owner of the
/// mapping) alive until it ends, and writes its outcome to `settling`.
pub(super) fn start<K: Send + Sync + 'static>(
    source: &Source,
    ptr: *mut u8,
    len: usize,
    mode: HugePages,
    settling: &Arc<Settling>,
    log: Level,
    keep: Arc<K>,
) -> Started {
    let idle = |note: Option<String>| {
        settling.finish(note.clone());
        Started {
            settler: None,
            note,
        }
    };
    if !mode.wanted() || len < HUGE_PAGE {
        return idle(None);
    }
    let name = source.path.display();
    let Some(thp) = sys::thp_mode() else {
        return idle(Some(format!(
            "{name} is mapped in small pages: this OS gives file mappings no huge pages"
        )));
    };
    if thp == "never" {
        return idle(Some(format!(
            "{name} is mapped in small pages: transparent huge pages are off \
             (/sys/kernel/mm/transparent_hugepage/enabled is 'never'; 'madvise' or 'always' \
             allows them)"
        )));
    }
    let key = source.key();
    if let Some(note) = settled_before(key, mode) {
        // This file, unchanged, was looked at in this process: the same
        // outcome, and no thread (its line was logged then).
        settling.finish(note);
        return Started {
            settler: None,
            note: None,
        };
    }
    let Ok(file) = source.file.try_clone() else {
        return idle(None);
    };
    let job = Job {
        file,
        path: source.path.clone(),
        addr: ptr as usize,
        len,
        mode,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let out = Arc::clone(settling);
    let ticket = crate::helper::queue(move || {
        let note = job.run(&flag);
        if !flag.load(Ordering::Relaxed) {
            remember(key, mode, note.clone());
        }
        out.finish(note.clone());
        // The last reference may be this one: the memory goes here, before
        // a release waiting for this job returns.
        drop(keep);
        // Written once nobody waits for this job, with no lock held.
        note.map(|n| Box::new(move || log::emit(log, Level::Info, &n)) as crate::helper::Afterwards)
    });
    match ticket {
        Some(ticket) => Started {
            settler: Some(Settler {
                stop,
                _ticket: ticket,
            }),
            note: None,
        },
        None => idle(None),
    }
}

/// Everything the helper needs, owned.
struct Job {
    file: File,
    path: PathBuf,
    addr: usize,
    len: usize,
    mode: HugePages,
}

/// Outcomes of the files this process's helpers finished, by identity
/// (which changes with any write) and mode, newest last.
type Outcomes = Vec<(FileKey, HugePages, Option<String>)>;
static SETTLED: Mutex<Outcomes> = Mutex::new(Vec::new());
/// How many outcomes are remembered.
const REMEMBERED: usize = 256;

fn settled_before(key: FileKey, mode: HugePages) -> Option<Option<String>> {
    let done = SETTLED.lock().unwrap_or_else(PoisonError::into_inner);
    done.iter()
        .rev()
        .find(|(k, m, _)| *k == key && *m == mode)
        .map(|(_, _, note)| note.clone())
}

fn remember(key: FileKey, mode: HugePages, note: Option<String>) {
    let mut done = SETTLED.lock().unwrap_or_else(PoisonError::into_inner);
    if done.len() >= REMEMBERED {
        done.remove(0);
    }
    done.push((key, mode, note));
}

/// Files re-laid by this process (device, inode): never twice.
static RE_LAID: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

impl Job {
    fn block(&self, b: usize) -> *mut u8 {
        (self.addr + b * HUGE_PAGE) as *mut u8
    }

    fn is_huge(&self, b: usize) -> bool {
        sys::huge_backed_bytes(self.block(b), HUGE_PAGE).unwrap_or(0) >= HUGE_PAGE as u64
    }

    /// Maps block `b` from the page cache (its first page: one fault maps
    /// all of a 2 MiB folio; no I/O when every page of it is in memory).
    /// False where the page cannot be read (the file shrank): never the
    /// `SIGBUS` a plain read would raise.
    fn touch(&self, b: usize) -> bool {
        sys::populate(self.block(b), sys::page_size()).is_ok()
    }

    /// The helper's work; a line for the `info` log, if any.
    fn run(&self, stop: &AtomicBool) -> Option<String> {
        let blocks = self.len / HUGE_PAGE;
        let page = sys::page_size();
        let per_block = HUGE_PAGE / page;
        if sys::cached_pages(&self.file, (blocks * HUGE_PAGE) as u64) == Some(0) {
            return None; // cold: the faults to come read 2 MiB folios
        }
        let resident = sys::resident_map(self.addr as *const u8, blocks * HUGE_PAGE).ok()?;
        // Blocks wholly in the page cache; the rest fault in from the file,
        // in 2 MiB folios where none of it is cached yet.
        let cached: Vec<usize> = (0..blocks)
            .filter(|b| {
                resident[b * per_block..(b + 1) * per_block]
                    .iter()
                    .all(|r| r & 1 != 0)
            })
            .collect();
        let mut small = Vec::new();
        for &b in &cached {
            if stop.load(Ordering::Relaxed) || !self.touch(b) {
                return None;
            }
            if !self.is_huge(b) {
                small.push(b);
            }
        }
        // Nothing to say when what is in memory is (nearly) all in 2 MiB
        // pages already.
        if small.is_empty() || (small.len() as f64) < (1.0 - ENOUGH) * cached.len() as f64 {
            return None;
        }
        let name = self.path.display();
        let before = 100.0 * small.len() as f64 / blocks as f64;
        let volume = sys::volume_of(&self.file);
        let started = Instant::now();
        let refusal = match collapse_allowed(volume, &self.file) {
            Err(why) => why,
            Ok(()) => {
                let mut why = String::new();
                small.retain(|&b| {
                    if stop.load(Ordering::Relaxed) || !why.is_empty() {
                        return true;
                    }
                    match sys::collapse(self.block(b), HUGE_PAGE) {
                        Ok(()) => !self.is_huge(b),
                        Err(e) if e.raw_os_error() == Some(EINVAL) => {
                            why = "this kernel cannot collapse a file's pages in place \
                                   (MADV_COLLAPSE needs CONFIG_READ_ONLY_THP_FOR_FS)"
                                .into();
                            true
                        }
                        Err(_) => true,
                    }
                });
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                if small.is_empty() {
                    return Some(format!(
                        "{name}: {before:.0}% of it was in the page cache in small pages; \
                         collapsed in place (MADV_COLLAPSE, no I/O) in {:.3} s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                if why.is_empty() {
                    format!(
                        "MADV_COLLAPSE left {} MiB small (memory too fragmented, or pages \
                         dirty or locked)",
                        small.len() * 2
                    )
                } else {
                    why
                }
            }
        };
        let small_mib = small.len() * 2;
        if self.mode != HugePages::Reread {
            let fix = match volume {
                Volume::Memory => "",
                _ => {
                    "; OM_CONSTANT_HUGE_PAGES=reread re-reads it once in 2 MiB pages, or run \
                     `om-constants prepare FILE` after copying it"
                }
            };
            return Some(format!(
                "{name}: {small_mib} MiB of it ({before:.0}%) stays in small pages: its page \
                 cache was in small pages (as after it was written in small pieces or copied) \
                 and {refusal}{fix}"
            ));
        }
        match self.re_lay(&small, volume, stop) {
            Ok(None) => None,
            Ok(Some(done)) => Some(format!(
                "{name}: {before:.0}% of it was in the page cache in small pages ({refusal}); \
                 {done} in {:.3} s",
                started.elapsed().as_secs_f64()
            )),
            Err(why) => Some(format!(
                "{name}: {small_mib} MiB of it ({before:.0}%) stays in small pages: {refusal}, \
                 and it is not re-read: {why}"
            )),
        }
    }

    /// `reread`: writes back, evicts and reads again each block of `small`.
    /// `Ok(None)` when told to stop; `Err` with the reason when refused.
    fn re_lay(
        &self,
        small: &[usize],
        volume: Volume,
        stop: &AtomicBool,
    ) -> Result<Option<String>, String> {
        let bytes = (small.len() * HUGE_PAGE) as u64;
        refuse_re_lay(volume, &self.file, bytes)?;
        let id = file_id(&self.file);
        {
            let mut done = RE_LAID.lock().unwrap_or_else(PoisonError::into_inner);
            if done.contains(&id) {
                return Err(
                    "this process re-read it once already, and pages that stayed small \
                            are mapped by other processes"
                        .into(),
                );
            }
            done.push(id);
        }
        let (mut huge, mut kept) = (0usize, 0usize);
        for (i, &b) in small.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let offset = (b * HUGE_PAGE) as u64;
            if let Err(e) = sys::write_back_range(&self.file, offset, HUGE_PAGE) {
                // A read-only file system has nothing to write back.
                if !matches!(e.raw_os_error(), Some(EINVAL | EROFS)) {
                    return Err(format!("writing it back failed: {e}"));
                }
            }
            if let Err(e) = sys::evict_range(&self.file, self.block(b), offset, HUGE_PAGE) {
                return Err(format!("evicting it failed: {e}"));
            }
            if sys::resident_map(self.block(b), HUGE_PAGE)
                .map(|r| r.iter().any(|p| p & 1 != 0))
                .unwrap_or(true)
            {
                // Mapped by another process (or locked): never evicted.
                kept += 1;
                continue;
            }
            if !self.touch(b) {
                return Err("it shrank while it was re-read (rewritten in place?)".into());
            }
            if self.is_huge(b) {
                huge += 1;
            } else if huge == 0 && i == kept {
                return Err(
                    "its file system gives no 2 MiB page-cache folios (2 MiB of it \
                            read again came back in small pages)"
                        .into(),
                );
            }
        }
        let mut done = format!(
            "{} MiB re-read in 2 MiB pages (written back, evicted, read again)",
            huge * 2
        );
        if kept > 0 {
            done.push_str(&format!(
                "; {} MiB stayed in small pages: other processes map them, and pages others \
                 map are never evicted",
                kept * 2
            ));
        }
        Ok(Some(done))
    }
}

/// `Ok` where collapsing in place may run: never where the admin said no.
fn collapse_allowed(volume: Volume, file: &File) -> Result<(), String> {
    if volume != Volume::Memory {
        return Ok(());
    }
    let shmem = sys::shmem_mode().unwrap_or_default();
    if shmem == "deny" || shmem == "never" {
        return Err(format!(
            "huge pages are off for memory file systems \
             (/sys/kernel/mm/transparent_hugepage/shmem_enabled is '{shmem}')"
        ));
    }
    if shmem == "force" {
        return Ok(());
    }
    let mount = sys::mount_of(file_id(file).0);
    let huge = mount
        .as_ref()
        .and_then(|m| m.option("huge"))
        .unwrap_or("never");
    if huge == "never" {
        let at = mount.map_or_else(|| "its".into(), |m| format!("{}", m.point.display()));
        return Err(format!(
            "the tmpfs mount {at} has huge=never (the default); mount it with huge=within_size \
             or huge=always for 2 MiB pages"
        ));
    }
    Ok(())
}

/// `Err` with the reason where re-reading `bytes` of `file` could cost more
/// than it wins.
fn refuse_re_lay(volume: Volume, file: &File, bytes: u64) -> Result<(), String> {
    match volume {
        Volume::Memory => return Err("a file in memory is never re-read".into()),
        Volume::Remote(fs) => {
            return Err(format!(
                "it is on {fs}, where re-reading fetches it again over the wire"
            ))
        }
        Volume::SmallFolios(fs) => {
            return Err(format!("{fs} gives no 2 MiB page-cache folios"));
        }
        Volume::Local => {}
    }
    if let Some(m) = sys::mount_of(file_id(file).0) {
        if m.option("data") == Some("journal") {
            return Err(format!(
                "{} is mounted data=journal, which gives no 2 MiB page-cache folios",
                m.point.display()
            ));
        }
    }
    if let Some(h) = sys::memory_headroom() {
        // Re-read pages are charged to this process's cgroup.
        if h.free() < bytes + bytes / 8 {
            return Err(format!(
                "this process's memory cgroup has {} MiB free of its {} MiB limit, less than \
                 the {} MiB the re-read would charge to it (it would evict the file again and \
                 again); run `om-constants prepare FILE` where memory allows, or raise the limit",
                h.free() >> 20,
                h.limit >> 20,
                bytes >> 20
            ));
        }
    }
    Ok(())
}

/// The file's device and inode (0s where they cannot be read).
fn file_id(file: &File) -> (u64, u64) {
    file.metadata().ok().map_or((0, 0), |m| {
        let s = crate::sys::file_stamp(file, &m).ok();
        s.map_or((0, 0), |s| (s.volume, s.index))
    })
}

// The errors the helper tells apart: the same numbers on Linux on every
// architecture, the only OS it runs on (`start` needs transparent huge
// pages).
const EINVAL: i32 = 22;
const EROFS: i32 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    /// The file systems known to refuse a re-read by their type, before any
    /// memory or mount is looked at (a squashfs image, a network volume,
    /// tmpfs); a local one is judged by its mount and the cgroup.
    #[test]
    fn re_reading_is_refused_by_the_volume_s_kind() {
        let f = File::open(std::env::current_exe().unwrap()).unwrap();
        let why = |v| refuse_re_lay(v, &f, 1 << 20).unwrap_err();
        assert!(why(Volume::SmallFolios("squashfs")).contains("squashfs gives no 2 MiB"));
        assert!(why(Volume::Remote("NFS")).contains("on NFS"));
        assert!(why(Volume::Memory).contains("in memory is never re-read"));
        for (magic, kind) in [
            (0x7371_7368, Volume::SmallFolios("squashfs")),
            (0x6969, Volume::Remote("NFS")),
            (0x6573_5546, Volume::Remote("FUSE")),
            (0x0102_1994, Volume::Memory),
            (0xEF53, Volume::Local),
        ] {
            assert_eq!(Volume::of_magic(magic), kind, "{magic:#x}");
        }
    }
}
