//! Network and user-space file systems (docs/SEMANTICS.md, "Network and
//! user-space file systems"), against a real FUSE file system this test
//! starts itself: `bench/slowfs.c`, which serves a folder with a delay per
//! read request, as a network volume answers, and counts the requests.
//! The state is asserted (the strategy, the requests the volume served),
//! never the time. Needs root, `/dev/fuse` and libfuse 3 (Debian's
//! `libfuse3-dev` and `fuse3`, which scripts/test-all.sh installs).

#![cfg(target_os = "linux")]
// Native builds only: qemu-user cannot mount.
#![cfg(not(om_cross))]

mod common;
#[path = "common/native.rs"]
mod native;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicPtr;

use common::{Scratch, HOST_IS_LE};
use om_constants::config::SearchPath;
use om_constants::{Choice, Config, Registry, Request};

const SIZE: usize = 32 << 20;

/// `bench/slowfs.c`, built with libfuse 3.
fn slowfs(dir: &Path) -> PathBuf {
    let out = dir.join("slowfs");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "fuse3"])
        .output()
        .expect("pkg-config runs");
    assert!(
        flags.status.success(),
        "libfuse 3 is missing (pkg-config fuse3): install libfuse3-dev"
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let o = Command::new("cc")
        .arg("-O2")
        .arg(native::manifest_dir().join("bench/slowfs.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A mounted slowfs: unmounted on `finish`, which returns its counts.
struct Volume {
    server: Child,
    mount: PathBuf,
}

impl Volume {
    fn start(s: &Scratch, backing: &Path, delay_us: u32) -> Volume {
        assert!(
            Path::new("/dev/fuse").exists(),
            "these tests need /dev/fuse (the kernel's FUSE)"
        );
        let mount = s.path("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let mut server = Command::new(slowfs(&s.dir))
            .arg(backing)
            .arg(&mount)
            .arg(delay_us.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The mount shows up as a FUSE file system in /proc/self/mounts.
        let shown = mount.display().to_string();
        for _ in 0..500 {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
            if mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(shown.as_str()))
            {
                return Volume { server, mount };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = server.kill();
        let _ = server.wait();
        panic!("slowfs did not mount {shown} (root and /dev/fuse are needed)");
    }

    /// Unmounts; returns (read requests, bytes served, largest request).
    fn finish(mut self) -> (u64, u64, u64) {
        let o = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mount)
            .output()
            .expect("fusermount3 runs (Debian's fuse3)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut out = String::new();
        self.server
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.server.wait().unwrap();
        let num = |key: &str| -> u64 {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {out:?}"))
        };
        (num("reads="), num("bytes="), num("largest="))
    }
}

fn load(path: &Path, choice: Choice) -> (Registry, Box<AtomicPtr<std::ffi::c_void>>) {
    let reg = Registry::new(Config {
        strategy: choice,
        search_path: SearchPath::Fixed(None),
        log: om_constants::log::Level::Off,
        ..Config::default()
    });
    let slot = Box::new(AtomicPtr::new(std::ptr::null_mut()));
    let req = Request::new(path.as_os_str(), SIZE as i64, HOST_IS_LE).unwrap();
    let p = reg.acquire(&slot, &req).unwrap();
    common::assert_pattern(p as *const u8, SIZE);
    (reg, slot)
}

/// `auto` reads a file on a network or user-space volume into memory in
/// large parallel requests: the volume serves each byte once, in requests
/// of 128 KiB or more, and nothing faults in page by page afterwards.
#[test]
fn auto_reads_a_file_on_a_fuse_volume_in_large_requests() {
    let s = Scratch::new("fuse-auto");
    let backing = s.path("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::write(backing.join("m.bin"), common::pattern_bytes(SIZE)).unwrap();
    let v = Volume::start(&s, &backing, 500);
    let (reg, slot) = load(&v.mount.join("m.bin"), Choice::Auto);
    let st = reg.stats();
    assert_eq!((st.read.loads, st.mmap.loads), (1, 0), "auto read the file");
    assert_eq!(st.bytes_read, SIZE as u64);
    reg.release(&slot).unwrap();
    let (reads, bytes, largest) = v.finish();
    assert!(bytes >= SIZE as u64, "served {bytes} of {SIZE} bytes");
    assert!(largest >= 128 << 10, "largest request {largest} bytes");
    assert!(
        reads <= (SIZE as u64 / (128 << 10)) * 2,
        "{reads} requests for {SIZE} bytes: not large ones"
    );
}

/// `OM_CONSTANT_LOAD=mmap` (the documented way to share one copy between
/// processes on such a volume) still maps it.
#[test]
fn mmap_still_maps_a_file_on_a_fuse_volume_when_asked() {
    let s = Scratch::new("fuse-mmap");
    let backing = s.path("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::write(backing.join("m.bin"), common::pattern_bytes(SIZE)).unwrap();
    let v = Volume::start(&s, &backing, 0);
    let (reg, slot) = load(&v.mount.join("m.bin"), Choice::Mmap);
    let st = reg.stats();
    assert_eq!((st.read.loads, st.mmap.loads), (0, 1));
    reg.release(&slot).unwrap();
    let (_, bytes, _) = v.finish();
    assert!(bytes >= SIZE as u64);
}
