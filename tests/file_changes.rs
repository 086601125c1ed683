//! A constants file that changes while a model has it loaded.
//!
//! Replacing the file by rename (write a new file, rename it over the old
//! name) is the safe way: a loaded buffer keeps the old file's bytes, and
//! the next load of the name gets the new file. Rewriting or truncating in
//! place is not safe for mappings (reads past the new end raise SIGBUS; see
//! the README), but the `read` strategy holds a private copy and is immune.

mod common;

use std::os::raw::c_void;
use std::sync::atomic::AtomicPtr;

use common::{assert_pattern, name, Scratch};
use om_constants::{Choice, Config, Registry, Request};

fn registry(strategy: Choice) -> Registry {
    Registry::new(Config {
        strategy,
        log: om_constants::log::Level::Off,
        ..Config::default()
    })
}

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
        let req = Request::new(name(&path), size as i64, 1).unwrap();
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
        .acquire(&slot, &Request::new(name(&path), size as i64, 1).unwrap())
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    assert_pattern(p.cast(), size);
    std::fs::write(&path, vec![7u8; size]).unwrap();
    assert_pattern(p.cast(), size);
    reg.release(&slot).unwrap();
}
