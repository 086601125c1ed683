//! A constants file that changes while a model has it loaded.
//!
//! Replacing the file by rename (write a new file, rename it over the old
//! name) is the safe way: a loaded buffer keeps the old file's bytes, and
//! the next load of the name gets the new file. Rewriting or truncating in
//! place is not safe for mappings (reads past the new end raise SIGBUS; see
//! docs/SEMANTICS.md), but the `read` strategy holds a private copy and is immune.

mod common;

use std::os::raw::c_void;
use std::sync::atomic::AtomicPtr;

use common::{assert_pattern, name, Scratch, HOST_IS_LE};
use om_constants::{Choice, Config, Registry, Request};

fn registry(strategy: Choice) -> Registry {
    Registry::new(Config {
        strategy,
        log: om_constants::log::Level::Off,
        ..Config::default()
    })
}

// POSIX: a rename replaces a file that is open and mapped. Windows refuses
// that (below).
#[cfg(unix)]
#[test]
fn replacing_by_rename_does_not_disturb_a_loaded_model() {
    let size = 3 * 4096 + 5;
    for strategy in [Choice::Mmap, Choice::Read, Choice::ChunkedMmap] {
        let sc = Scratch::new("rename");
        let path = sc.file("c.bin", size);
        let reg = registry(strategy);
        let (old, new) = (
            AtomicPtr::<c_void>::default(),
            AtomicPtr::<c_void>::default(),
        );
        let req = Request::new(name(&path), size as i64, HOST_IS_LE).unwrap();
        let p = reg.acquire(&old, &req).unwrap();

        let tmp = sc.path("c.bin.tmp");
        std::fs::write(&tmp, vec![0xEEu8; size]).unwrap();
        std::fs::rename(&tmp, &path).unwrap();

        assert_pattern(p.cast(), size);
        let q = reg.acquire(&new, &req).unwrap();
        assert_ne!(p, q, "{strategy:?}: a new file is a new buffer");
        // SAFETY: `q` holds `size` bytes while we hold the reference.
        let fresh = unsafe { std::slice::from_raw_parts(q.cast::<u8>(), size) };
        assert!(fresh.iter().all(|b| *b == 0xEE), "{strategy:?}: new bytes");
        assert_pattern(p.cast(), size);
        reg.release(&old).unwrap();
        reg.release(&new).unwrap();
        assert_eq!(reg.stats().live_buffers, 0);
    }
}

#[test]
fn the_read_strategy_is_immune_to_in_place_truncation_and_rewrites() {
    let size = 1 << 20;
    let sc = Scratch::new("truncate");
    let path = sc.file("c.bin", size);
    let reg = registry(Choice::Read);
    let slot = AtomicPtr::<c_void>::default();
    let p = reg
        .acquire(
            &slot,
            &Request::new(name(&path), size as i64, HOST_IS_LE).unwrap(),
        )
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    assert_pattern(p.cast(), size);
    std::fs::write(&path, vec![7u8; size]).unwrap();
    assert_pattern(p.cast(), size);
    reg.release(&slot).unwrap();
}

/// Replaced twice by rename, each version of the same length and with the
/// same (normalised) mtime, as reproducible builds make them. Inode numbers
/// are reused (ext4 hands a new file the number of one freed a moment ago),
/// so (device, inode, length, mtime) alone once named the first version's
/// buffer for a later version. Every acquire must see the latest bytes,
/// whether an older buffer is still held or kept with no reference.
#[cfg(unix)]
#[test]
fn a_replaced_file_is_never_served_from_an_older_version_s_buffer() {
    let size = 64 * 1024;
    let stamp = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for keep in [false, true] {
        let sc = Scratch::new("reuse");
        let path = sc.path("c.bin");
        let reg = Registry::new(Config {
            strategy: Choice::Read,
            keep,
            log: om_constants::log::Level::Off,
            ..Config::default()
        });
        let write_version = |v: u8| {
            let tmp = sc.path("c.bin.tmp");
            std::fs::write(&tmp, vec![v; size]).unwrap();
            let f = std::fs::File::options().write(true).open(&tmp).unwrap();
            f.set_modified(stamp).unwrap();
            drop(f);
            std::fs::rename(&tmp, &path).unwrap();
        };
        // The first version stays loaded in one slot (held, or kept).
        write_version(1);
        let first = AtomicPtr::<c_void>::default();
        let req = Request::new(name(&path), size as i64, HOST_IS_LE).unwrap();
        reg.acquire(&first, &req).unwrap();
        if keep {
            reg.release(&first).unwrap();
        }
        for v in 2..=40u8 {
            write_version(v);
            let slot = AtomicPtr::<c_void>::default();
            let p = reg.acquire(&slot, &req).unwrap();
            // SAFETY: we hold a reference on `size` bytes.
            let got = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size) };
            assert!(
                got.iter().all(|b| *b == v),
                "keep={keep}: version {v} served as version {}",
                got[0]
            );
            reg.release(&slot).unwrap();
        }
    }
}

