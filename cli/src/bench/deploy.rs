//! The load where deployments run (docs/WEIGHTS-SPEED.md, "What each costs
//! and wins"): a file in memory (tmpfs), a FUSE volume that answers each
//! request after 1 ms (`bench/slowfs.c`, as a network volume does), a disk
//! throttled to 125 MB/s and a memory cgroup half the file's size (cgroup
//! v1, as root). Each case runs where this machine can and says why not
//! where it cannot. Bytes read from storage come from `/proc/self/io`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use om_constants::Choice;
use serde_json::{json, Value};

use super::steady::{self, Way};
use crate::pass::sum;

/// Runs of the FUSE comparison (interleaved; medians).
const FUSE_RUNS: usize = 3;
/// The FUSE volume's delay per read request.
const FUSE_DELAY_US: u32 = 1000;
/// Threads of the parallel `pread` baseline: the library's default.
const PREAD_THREADS: usize = 8;
/// The throttled disk's bandwidth (a cloud network disk's baseline).
const THROTTLE_BPS: u64 = 125_000_000;

/// One load in one case.
pub(super) struct Row {
    case: &'static str,
    way: String,
    load_call: Duration,
    load_first: Duration,
    /// Until the library's helper was done (after the first pass).
    settled: Duration,
    /// A second sequential pass, as every inference after the first.
    pass: Duration,
    read_mib: f64,
    huge_share: f64,
    note: String,
}

/// The FUSE volume against a parallel `pread` of the same file (medians).
pub(super) struct Fuse {
    pread: Duration,
    om_auto: Duration,
    plain_mmap_first: Duration,
}

impl Fuse {
    /// The library's `auto` load's speed / the parallel `pread`'s.
    pub(super) fn vs_pread(&self) -> f64 {
        self.pread.as_secs_f64() / self.om_auto.as_secs_f64()
    }
}

/// One case: it adds its rows, or says why it cannot run here.
type Case = fn(&Path, usize, &mut Deploy) -> Result<(), String>;

