//! The packed-weights cache through its Rust API (src/cache): round trip,
//! identity change, every kind of damage, reservation rules, many entries,
//! a > 4 GiB entry, the heap fallback, stale temporary files. (Processes,
//! crashes and races: tests/cache_processes.rs; memory: cache_memory.rs.)

mod common;

use std::path::{Path, PathBuf};

use common::Scratch;
use om_constants::cache::Cache;
use om_constants::{Config, ErrorKind};

fn quiet() -> Config {
    Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    }
}

/// The packing stand-in: entry `i` is `n` bytes of a pattern of `i`.
fn packed(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|k| ((k * 7 + i * 13) % 256) as u8).collect()
}

/// Opens the cache and makes sure entries 0..count exist, packing the
/// missing ones; returns the cache and how many it had to pack.
fn ensure(path: &Path, id: &str, count: usize, size: usize) -> (Cache, usize) {
    let c = Cache::open(path, id.as_bytes(), &quiet()).unwrap();
    let mut packs = 0;
    for i in 0..count {
        if c.lookup(&format!("w{i}")).is_none() {
            let p = c.reserve(&format!("w{i}"), size as u64, 64).unwrap();
            let bytes = packed(i, size);
            // SAFETY: reserve returned `size` writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, size) };
            packs += 1;
        }
    }
    c.commit().unwrap();
    (c, packs)
}

fn check_all(c: &Cache, count: usize, size: usize) {
    for i in 0..count {
        let (p, n) = c.lookup(&format!("w{i}")).expect("entry present");
        assert_eq!(n, size);
        // SAFETY: lookup returned `n` readable bytes, valid while `c` is.
        assert_eq!(
            unsafe { std::slice::from_raw_parts(p, n) },
            &packed(i, size)[..]
        );
    }
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

#[test]
fn round_trip_second_open_packs_nothing_and_writes_nothing() {
    let s = Scratch::new("cache-rt");
    let path = s.path("w.cache");
    let (c, packs) = ensure(&path, "model-a:pack-1", 5, 10_000);
    assert_eq!(packs, 5);
    check_all(&c, 5, 10_000);
    assert!(c.is_persistent());
    drop(c);
    let before = std::fs::metadata(&path).unwrap();
    let (c, packs) = ensure(&path, "model-a:pack-1", 5, 10_000);
    assert_eq!(packs, 0, "second start packs nothing");
    assert!(c.is_complete());
    check_all(&c, 5, 10_000);
    drop(c);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (before.modified().unwrap(), before.len()),
        (after.modified().unwrap(), after.len()),
        "the file was not written"
    );
    assert!(temporaries(&s.dir).is_empty());
}

#[test]
fn another_identity_rebuilds() {
    let s = Scratch::new("cache-id");
    let path = s.path("w.cache");
    ensure(&path, "model-a:pack-1", 3, 5000);
    let (c, packs) = ensure(&path, "model-a:pack-2", 3, 5000);
    assert_eq!(packs, 3, "a new packing version repacks");
    check_all(&c, 3, 5000);
    drop(c);
    let (_, packs) = ensure(&path, "model-a:pack-2", 3, 5000);
    assert_eq!(packs, 0);
}

#[test]
fn every_kind_of_damage_is_detected_and_rebuilt() {
    let s = Scratch::new("cache-damage");
    let path = s.path("w.cache");
    ensure(&path, "id", 3, 6000);
    let good = std::fs::read(&path).unwrap();
    let page = 4096;
    // The index starts where the header's field at byte 24 says.
    let index_at = u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
    assert!(index_at > page && index_at < good.len());
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("flipped byte in the header", Box::new(|f| f[40] ^= 1)),
        ("flipped byte in the identity", Box::new(|f| f[64] ^= 1)),
        (
            "flipped byte in an entry",
            Box::new(move |f| f[page + 100] ^= 0x80),
        ),
        (
            "flipped byte in the index",
            Box::new(move |f| f[index_at + 9] ^= 4),
        ),
        ("truncated file", Box::new(|f| f.truncate(f.len() - 1))),
        ("truncated to the header", Box::new(|f| f.truncate(64))),
        (
            "file of zeros",
            Box::new(|f| f.iter_mut().for_each(|b| *b = 0)),
        ),
        ("empty file", Box::new(|f| f.clear())),
        ("other format version", Box::new(|f| f[8] = 9)),
    ];
    for (what, damage) in damages {
        let mut f = good.clone();
        damage(&mut f);
        std::fs::write(&path, &f).unwrap();
        let c = Cache::open(&path, b"id", &quiet()).unwrap();
        assert!(!c.is_complete(), "{what}: trusted");
        assert!(c.lookup("w0").is_none(), "{what}: served");
        drop(c);
        let (c, packs) = ensure(&path, "id", 3, 6000);
        assert_eq!(packs, 3, "{what}: rebuilt");
        check_all(&c, 3, 6000);
    }
}

