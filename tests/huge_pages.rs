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

/// Loads `path` in this process with `mode`, waits for the 2 MiB-page
/// helper, reads every page, and returns (FilePmdMapped of the mapping,
/// the library's huge_page_bytes, the smaps entry, the helper's note).
fn load_here(path: &Path, mode: HugePages) -> (u64, u64, String) {
    let (pmd, stats, entry, _) = load_and_report(path, mode);
    (pmd, stats, entry)
}

fn load_and_report(path: &Path, mode: HugePages) -> (u64, u64, String, Option<String>) {
    let reg = registry(mode);
    let slot = Box::leak(Box::new(AtomicPtr::new(std::ptr::null_mut())));
    let req = Request::new(path.as_os_str(), SIZE as i64, HOST_IS_LE).unwrap();
    let p = reg.acquire(slot, &req).unwrap() as *const u8;
    let report = reg
        .page_report(p.cast(), std::time::Duration::from_secs(120))
        .unwrap();
    assert!(report.settled, "the helper did not finish: {report:?}");
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
    (pmd, stats, entry, report.note)
}

fn at_least_90(bytes: u64) -> bool {
    bytes * 10 >= SIZE as u64 * 9
}

/// Bytes of `path` in the page cache now (`mincore` over a mapping of our
/// own, which reads nothing).
fn cached_bytes(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only mapping of a test file nothing truncates.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let mut vec = vec![0u8; m.len().div_ceil(4096)];
    // SAFETY: `m` is a live mapping of len bytes; one byte per page.
    let rc = unsafe { libc::mincore(m.as_ptr() as *mut _, m.len(), vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    vec.iter().filter(|b| **b & 1 != 0).count() as u64 * 4096
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

/// The default never reads or evicts to re-lay a file: a just-written one
/// stays in the small pages it has (this kernel cannot collapse a file's
/// pages in place), and the helper says why and names the fix; `reread`
/// re-lays it, off the load call.
#[test]
fn a_just_written_file_stays_as_it_is_under_the_default_and_is_re_laid_under_reread() {
    require_thp();
    let s = Scratch::new("huge-written");
    let f = s.path("w.bin");
    write_in_pieces(&f, SIZE);
    assert_eq!(Config::default().huge_pages, HugePages::On);
    let (pmd, stats, entry, note) = load_and_report(&f, Config::default().huge_pages);
    assert!(
        pmd * 10 < SIZE as u64,
        "a just-written file stays in small pages under the default (if not, this kernel \
         collapses file pages or lays new writes in 2 MiB folios): {entry}"
    );
    assert_eq!(stats, pmd);
    let note = note.expect("the helper says why the file is in small pages");
    assert!(
        note.contains("stays in small pages") && note.contains("reread"),
        "{note}"
    );
    assert_eq!(cached_bytes(&f), SIZE as u64, "nothing was evicted");
    // `reread` re-lays it once.
    write_in_pieces(&f, SIZE);
    let (pmd, stats, entry, note) = load_and_report(&f, HugePages::Reread);
    assert!(at_least_90(pmd), "after the re-lay: {entry}\n{note:?}");
    assert_eq!(stats, pmd);
    assert!(note.is_some_and(|n| n.contains("re-read in 2 MiB pages")));
}

/// A load call reads nothing the user did not ask for: a cold file with
/// its first bytes in the page cache (a `head`, a checksum of the first
/// block) is left as it was, in every mode, helper included.
#[test]
fn a_partly_cached_file_is_not_read_by_the_load_in_any_mode() {
    require_thp();
    let s = Scratch::new("huge-partly");
    let f = s.path("p.bin");
    write_in_pieces(&f, SIZE);
    for mode in [HugePages::Off, HugePages::On, HugePages::Reread] {
        make_cold(&f);
        let mut head = [0u8; 16384];
        std::io::Read::read_exact(&mut std::fs::File::open(&f).unwrap(), &mut head).unwrap();
        let before = cached_bytes(&f);
        assert!(
            before < SIZE as u64 / 8,
            "{before} bytes cached after a 16 KiB read"
        );
        let reg = registry(mode);
        let slot = Box::leak(Box::new(AtomicPtr::new(std::ptr::null_mut())));
        let req = Request::new(f.as_os_str(), SIZE as i64, HOST_IS_LE).unwrap();
        let p = reg.acquire(slot, &req).unwrap();
        let report = reg
            .page_report(p, std::time::Duration::from_secs(120))
            .unwrap();
        assert!(report.settled);
        assert_eq!(
            cached_bytes(&f),
            before,
            "{mode:?}: the load read the file ({report:?})"
        );
        reg.release(slot).unwrap();
    }
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
    let mut cmd = native::command(exe);
    cmd.arg(file).arg(SIZE.to_string());
    if mode == "reread" {
        // The re-lay runs after the load returns: wait for its outcome.
        cmd.arg("until-huge");
    }
    let mut child = cmd
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
    let (pmd, _, _, note) = load_and_report(&f, HugePages::Reread);
    let after = other.entry();
    assert_eq!(field(&after, "Rss"), before, "still all mapped: {after}");
    assert!(
        pmd * 10 < SIZE as u64,
        "pages another process maps stay in the small folios it maps"
    );
    let note = note.unwrap_or_default();
    assert!(note.contains("other processes map them"), "{note}");
    // Never twice: a second load in this process does not try again; it
    // gets the first one's outcome, and the other process keeps its pages.
    let (_, _, _, again) = load_and_report(&f, HugePages::Reread);
    assert_eq!(again.unwrap_or_default(), note);
    assert_eq!(field(&other.entry(), "Rss"), before);
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

/// `om-constants load FILE` with `OM_CONSTANT_HUGE_PAGES=reread` and the
/// `info` log: (exit status, stdout and stderr).
fn tool_load(file: &Path, mode: &str, wrapper: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut cmd = if wrapper.is_empty() {
        native::command(&native::tool_path())
    } else {
        let mut c = std::process::Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(native::tool_path());
        c
    };
    let o = cmd
        .arg("load")
        .arg(file)
        .env("OM_CONSTANT_HUGE_PAGES", mode)
        .env("OM_CONSTANT_LOG", "info")
        .env_remove("OM_CONSTANT_PATH")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// Inside a memory cgroup that cannot hold the file, `reread` never
/// re-reads it (the re-read pages would be charged to the cgroup, which
/// would evict them again for the process's whole life): nothing is
/// evicted, and the load says why. Needs root and cgroup v1's memory
/// controller (as the CI machine has).
#[test]
fn reread_is_refused_in_a_memory_cgroup_that_cannot_hold_the_file() {
    require_thp();
    let root = Path::new("/sys/fs/cgroup/memory");
    assert!(
        root.join("cgroup.procs").exists(),
        "this test needs cgroup v1's memory controller at {} and root",
        root.display()
    );
    let s = Scratch::new("huge-cgroup");
    let f = s.path("g.bin");
    write_in_pieces(&f, SIZE);
    let cg = root.join(format!("om-constants-test-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    std::fs::write(cg.join("memory.limit_in_bytes"), "48M").unwrap();
    let enter = format!("echo $$ > '{}/cgroup.procs' && exec \"$@\"", cg.display());
    let (ok, out) = tool_load(
        &f,
        "reread",
        &["sh".as_ref(), "-c".as_ref(), enter.as_ref(), "sh".as_ref()],
    );
    let _ = std::fs::remove_dir(&cg);
    assert!(ok, "{out}");
    assert!(
        out.contains("memory cgroup has") && out.contains("not re-read"),
        "{out}"
    );
    assert_eq!(cached_bytes(&f), SIZE as u64, "nothing was evicted: {out}");
}

/// A file in memory (`/dev/shm`, tmpfs) is never re-read, and collapsed in
/// place only where the admin allows 2 MiB pages for it (here
/// `shmem_enabled` and the mount's `huge=` say no): the load leaves it as
/// it is and says why.
#[test]
fn a_file_on_tmpfs_is_left_alone_where_the_admin_said_no() {
    require_thp();
    let shmem =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap();
    let f = PathBuf::from(format!(
        "/dev/shm/om-constants-test-{}.bin",
        std::process::id()
    ));
    write_in_pieces(&f, SIZE);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let allows = shmem.contains("[force]")
        || (!shmem.contains("[never]")
            && !shmem.contains("[deny]")
            && mounts.lines().any(|l| {
                l.contains(" /dev/shm ") && l.contains("huge=") && !l.contains("huge=never")
            }));
    assert!(
        !allows,
        "this test needs /dev/shm without 2 MiB pages (shmem_enabled never or deny, or a \
         huge=never mount); here: {shmem}"
    );
    for mode in ["on", "reread"] {
        let (ok, out) = tool_load(&f, mode, &[]);
        assert!(ok, "{out}");
        assert!(out.contains("huge_pages=0.0%"), "{mode}: {out}");
        assert!(
            out.contains("huge pages are off for memory file systems")
                || out.contains("huge=never"),
            "{mode}: {out}"
        );
    }
    std::fs::remove_file(&f).unwrap();
}

/// A loop-mounted file system, unmounted on drop.
struct LoopMount(PathBuf);

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// ext4 mounted `data=journal` has no large folios: `reread` knows it from
/// the mount's options and never evicts (the re-read would come back in
/// small pages at the cost of a read). Needs root, `mkfs.ext4` and loop
/// devices (as the CI machine has).
#[test]
fn reread_is_refused_on_ext4_mounted_data_journal() {
    require_thp();
    let s = Scratch::new("huge-journal");
    let img = s.path("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(SIZE as u64 * 5 / 2)
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .output()
        .expect("mkfs.ext4 runs (Debian's e2fsprogs)");
    assert!(
        mkfs.status.success(),
        "{}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let mnt = s.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-o", "loop,data=journal"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        mount.status.success(),
        "this test needs root and loop devices: {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    let _mounted = LoopMount(mnt.clone());
    let f = mnt.join("j.bin");
    write_in_pieces(&f, SIZE);
    let (ok, out) = tool_load(&f, "reread", &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("mounted data=journal") && out.contains("not re-read"),
        "{out}"
    );
    assert_eq!(cached_bytes(&f), SIZE as u64, "nothing was evicted: {out}");
}