/// Windows refuses to rename over a file that is open or mapped (wine says
/// "Access denied"), so a loaded constants file cannot be replaced. What
/// the library owes there: its last release closes the file and unmaps it,
/// so the replacement then succeeds and the next load serves the new bytes.
/// (Should a Windows version accept the rename, the loaded buffer must
/// still hold the old bytes.)
#[cfg(windows)]
#[test]
fn on_windows_a_loaded_file_is_replaced_after_its_last_release() {
    let size = 3 * 4096 + 5;
    for strategy in [Choice::Mmap, Choice::Read, Choice::ChunkedMmap] {
        let sc = Scratch::new("rename");
        let path = sc.file("c.bin", size);
        let reg = registry(strategy);
        let slot = AtomicPtr::<c_void>::default();
        let req = Request::new(name(&path), size as i64, HOST_IS_LE).unwrap();
        let p = reg.acquire(&slot, &req).unwrap();
        let tmp = sc.path("c.bin.tmp");
        std::fs::write(&tmp, vec![0xEEu8; size]).unwrap();
        let while_loaded = std::fs::rename(&tmp, &path);
        if while_loaded.is_ok() {
            assert_pattern(p.cast(), size);
        }
        reg.release(&slot).unwrap();
        if let Err(e) = while_loaded {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            std::fs::rename(&tmp, &path)
                .unwrap_or_else(|e| panic!("{strategy:?}: still held after release: {e}"));
        }
        let q = reg.acquire(&slot, &req).unwrap();
        // SAFETY: `q` holds `size` bytes while we hold the reference.
        let fresh = unsafe { std::slice::from_raw_parts(q.cast::<u8>(), size) };
        assert!(fresh.iter().all(|b| *b == 0xEE), "{strategy:?}: new bytes");
        reg.release(&slot).unwrap();
        assert_eq!(reg.stats().live_buffers, 0);
    }
}

/// A deployer rewrites the file in place (truncate, then write, as `cp`
/// does) while a C host loads and frees it again and again: no library call
/// dies of SIGBUS (a mapping's pages are read in through calls that report
/// a truncated file), a failed load leaves its slot NULL with a message, and
/// a `read` load returns the bytes of one version, never a mix
/// (`c_tests/rewrite.c`). Each option that reads the file in the load call
/// or on a helper thread is run.
#[cfg(all(target_os = "linux", not(om_cross)))]
#[test]
fn a_file_rewritten_in_place_during_loads_never_crashes_or_mixes_versions() {
    #[path = "common/native.rs"]
    mod native;
    let sc = Scratch::new("rewrite");
    let exe = native::c_program(&sc.dir, "rewrite");
    let size = 8 << 20;
    let path = sc.file("r.bin", size);
    for env in [
        [
            ("OM_CONSTANT_LOAD", "mmap"),
            ("OM_CONSTANT_LOG", "off"),
            ("OM_CONSTANT_PREFETCH", "populate"),
        ],
        [
            ("OM_CONSTANT_LOAD", "mmap"),
            ("OM_CONSTANT_LOG", "off"),
            ("OM_CONSTANT_PREFETCH", "background"),
        ],
        [
            ("OM_CONSTANT_LOAD", "mmap"),
            ("OM_CONSTANT_LOG", "off"),
            ("OM_CONSTANT_HUGE_PAGES", "reread"),
        ],
        [
            ("OM_CONSTANT_LOAD", "read"),
            ("OM_CONSTANT_LOG", "off"),
            ("OM_CONSTANT_PREFETCH", "none"),
        ],
    ] {
        let o = native::run(
            &exe,
            &[path.to_str().unwrap(), &size.to_string(), "400"],
            &env,
        );
        let out = format!(
            "{env:?}: {:?}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{out}");
        assert!(out.contains("mixed=0"), "{out}");
    }
}