#[test]
fn reservations_are_checked() {
    let s = Scratch::new("cache-rules");
    let path = s.path("w.cache");
    let c = Cache::open(&path, b"id", &quiet()).unwrap();
    let kind = |r: om_constants::error::Result<*mut u8>| r.unwrap_err().kind();
    assert_eq!(kind(c.reserve("", 10, 8)), ErrorKind::InvalidArgument);
    assert_eq!(kind(c.reserve("a", 0, 8)), ErrorKind::InvalidArgument);
    assert_eq!(kind(c.reserve("a", 10, 3)), ErrorKind::InvalidArgument);
    assert_eq!(
        kind(c.reserve("a", 10, 1 << 20)),
        ErrorKind::InvalidArgument
    );
    let p = c.reserve("a", 10, 4096).unwrap();
    assert_eq!(p as usize % 4096, 0, "aligned");
    assert_eq!(
        kind(c.reserve("a", 10, 8)),
        ErrorKind::InvalidArgument,
        "twice"
    );
    assert!(c.lookup("a").is_none(), "not visible before commit");
    c.commit().unwrap();
    assert!(c.lookup("a").is_some());
    assert_eq!(
        kind(c.reserve("b", 10, 8)),
        ErrorKind::InvalidArgument,
        "after commit"
    );
    drop(c);
    let c = Cache::open(&path, b"id", &quiet()).unwrap();
    assert!(c.is_complete());
    let e = c.reserve("b", 10, 8).unwrap_err();
    assert!(e.message().contains("complete for its identity"), "{e}");
    assert!(
        Cache::open(&path, &[b'x'; 5000], &quiet()).is_err(),
        "identity too long"
    );
}

#[test]
fn ten_thousand_entries() {
    let s = Scratch::new("cache-many");
    let path = s.path("w.cache");
    let (c, packs) = ensure(&path, "many", 10_000, 100);
    assert_eq!(packs, 10_000);
    drop(c);
    let (c, packs) = ensure(&path, "many", 10_000, 100);
    assert_eq!(packs, 0);
    check_all(&c, 10_000, 100);
}

#[test]
fn an_unwritable_folder_falls_back_to_the_heap_and_commit_says_so() {
    // /proc/self cannot hold files, even for root (the C test drops to
    // nobody for a really read-only folder).
    let path = Path::new("/proc/self/om-constants-test.cache");
    for _ in 0..2 {
        let c = Cache::open(path, b"id", &quiet()).unwrap();
        for i in 0..3 {
            let p = c.reserve(&format!("w{i}"), 5000, 64).unwrap();
            // SAFETY: reserve returned 5000 writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(packed(i, 5000).as_ptr(), p, 5000) };
        }
        let e = c.commit().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotPersisted);
        assert!(e.message().contains("is not persisted"), "{e}");
        assert!(!c.is_persistent());
        check_all(&c, 3, 5000);
        c.commit().unwrap(); // committed already: nothing more to do
    }
}

/// A reserve no file there could hold (1 PiB) is the caller's mistake: that
/// call fails alone, and the cache still persists the other entries (it
/// once went over to the heap for good and persisted nothing).
#[test]
fn an_entry_too_large_for_any_file_fails_alone() {
    let s = Scratch::new("cache-too-large");
    let path = s.path("w.cache");
    let c = Cache::open(&path, b"id", &quiet()).unwrap();
    let a = c.reserve("w0", 5000, 8).unwrap();
    let e = c.reserve("huge", 1 << 50, 8).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("'huge'") && e.message().contains("refused"),
        "{e}"
    );
    let b = c.reserve("w1", 5000, 8).unwrap();
    for (p, i) in [(a, 0), (b, 1)] {
        // SAFETY: reserve returned 5000 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(packed(i, 5000).as_ptr(), p, 5000) };
    }
    c.commit().unwrap();
    assert!(c.is_persistent());
    drop(c);
    let (c, packs) = ensure(&path, "id", 2, 5000);
    assert_eq!(packs, 0, "both entries were persisted");
    assert!(c.lookup("huge").is_none());
}

