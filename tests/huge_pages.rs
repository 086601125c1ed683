//! The weights in 2 MiB pages after load (docs/WEIGHTS-SPEED.md): the state
//! is read from /proc (`FilePmdMapped` of the buffer's mapping, `Pss` across
//! processes) and from the library's `huge_page_bytes`; nothing is timed.
//!
//! The page cache's state is made as users make it: a file written in
//! 1 MiB pieces (as a compiler or `cp` writes it) is "just written", in
//! small folios; the same file written back and dropped from the cache is
//! "cold". These tests need what docs/PLATFORMS.md names:
//! Linux with transparent huge pages `madvise` or `always`, and a file
//! system whose page cache has large folios (ext4 and XFS on current
//! kernels); on anything else they fail and say which is missing.

#![cfg(target_os = "linux")]
// Native builds only: qemu-user has no page tables of its own to read.
#![cfg(not(om_cross))]

mod common;
#[path = "common/native.rs"]
mod native;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicPtr, Ordering};

use common::{Scratch, HOST_IS_LE};
use om_constants::config::{HugePages, SearchPath};
use om_constants::{Choice, Config, Registry, Request};

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;

/// Fails, naming what is missing, unless this machine can give file
/// mappings huge pages at all.
fn require_thp() {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .expect("these tests need transparent huge pages (/sys/kernel/mm/transparent_hugepage)");
    assert!(
        !mode.contains("[never]"),
        "transparent huge pages are off ({mode}); these tests need 'madvise' or 'always'"
    );
}

/// Writes `len` bytes of varied data in 1 MiB pieces: the page cache is
/// left in small folios, as after a compile or `cp`.
fn write_in_pieces(path: &Path, len: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut piece = vec![0u8; MIB];
    for i in 0..len / MIB {
        for (j, b) in piece.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
        f.write_all(&piece).unwrap();
    }
}

/// Writes the file back and drops it from the page cache (nobody maps it).
fn make_cold(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a hint about an open file; it changes no memory of ours.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

fn registry(mode: HugePages) -> Registry {
    Registry::new(Config {
        strategy: Choice::Mmap,
        huge_pages: mode,
        search_path: SearchPath::Fixed(None),
        log: om_constants::log::Level::Off,
        ..Config::default()
    })
}

/// A `/proc/PID/smaps` entry: the mapping that contains `addr`.
fn smaps_entry(pid: &str, addr: usize) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some((a, b)) = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
        {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = (a..b).contains(&addr);
                continue;
            }
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !out.is_empty(),
        "no mapping at {addr:#x} in /proc/{pid}/smaps"
    );
    out
}

/// A field of a smaps entry, in bytes (`kB` lines).
fn field(entry: &str, name: &str) -> u64 {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| {
            v.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024
        })
        .unwrap_or_else(|| panic!("no {name} in {entry}"))
}

/// Loads `path` in this process with `mode`, reads every page, and
/// returns (FilePmdMapped of the mapping, the library's huge_page_bytes).
fn load_here(path: &Path, mode: HugePages) -> (u64, u64, String) {
    let reg = registry(mode);
    let slot = Box::leak(Box::new(AtomicPtr::new(std::ptr::null_mut())));
    let req = Request::new(path.as_os_str(), SIZE as i64, HOST_IS_LE).unwrap();
    let p = reg.acquire(slot, &req).unwrap() as *const u8;
    let mut sum = 0u64;
    for off in (0..SIZE).step_by(4096) {
        // SAFETY: the library mapped SIZE readable bytes at p, held until
        // the release below.
        sum += u64::from(unsafe { std::ptr::read_volatile(p.add(off)) });
    }
    std::hint::black_box(sum);
    let entry = smaps_entry("self", p as usize);
    let pmd = field(&entry, "FilePmdMapped");
    let stats = reg.stats().huge_page_bytes;
    reg.release(slot).unwrap();
    slot.store(std::ptr::null_mut(), Ordering::Relaxed);
    (pmd, stats, entry)
}

fn at_least_90(bytes: u64) -> bool {
    bytes * 10 >= SIZE as u64 * 9
}

#[test]
fn a_cold_file_loads_in_2_mib_pages_under_the_default() {
    require_thp();
    let s = Scratch::new("huge-cold");
    let f = s.path("c.bin");
    write_in_pieces(&f, SIZE);
    make_cold(&f);
    let (pmd, stats, entry) = load_here(&f, Config::default().huge_pages);
    assert!(at_least_90(pmd), "FilePmdMapped {pmd} of {SIZE}:\n{entry}");
    assert_eq!(stats, pmd, "the library's count agrees with /proc");
}

