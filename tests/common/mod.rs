//! Helpers shared by the integration tests: scratch folders and files with
//! known contents.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch folder removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "om-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    /// Writes a file of `len` bytes whose byte i is `pattern(i)`.
    pub fn file(&self, name: &str, len: usize) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, pattern_bytes(len)).expect("write test file");
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test pattern: not periodic at any power of two.
pub fn pattern(i: usize) -> u8 {
    ((i * 131 + i / 4099) % 251) as u8
}

pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(pattern).collect()
}

/// Asserts the `len` bytes at `p` are the pattern.
pub fn assert_pattern(p: *const u8, len: usize) {
    // SAFETY: callers pass a live buffer of at least `len` bytes.
    let got = unsafe { std::slice::from_raw_parts(p, len) };
    let bad = got.iter().enumerate().find(|(i, b)| **b != pattern(*i));
    assert!(bad.is_none(), "byte mismatch at {bad:?}");
}

pub fn name(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

/// xorshift64*: a small deterministic generator (tests print their seed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The `is_le` a model compiled for this machine passes: 1 on a
/// little-endian host, 0 on a big-endian one (s390x).
pub const HOST_IS_LE: i64 = cfg!(target_endian = "little") as i64;

/// Lifts every injected fault and shows that `slot` loads `path` again,
/// with the right bytes, and releases it.
#[cfg(feature = "fault-injection")]
pub fn loads_again(
    reg: &om_constants::Registry,
    slot: &std::sync::atomic::AtomicPtr<std::os::raw::c_void>,
    faults: &om_constants::fault::Injected,
    path: &Path,
    size: usize,
) {
    faults.set(om_constants::fault::Spec::default());
    let req = om_constants::Request::new(name(path), size as i64, HOST_IS_LE).unwrap();
    let p = reg.acquire(slot, &req).unwrap();
    assert_pattern(p.cast(), size);
    reg.release(slot).unwrap();
}

/// A slot that lives as long as the process, as a model's global does:
/// one of a static pool (so LeakSanitizer finds nothing leaked), never
/// handed out twice.
pub fn static_slot() -> &'static std::sync::atomic::AtomicPtr<std::os::raw::c_void> {
    use std::sync::atomic::AtomicPtr;
    const SLOTS: usize = 256;
    static POOL: [AtomicPtr<std::os::raw::c_void>; SLOTS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    POOL.get(i)
        .unwrap_or_else(|| panic!("more than {SLOTS} static slots in one test binary"))
}