/// A builder's temporary file is alive while the builder holds its lock:
/// an unlocked one is left over, whatever pid its name shows (even a live
/// one: this process's), and a locked one is kept.
#[test]
fn temporary_files_of_dead_builders_are_removed_and_live_ones_kept() {
    let s = Scratch::new("cache-stale");
    let path = s.path("w.cache");
    let left_over = s.path(&format!("w.cache.tmp-{}-99", std::process::id()));
    std::fs::write(&left_over, b"junk").unwrap();
    let building = Cache::open(&path, b"id", &quiet()).unwrap();
    let p = building.reserve("w0", 5000, 8).unwrap();
    // SAFETY: reserve returned 5000 writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(packed(0, 5000).as_ptr(), p, 5000) };
    assert!(!left_over.exists(), "an unlocked temporary is removed");
    assert_eq!(temporaries(&s.dir).len(), 1, "the live builder's");
    let other = Cache::open(&path, b"id", &quiet()).unwrap();
    assert_eq!(
        temporaries(&s.dir).len(),
        2,
        "a live builder's file is kept"
    );
    drop(other);
    building.commit().unwrap();
    assert!(building.is_persistent());
}

#[test]
fn an_entry_above_4_gib() {
    // The region's blocks are allocated (fallocate: unwritten extents, so
    // no data is written, but 4 GiB of disk is reserved) so that a full
    // disk shows as an error at reserve, not a SIGBUS while packing.
    let s = Scratch::new("cache-big");
    let path = s.path("w.cache");
    let size: u64 = (4 << 30) + 4096;
    let c = Cache::open(&path, b"big", &quiet()).unwrap();
    let p = c.reserve("huge", size, 64).unwrap();
    let marks = [(0u64, 11u8), (1 << 32, 22), (size - 1, 33)];
    for (at, v) in marks {
        // SAFETY: `at` < size, inside the reserved region.
        unsafe { *p.add(at as usize) = v };
    }
    c.commit().unwrap();
    drop(c);
    let c = Cache::open(&path, b"big", &quiet()).unwrap();
    assert!(c.is_complete());
    let (q, n) = c.lookup("huge").unwrap();
    assert_eq!(n as u64, size);
    for (at, v) in marks {
        // SAFETY: `at` < n, inside the looked-up entry.
        assert_eq!(unsafe { *q.add(at as usize) }, v);
    }
}

/// Commit syncs and writes without holding the cache's lock: another
/// thread sees the cache being committed (not persistent yet, a second
/// commit refused) instead of blocking until the I/O is done.
#[test]
fn commit_holds_no_lock_while_it_writes() {
    let s = Scratch::new("cache-committing");
    let path = s.path("w.cache");
    let c = std::sync::Arc::new(Cache::open(&path, b"id", &quiet()).unwrap());
    assert!(c.is_persistent());
    // 64 MiB of dirty pages: their sync takes long enough to be seen.
    let len = 64 << 20;
    let p = c.reserve("big", len as u64, 64).unwrap();
    // SAFETY: reserve returned `len` writable bytes.
    unsafe { std::ptr::write_bytes(p, 7, len) };
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let watcher = {
        let (c, start) = (c.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            // Persistent while building and once committed; not while
            // the entries are out of the state, being written.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if !c.is_persistent() {
                    return Some(c.commit());
                }
                if c.lookup("big").is_some() {
                    return None;
                }
            }
            None
        })
    };
    start.wait();
    c.commit().unwrap();
    let second = watcher
        .join()
        .unwrap()
        .expect("the commit was never seen under way: it held the lock");
    let e = second.unwrap_err();
    assert!(e.message().contains("being committed"), "{e}");
    assert!(c.is_persistent() && c.lookup("big").is_some());
}

/// Who is trusted (docs/CACHE.md): a cache file another user could have
/// written (owned by someone else, writable by group or others, or a
/// symbolic link) is never served; the cache is built in memory, and
/// nothing is written beside the file. Needs root (to give the file away),
/// as the CI machine has.
#[cfg(unix)]
#[test]
fn a_cache_file_another_user_could_have_written_is_never_trusted() {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let s = Scratch::new("cache-trust");
    let good = s.path("good.cache");
    drop(ensure(&good, "id", 3, 5000).0);
    let bytes = std::fs::read(&good).unwrap();
    // A valid file owned by another user (nobody).
    let theirs = s.path("theirs.cache");
    std::fs::write(&theirs, &bytes).unwrap();
    chown(&theirs, Some(65534), Some(65534)).expect("root can give a file away");
    // A valid file of ours that the group may write.
    let group = s.path("group.cache");
    std::fs::write(&group, &bytes).unwrap();
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o664)).unwrap();
    // A symbolic link to a valid cache.
    let link = s.path("link.cache");
    symlink(&good, &link).unwrap();
    for path in [&theirs, &group, &link] {
        let before = temporaries(&s.dir).len();
        let c = Cache::open(path, b"id", &quiet()).unwrap();
        assert!(!c.is_complete(), "{}: served", path.display());
        assert!(!c.is_persistent(), "{}: would be written", path.display());
        assert_eq!(
            temporaries(&s.dir).len(),
            before,
            "nothing written beside it"
        );
        let p = c.reserve("w0", 5000, 64).unwrap();
        // SAFETY: reserve returned 5000 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(packed(0, 5000).as_ptr(), p, 5000) };
        assert_eq!(c.commit().unwrap_err().kind(), ErrorKind::NotPersisted);
        check_all(&c, 1, 5000);
    }
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        bytes,
        "their file untouched"
    );
    // Ours, only ours to write: served.
    let c = Cache::open(&good, b"id", &quiet()).unwrap();
    assert!(c.is_complete());
}