/// The section's figures.
pub(super) struct Deploy {
    pub rows: Vec<Row>,
    pub fuse: Option<Fuse>,
    pub skipped: Vec<(&'static str, String)>,
}

/// Every case this machine can run, on files of `size` bytes in `dir`.
pub(super) fn measure(dir: &Path, size: usize) -> Deploy {
    let mut d = Deploy {
        rows: Vec::new(),
        fuse: None,
        skipped: Vec::new(),
    };
    let cases: [(&'static str, Case); 4] = [
        ("tmpfs (/dev/shm)", tmpfs),
        ("FUSE, 1 ms per request", fuse),
        ("125 MB/s disk, just copied", throttled),
        ("memory cgroup of half the file", memory_limited),
    ];
    for (name, case) in cases {
        eprintln!("bench: where deployments run: {name}");
        if let Err(why) = case(dir, size, &mut d) {
            d.skipped.push((name, why));
        }
    }
    d
}

fn tmpfs(_dir: &Path, size: usize, d: &mut Deploy) -> Result<(), String> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return Err("no /dev/shm".into());
    }
    let path = shm.join(format!("om-constants-bench-{}.bin", std::process::id()));
    for way in [Way::PlainMmap, Way::Om(Choice::Auto), Way::OmReread] {
        steady::write_in_pieces(&path, size)?;
        let row = one("tmpfs (/dev/shm)", &path, size, way);
        d.rows.push(row?);
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn throttled(dir: &Path, size: usize, d: &mut Deploy) -> Result<(), String> {
    let path = dir.join(format!(
        "om-constants-bench-{}.slow.bin",
        std::process::id()
    ));
    let dev = disk_of(dir)?;
    for way in [Way::PlainMmap, Way::Om(Choice::Auto), Way::OmReread] {
        steady::write_in_pieces(&path, size)?;
        steady::write_back(&path)?;
        let cg = Cgroup::enter(
            "blkio",
            &[
                (
                    "blkio.throttle.read_bps_device",
                    format!("{dev} {THROTTLE_BPS}"),
                ),
                (
                    "blkio.throttle.write_bps_device",
                    format!("{dev} {THROTTLE_BPS}"),
                ),
            ],
        )?;
        let row = one("125 MB/s disk, just copied", &path, size, way);
        drop(cg);
        d.rows.push(row?);
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn memory_limited(dir: &Path, size: usize, d: &mut Deploy) -> Result<(), String> {
    let path = dir.join(format!("om-constants-bench-{}.mem.bin", std::process::id()));
    let limit = (size / 2).max(16 << 20);
    for way in [Way::PlainMmap, Way::Om(Choice::Auto), Way::OmReread] {
        steady::write_in_pieces(&path, size)?;
        steady::write_back(&path)?;
        let cg = Cgroup::enter("memory", &[("memory.limit_in_bytes", limit.to_string())])?;
        let row = one("memory cgroup of half the file", &path, size, way);
        drop(cg);
        d.rows.push(row?);
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Loads `path` by `way`: the load call, the first pass, the helper's
/// outcome, one more pass, and what was read from storage meanwhile.
fn one(case: &'static str, path: &Path, size: usize, way: Way) -> Result<Row, String> {
    let io = read_bytes();
    let t = Instant::now();
    let loaded = steady::load(path, size, u64::MAX, way)?;
    let load_call = t.elapsed();
    let p = loaded.ptr();
    // SAFETY: `size` readable bytes at `p`, alive while `loaded` is.
    let first = unsafe { sum(p, size) };
    let load_first = t.elapsed();
    let note = loaded.settle().unwrap_or_default();
    let settled = t.elapsed();
    let t = Instant::now();
    // SAFETY: as above.
    let again = unsafe { sum(p, size) };
    let pass = t.elapsed();
    if first != again {
        return Err(format!("{case}: two passes over one buffer differ"));
    }
    let huge_share = steady::share_in_huge_pages(p, size);
    drop(loaded);
    Ok(Row {
        case,
        way: way.name(),
        load_call,
        load_first,
        settled,
        pass,
        read_mib: read_bytes().saturating_sub(io) as f64 / (1 << 20) as f64,
        huge_share,
        note,
    })
}

/// `read_bytes` of `/proc/self/io`: what this process read from storage.
fn read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("read_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `MAJOR:0` of the whole disk the folder `dir` is on (the throttle's key).
fn disk_of(dir: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).map_err(|e| e.to_string())?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    if major == 0 {
        return Err(format!(
            "{} is not on a disk (device 0:{minor})",
            dir.display()
        ));
    }
    let sys = format!("/sys/dev/block/{major}:{minor}/partition");
    if Path::new(&sys).exists() {
        return Err(format!(
            "{} is on partition {major}:{minor}; the throttle needs a whole disk",
            dir.display()
        ));
    }
    Ok(format!("{major}:{minor}"))
}

/// This process inside a cgroup v1 of its own, with `settings`, until drop.
struct Cgroup {
    root: PathBuf,
    dir: PathBuf,
}

impl Cgroup {
    fn enter(controller: &str, settings: &[(&str, String)]) -> Result<Cgroup, String> {
        let root = Path::new("/sys/fs/cgroup").join(controller);
        if !root.join("cgroup.procs").exists() {
            return Err(format!(
                "no cgroup v1 {controller} controller at {}",
                root.display()
            ));
        }
        let dir = root.join(format!("om-constants-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot make {} (needs root): {e}", dir.display()))?;
        let cg = Cgroup { root, dir };
        for (file, value) in settings {
            std::fs::write(cg.dir.join(file), value)
                .map_err(|e| format!("cannot set {file} to {value}: {e}"))?;
        }
        std::fs::write(cg.dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot enter {}: {e}", cg.dir.display()))?;
        Ok(cg)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.root.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn fuse(dir: &Path, size: usize, d: &mut Deploy) -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/slowfs.c");
    if !src.exists() {
        return Err(format!(
            "{} is not here (run the bench from the source tree)",
            src.display()
        ));
    }
    let base = dir.join(format!("om-constants-bench-fuse-{}", std::process::id()));
    let (backing, mnt) = (base.join("backing"), base.join("mnt"));
    std::fs::create_dir_all(&backing).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let result = (|| -> Result<Fuse, String> {
        let exe = build_slowfs(&src, &base)?;
        steady::write_in_pieces(&backing.join("m.bin"), size)?;
        let server = Server::mount(&exe, &backing, &mnt)?;
        let file = mnt.join("m.bin");
        let (mut pread, mut om, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..FUSE_RUNS {
            steady::drop_cache(&file)?;
            pread.push(parallel_pread(&file, size)?);
            steady::drop_cache(&file)?;
            let t = Instant::now();
            let loaded = steady::load(&file, size, u64::MAX, Way::Om(Choice::Auto))?;
            om.push(t.elapsed());
            drop(loaded);
            steady::drop_cache(&file)?;
            let t = Instant::now();
            let loaded = steady::load(&file, size, u64::MAX, Way::PlainMmap)?;
            // SAFETY: `size` readable bytes, alive while `loaded` is.
            std::hint::black_box(unsafe { sum(loaded.ptr(), size) });
            plain.push(t.elapsed());
        }
        drop(server);
        Ok(Fuse {
            pread: median(pread),
            om_auto: median(om),
            plain_mmap_first: median(plain),
        })
    })();
    let _ = std::fs::remove_dir_all(&base);
    d.fuse = Some(result?);
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `PREAD_THREADS` threads reading their share of `path` in 8 MiB `pread`s.
fn parallel_pread(path: &Path, size: usize) -> Result<Duration, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; size];
    let per = size.div_ceil(PREAD_THREADS);
    let t = Instant::now();
    std::thread::scope(|s| {
        for (i, part) in buf.chunks_mut(per).enumerate() {
            let f = &f;
            s.spawn(move || {
                let mut done = 0;
                while done < part.len() {
                    let end = (done + (8 << 20)).min(part.len());
                    match f.read_at(&mut part[done..end], (i * per + done) as u64) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => done += n,
                    }
                }
            });
        }
    });
    let took = t.elapsed();
    std::hint::black_box(&buf);
    Ok(took)
}

fn build_slowfs(src: &Path, dir: &Path) -> Result<PathBuf, String> {
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "fuse3"])
        .output()
        .map_err(|e| format!("pkg-config: {e}"))?;
    if !flags.status.success() {
        return Err("libfuse 3 is not installed (pkg-config fuse3; Debian: libfuse3-dev)".into());
    }
    let out = dir.join("slowfs");
    let o = Command::new("cc")
        .arg("-O2")
        .arg(src)
        .args(String::from_utf8_lossy(&flags.stdout).split_whitespace())
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "cannot build slowfs: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

/// A mounted slowfs, unmounted on drop.
struct Server {
    child: Child,
    mnt: PathBuf,
}

impl Server {
    fn mount(exe: &Path, backing: &Path, mnt: &Path) -> Result<Server, String> {
        let child = Command::new(exe)
            .arg(backing)
            .arg(mnt)
            .arg(FUSE_DELAY_US.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let server = Server {
            child,
            mnt: mnt.to_path_buf(),
        };
        let shown = mnt.display().to_string();
        for _ in 0..500 {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            if mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(shown.as_str()))
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("slowfs did not mount {shown} (needs root)"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Deploy {
    pub(super) fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "Where deployments run (load call, load + first pass, until the library's helper is done, one more pass; MiB read from storage):");
        let _ = writeln!(
            out,
            "{:<32} {:<32} {:>10} {:>12} {:>12} {:>10} {:>9} {:>7}",
            "case",
            "way",
            "load (ms)",
            "+1st (ms)",
            "settled (ms)",
            "pass (ms)",
            "read MiB",
            "2 MiB"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<32} {:<32} {:>10.2} {:>12.1} {:>12.1} {:>10.1} {:>9.1} {:>6.0}%",
                r.case,
                r.way,
                ms(r.load_call),
                ms(r.load_first),
                ms(r.settled),
                ms(r.pass),
                r.read_mib,
                r.huge_share * 100.0
            );
            if !r.note.is_empty() {
                let _ = writeln!(out, "    {}", r.note);
            }
        }
        if let Some(f) = &self.fuse {
            let _ = writeln!(
                out,
                "FUSE, {FUSE_DELAY_US} us per request (median of {FUSE_RUNS}): parallel pread \
                 ({PREAD_THREADS} threads) {:.1} ms, om auto {:.1} ms ({:.2}x the pread's \
                 speed), plain mmap + first pass {:.1} ms",
                ms(f.pread),
                ms(f.om_auto),
                f.vs_pread(),
                ms(f.plain_mmap_first)
            );
        }
        for (case, why) in &self.skipped {
            let _ = writeln!(out, "  skipped {case}: {why}");
        }
        out
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "rows": self.rows.iter().map(|r| json!({
                "case": r.case,
                "way": r.way,
                "load_call_ms": ms(r.load_call),
                "load_first_pass_ms": ms(r.load_first),
                "settled_ms": ms(r.settled),
                "pass_ms": ms(r.pass),
                "read_mib": r.read_mib,
                "huge_page_share": r.huge_share,
                "note": r.note,
            })).collect::<Vec<_>>(),
            "fuse": self.fuse.as_ref().map(|f| json!({
                "delay_us": FUSE_DELAY_US,
                "parallel_pread_ms": ms(f.pread),
                "om_auto_ms": ms(f.om_auto),
                "om_auto_vs_pread_speed": f.vs_pread(),
                "plain_mmap_first_pass_ms": ms(f.plain_mmap_first),
            })),
            "skipped": self.skipped.iter().map(|(c, w)| json!({"case": c, "why": w})).collect::<Vec<_>>(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