#[test]
fn a_just_written_file_is_re_laid_under_the_default_and_left_alone_when_on() {
    require_thp();
    let s = Scratch::new("huge-written");
    let f = s.path("w.bin");
    // `on`: the small folios stay, and the library says so (0 here).
    write_in_pieces(&f, SIZE);
    let (pmd, stats, entry) = load_here(&f, HugePages::On);
    assert!(
        pmd * 10 < SIZE as u64,
        "a just-written file should start in small pages (if not, this kernel lays new \
         writes in 2 MiB folios and the re-lay below proves nothing): {entry}"
    );
    assert_eq!(stats, pmd);
    // The default re-lays it once.
    write_in_pieces(&f, SIZE);
    let (pmd, stats, entry) = load_here(&f, Config::default().huge_pages);
    assert!(at_least_90(pmd), "after the re-lay: {entry}");
    assert_eq!(stats, pmd);
}

#[test]
fn with_huge_pages_off_nothing_changes() {
    require_thp();
    let s = Scratch::new("huge-off");
    let f = s.path("o.bin");
    write_in_pieces(&f, SIZE);
    let (pmd, stats, entry) = load_here(&f, HugePages::Off);
    assert_eq!((pmd, stats), (0, 0), "{entry}");
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap();
    assert!(!flags.contains(" hg"), "not advised: {flags}");
    // Nothing was evicted: still small, and still all in the page cache
    // (a load with `on` maps it at once, without reading the disk).
    let (pmd, _, _) = load_here(&f, HugePages::On);
    assert!(pmd * 10 < SIZE as u64, "the page cache was left as it was");
}

/// `c_tests/hold.c`, built against the library as it ships.
fn hold_program(s: &Scratch) -> PathBuf {
    native::c_program(&s.dir, "hold")
}

/// A process holding `file` loaded with `mode`: its pid and the buffer's
/// address, once it has read every page.
struct Holder {
    child: Child,
    addr: usize,
    huge_stat: u64,
}

fn hold(exe: &Path, file: &Path, mode: &str) -> Holder {
    let mut child = native::command(exe)
        .arg(file)
        .arg(SIZE.to_string())
        .env("OM_CONSTANT_HUGE_PAGES", mode)
        .env("OM_CONSTANT_LOAD", "mmap")
        .env_remove("OM_CONSTANT_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ready"), "hold said {line:?}");
    let addr = usize::from_str_radix(words[1].trim_start_matches("0x"), 16).unwrap();
    Holder {
        child,
        addr,
        huge_stat: words[2].parse().unwrap(),
    }
}

impl Holder {
    fn entry(&self) -> String {
        smaps_entry(&self.child.id().to_string(), self.addr)
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Three worker processes load the same file: one copy in memory between
/// them (their Pss adds up to the file once), each in 2 MiB pages.
#[test]
fn three_processes_share_one_copy_in_2_mib_pages() {
    require_thp();
    let s = Scratch::new("huge-shared");
    let exe = hold_program(&s);
    let f = s.path("s.bin");
    write_in_pieces(&f, SIZE);
    let holders: Vec<Holder> = (0..3).map(|_| hold(&exe, &f, "reread")).collect();
    let mut pss = 0;
    for h in &holders {
        let e = h.entry();
        assert!(at_least_90(field(&e, "FilePmdMapped")), "{e}");
        assert!(
            at_least_90(h.huge_stat),
            "the library's count: {}",
            h.huge_stat
        );
        pss += field(&e, "Pss");
    }
    let size = SIZE as u64;
    assert!(
        pss <= size + size / 10 && pss + size / 10 >= size,
        "Pss of the three mappings {pss}, file {size}: one shared copy"
    );
    holders.into_iter().for_each(Holder::finish);
}

/// A file another process maps (in small pages) is never evicted from
/// under it: a re-laying load leaves those pages mapped where they are.
#[test]
fn a_file_another_process_maps_is_never_evicted_from_under_it() {
    require_thp();
    let s = Scratch::new("huge-mapped");
    let exe = hold_program(&s);
    let f = s.path("m.bin");
    write_in_pieces(&f, SIZE);
    let other = hold(&exe, &f, "off");
    let before = field(&other.entry(), "Rss");
    assert_eq!(before, SIZE as u64, "the other process maps all of it");
    let (pmd, _, _) = load_here(&f, HugePages::Reread);
    let after = other.entry();
    assert_eq!(field(&after, "Rss"), before, "still all mapped: {after}");
    assert!(
        pmd * 10 < SIZE as u64,
        "pages another process maps stay in the small folios it maps"
    );
    other.finish();
}

/// `om-constants prepare FILE`, the deploy step: after it, a worker that
/// never re-reads (`on`) maps the file in 2 MiB pages.
#[test]
fn prepare_re_lays_a_file_ahead_of_time() {
    require_thp();
    let s = Scratch::new("huge-prepare");
    let f = s.path("p.bin");
    write_in_pieces(&f, SIZE);
    let o = native::command(&native::tool_path())
        .arg("prepare")
        .arg(&f)
        .env_remove("OM_CONSTANT_HUGE_PAGES")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("100.0% in 2 MiB pages"), "{out}");
    let (pmd, _, entry) = load_here(&f, HugePages::On);
    assert!(at_least_90(pmd), "{entry}");
}