/// Temporary names cannot be guessed ahead (another user creating them
/// would keep the cache from ever being saved): a random part follows the
/// pid (a taken name would be skipped for another).
#[cfg(unix)]
#[test]
fn temporary_names_are_not_predictable() {
    let s = Scratch::new("cache-tmpname");
    let path = s.path("w.cache");
    let names: Vec<String> = (0..2)
        .map(|_| {
            let c = Cache::open(&path, b"id", &quiet()).unwrap();
            let t = temporaries(&s.dir);
            assert_eq!(t.len(), 1);
            let name = t[0].file_name().unwrap().to_string_lossy().to_string();
            drop(c);
            name
        })
        .collect();
    let pid = std::process::id().to_string();
    for n in &names {
        let rest = n.strip_prefix(&format!("w.cache.tmp-{pid}-")).unwrap();
        assert_eq!(rest.len(), 16, "{n}");
        assert!(rest != "0" && rest != "1", "{n}");
    }
    assert_ne!(names[0], names[1]);
    // The guesses an attacker would make (the old counter names) change
    // nothing: the cache still persists.
    for n in 0..16 {
        std::fs::write(s.path(&format!("w.cache.tmp-{pid}-{n}")), b"x").unwrap();
    }
    let (c, _) = ensure(&path, "id", 1, 100);
    assert!(c.is_persistent());
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build (`cargo test --features fault-injection`), never
/// against the library that ships.
#[cfg(feature = "fault-injection")]
mod injected {
    use super::*;
    use om_constants::fault::{self, Spec};

    #[test]
    fn a_full_disk_falls_back_to_the_heap_and_persists_nothing() {
        let faults = fault::inject(Spec::default());
        let s = Scratch::new("cache-full");
        let path = s.path("w.cache");
        let c = Cache::open(&path, b"id", &quiet()).unwrap();
        let a = c.reserve("w0", 5000, 8).unwrap();
        faults.set(Spec {
            disk_full: true,
            ..Spec::default()
        });
        let b = c.reserve("w1", 5000, 8).unwrap();
        for (p, i) in [(a, 0), (b, 1)] {
            // SAFETY: reserve returned 5000 writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(packed(i, 5000).as_ptr(), p, 5000) };
        }
        let e = c.commit().unwrap_err();
        assert!(
            e.message().contains("is not persisted") && e.message().contains("No space"),
            "{e}"
        );
        check_all(&c, 2, 5000);
        assert!(!c.is_persistent());
        drop(c);
        assert!(!path.exists(), "a partial cache is never written");
        assert!(temporaries(&s.dir).is_empty(), "the temporary file is gone");
    }

    #[test]
    fn a_failed_commit_keeps_the_old_cache_and_the_entries_in_memory() {
        // First: faults are process-wide, and another test's must not
        // reach this one's set-up.
        let faults = fault::inject(Spec::default());
        let s = Scratch::new("cache-commit-fails");
        let path = s.path("w.cache");
        ensure(&path, "old", 2, 5000);
        let c = Cache::open(&path, b"new", &quiet()).unwrap();
        for i in 0..2 {
            let p = c.reserve(&format!("w{i}"), 5000, 8).unwrap();
            // SAFETY: reserve returned 5000 writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(packed(i, 5000).as_ptr(), p, 5000) };
        }
        faults.set(Spec {
            disk_full: true,
            ..Spec::default()
        });
        let e = c.commit().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert!(
            e.message().contains("cannot commit") && e.message().contains("No space"),
            "{e}"
        );
        assert!(!c.is_persistent());
        check_all(&c, 2, 5000);
        assert!(
            temporaries(&s.dir).is_empty(),
            "the temporary file is removed at once"
        );
        c.commit().unwrap();
        drop(c);
        let (_, packs) = ensure(&path, "old", 2, 5000);
        assert_eq!(packs, 0, "the old cache is untouched");
    }
}
