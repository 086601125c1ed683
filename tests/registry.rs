//! The registry's semantics (docs/SEMANTICS.md) through the Rust API, each
//! test with its own `Registry` so counters are exact.

mod common;

use std::os::raw::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Barrier};

use common::{assert_pattern, name, Scratch};
use om_constants::config::SearchPath;
use om_constants::{Choice, Config, ErrorKind, Registry, Request};

/// Default options, without stderr noise from the failures tests provoke.
fn quiet() -> Config {
    Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    }
}

fn registry(strategy: Choice) -> Arc<Registry> {
    Arc::new(Registry::new(Config {
        strategy,
        ..quiet()
    }))
}

use common::static_slot as new_slot;

fn req(path: &std::path::Path, size: usize) -> Request<'_> {
    Request::new(
        name(path),
        size as i64,
        cfg!(target_endian = "little") as i64,
    )
    .unwrap()
}

const SIZE: usize = 3 * 1024 * 1024 + 123;

#[test]
fn sixty_four_threads_one_load_per_strategy_then_nothing_left() {
    for choice in [Choice::Mmap, Choice::Read, Choice::Auto] {
        let s = Scratch::new("race");
        let path = s.file("c.bin", SIZE);
        let reg = registry(choice);
        let slot = new_slot();
        let barrier = Arc::new(Barrier::new(64));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (reg, barrier, path) = (reg.clone(), barrier.clone(), path.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let p = reg.acquire(slot, &req(&path, SIZE)).unwrap();
                    assert_pattern(p.cast(), SIZE);
                    p as usize
                })
            })
            .collect();
        let ptrs: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            ptrs.iter().all(|p| *p == ptrs[0]),
            "{choice:?}: one buffer for all"
        );
        let st = reg.stats();
        assert_eq!(st.loads, 1, "{choice:?}: exactly one load: {st:?}");
        assert_eq!(st.references, 64, "{choice:?}");
        let expect_read = if choice == Choice::Read {
            SIZE as u64
        } else {
            0
        };
        assert_eq!(st.bytes_read, expect_read, "{choice:?}: bytes read");
        assert_eq!(st.failures, 0);

        let barrier = Arc::new(Barrier::new(64));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (reg, barrier) = (reg.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    reg.release(slot).unwrap();
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let st = reg.stats();
        assert_eq!(
            (st.live_buffers, st.references, st.live_bytes, st.frees),
            (0, 0, 0, 1),
            "{choice:?}: {st:?}"
        );
        assert!(slot.load(Ordering::Acquire).is_null());
    }
}

#[test]
fn ensure_loaded_races_load_once_and_hold_one_reference() {
    let s = Scratch::new("ensure");
    let path = s.file("c.bin", SIZE);
    let reg = registry(Choice::Read);
    let slot = new_slot();
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (reg, barrier, path) = (reg.clone(), barrier.clone(), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                reg.ensure_loaded(slot, || Ok(req(&path, SIZE))).unwrap() as usize
            })
        })
        .collect();
    let ptrs: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(ptrs.iter().all(|p| *p == ptrs[0]));
    let st = reg.stats();
    assert_eq!(
        (st.loads, st.references, st.bytes_read),
        (1, 1, SIZE as u64)
    );
    // The loaded fast path does not even build the request.
    let p = reg
        .ensure_loaded(slot, || panic!("request built on the fast path"))
        .unwrap();
    assert_eq!(p as usize, ptrs[0]);
    reg.release(slot).unwrap();
    assert_eq!(reg.stats().live_buffers, 0);
}

#[test]
fn counts_and_double_release() {
    let s = Scratch::new("count");
    let path = s.file("c.bin", 4096);
    let reg = registry(Choice::Auto);
    let slot = new_slot();
    let p1 = reg.acquire(slot, &req(&path, 4096)).unwrap();
    let p2 = reg.acquire(slot, &req(&path, 4096)).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(reg.stats().references, 2);
    reg.release(slot).unwrap();
    assert_eq!(slot.load(Ordering::Acquire), p1, "still held once");
    assert_pattern(p1.cast(), 4096);
    reg.release(slot).unwrap();
    assert!(slot.load(Ordering::Acquire).is_null());
    let e = reg.release(slot).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLoaded);
    assert!(e.message().contains("Nothing was freed"), "{e}");
    let st = reg.stats();
    assert_eq!((st.frees, st.live_buffers), (1, 0), "one free, never two");

    // A later acquire loads again.
    reg.acquire(slot, &req(&path, 4096)).unwrap();
    assert_eq!(reg.stats().loads, 2);
    reg.release(slot).unwrap();
}

#[test]
fn slots_loading_one_file_share_one_buffer() {
    let s = Scratch::new("share");
    let path = s.file("c.bin", SIZE);
    let reg = registry(Choice::Read);
    let (a, b) = (new_slot(), new_slot());
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (reg, barrier, path) = (reg.clone(), barrier.clone(), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let slot = if i % 2 == 0 { a } else { b };
                reg.acquire(slot, &req(&path, SIZE)).unwrap() as usize
            })
        })
        .collect();
    let ptrs: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(ptrs.iter().all(|p| *p == ptrs[0]), "both slots, one buffer");
    let st = reg.stats();
    assert_eq!(
        (st.loads, st.live_buffers, st.live_slots),
        (1, 1, 2),
        "{st:?}"
    );
    assert_eq!(st.bytes_read, SIZE as u64, "the file was read once");
    for _ in 0..16 {
        reg.release(a).unwrap();
    }
    assert!(a.load(Ordering::Acquire).is_null());
    assert_pattern(b.load(Ordering::Acquire).cast(), SIZE);
    for _ in 0..16 {
        reg.release(b).unwrap();
    }
    assert_eq!(reg.stats().live_buffers, 0);
}

#[test]
fn keep_caches_until_trim() {
    let s = Scratch::new("keep");
    let path = s.file("c.bin", 8192);
    let reg = Registry::new(Config {
        keep: true,
        ..quiet()
    });
    let slot = new_slot();
    reg.acquire(slot, &req(&path, 8192)).unwrap();
    reg.release(slot).unwrap();
    assert!(slot.load(Ordering::Acquire).is_null());
    let st = reg.stats();
    assert_eq!((st.live_buffers, st.kept_buffers, st.frees), (1, 1, 0));
    reg.acquire(slot, &req(&path, 8192)).unwrap();
    let st = reg.stats();
    assert_eq!((st.loads, st.shared, st.kept_buffers), (1, 1, 0), "{st:?}");
    assert_eq!(reg.trim(), 0, "a referenced buffer is not trimmed");
    reg.release(slot).unwrap();
    assert_eq!(reg.trim(), 1);
    let st = reg.stats();
    assert_eq!((st.live_buffers, st.frees), (0, 1));
}

#[test]
fn failed_loads_leave_the_slot_empty_and_a_retry_succeeds() {
    let s = Scratch::new("fail");
    let path = s.path("late.bin");
    let reg = registry(Choice::Read);
    let slot = new_slot();
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (reg, barrier, path) = (reg.clone(), barrier.clone(), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                reg.acquire(slot, &req(&path, 4096)).unwrap_err()
            })
        })
        .collect();
    for t in threads {
        let e = t.join().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("late.bin"), "{e}");
    }
    assert!(slot.load(Ordering::Acquire).is_null());
    let st = reg.stats();
    assert!(st.failures >= 1 && st.loads == 0, "{st:?}");
    s.file("late.bin", 4096);
    let p = reg.acquire(slot, &req(&path, 4096)).unwrap();
    assert_pattern(p.cast(), 4096);
    reg.release(slot).unwrap();
}

#[test]
fn a_slot_reused_without_release_is_treated_as_empty() {
    let s = Scratch::new("stale");
    let path = s.file("c.bin", 4096);
    let reg = registry(Choice::Read);
    let slot = new_slot();
    reg.acquire(slot, &req(&path, 4096)).unwrap();
    // The model was unloaded without releasing; a new one has the address.
    slot.store(std::ptr::null_mut(), Ordering::Release);
    let p = reg.acquire(slot, &req(&path, 4096)).unwrap();
    let st = reg.stats();
    assert_eq!(
        (st.loads, st.frees, st.live_buffers, st.references),
        (2, 1, 1, 1)
    );
    assert_pattern(p.cast(), 4096);

    // A pointer the library did not put there: release and acquire refuse
    // it and leave it there; ensure-loaded trusts it (as onnx-mlir always
    // did).
    let mut foreign = [0u8; 8];
    let other = new_slot();
    other.store(foreign.as_mut_ptr().cast(), Ordering::Release);
    let e = reg.release(other).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotHeld);
    assert!(e.message().contains("did not load"), "{e}");
    assert!(e.message().contains("RTLD_GLOBAL"), "names the fix: {e}");
    assert_eq!(
        reg.ensure_loaded(other, || Ok(req(&path, 4096))).unwrap(),
        foreign.as_mut_ptr().cast()
    );
    let e = reg.acquire(other, &req(&path, 4096)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("did not put there"), "{e}");
    assert_eq!(other.load(Ordering::Acquire), foreign.as_mut_ptr().cast());
    let missing = path.with_extension("missing");
    assert!(reg.acquire(other, &req(&missing, 4096)).is_err());
    assert_eq!(
        other.load(Ordering::Acquire),
        foreign.as_mut_ptr().cast(),
        "a failed acquire leaves the slot as it was"
    );
    assert_eq!(reg.stats().references, 1, "nothing taken");
    let _ = p;
    reg.release(slot).unwrap();
    assert_eq!(reg.stats().live_buffers, 0);
}

#[test]
fn bad_requests_are_refused_with_messages() {
    let le = cfg!(target_endian = "little") as i64;
    let n = std::ffi::OsStr::new("m.bin");
    for (size, is_le, kind) in [
        (0, le, ErrorKind::InvalidArgument),
        (-5, le, ErrorKind::InvalidArgument),
        (8, 1 - le, ErrorKind::ByteOrder),
    ] {
        let e = Request::new(n, size, is_le).unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert!(e.message().contains("m.bin"), "{e}");
    }
    assert_eq!(
        Request::new(std::ffi::OsStr::new(""), 8, le)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    // The wrong byte order: the message blames the caller's is_le, not the
    // file, and names the machine's order. Any non-zero is_le means
    // little-endian (onnx-mlir's convention).
    let host = if le == 1 {
        "little-endian"
    } else {
        "big-endian"
    };
    let wrong = if le == 1 { 0 } else { 7 };
    let m = Request::new(n, 8, wrong).unwrap_err().message().to_string();
    assert!(m.contains(&format!("passed is_le={wrong}")), "{m}");
    assert!(m.contains(&format!("this machine is {host}")), "{m}");
    if le == 1 {
        for any in [1, 2, -1, i64::MAX] {
            assert!(Request::new(n, 8, any).is_ok(), "is_le={any}");
        }
    }

    let s = Scratch::new("bad");
    let short = s.file("short.bin", 100);
    let reg = registry(Choice::Auto);
    let slot = new_slot();
    let e = reg.acquire(slot, &req(&short, 101)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooShort);
    let e = reg.acquire(slot, &req(&s.dir, 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAFile);
    assert!(slot.load(Ordering::Acquire).is_null());
    assert_eq!(reg.stats().failures, 2);
}

#[test]
fn relative_names_are_found_through_the_search_path() {
    let s = Scratch::new("search");
    s.file("rel.bin", 4096);
    let reg = Registry::new(Config {
        search_path: SearchPath::Fixed(Some(s.dir.clone())),
        ..quiet()
    });
    let slot = new_slot();
    let rel = std::path::Path::new("rel.bin");
    let p = reg.acquire(slot, &req(rel, 4096)).unwrap();
    assert_pattern(p.cast(), 4096);
    reg.release(slot).unwrap();
    let e = reg
        .acquire(slot, &req(std::path::Path::new("absent.bin"), 1))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let m = e.message();
    assert!(
        m.contains(&format!(
            "{} (OM_CONSTANT_PATH)",
            s.dir.join("absent.bin").display()
        )),
        "{m}"
    );
    assert!(
        !m.contains("(current directory)"),
        "a set OM_CONSTANT_PATH is the only place searched: {m}"
    );
}

#[test]
fn auto_maps_in_pieces_above_the_mapping_limit() {
    let s = Scratch::new("limit");
    let path = s.file("c.bin", 10_000);
    let reg = Registry::new(Config {
        mmap_limit: Some(4096),
        ..quiet()
    });
    let (a, b) = (new_slot(), new_slot());
    reg.acquire(a, &req(&path, 10_000)).unwrap();
    let s2 = s.file("small.bin", 4096);
    reg.acquire(b, &req(&s2, 4096)).unwrap();
    let st = reg.stats();
    assert_eq!((st.chunked_mmap.loads, st.chunked_mmap.bytes), (1, 10_000));
    assert_eq!((st.mmap.loads, st.bytes_mapped), (1, 14_096));
    assert_eq!(st.read.loads, 0);
    reg.release(a).unwrap();
    reg.release(b).unwrap();
}

#[test]
fn constant_addresses_are_checked_against_the_buffer() {
    let s = Scratch::new("addr");
    let path = s.file("c.bin", 4096);
    let reg = registry(Choice::Mmap);
    let base = new_slot();
    let out = AtomicPtr::new(std::ptr::null_mut());
    let e = reg.constant_address(&out, base, 0).unwrap_err();
    assert!(e.message().contains("holds no buffer"), "{e}");
    let p = reg.acquire(base, &req(&path, 4096)).unwrap();
    reg.constant_address(&out, base, 4097).unwrap_err();
    reg.constant_address(&out, base, -1).unwrap_err();
    assert!(out.load(Ordering::Acquire).is_null(), "unchanged on error");
    reg.constant_address(&out, base, 100).unwrap();
    assert_eq!(out.load(Ordering::Acquire) as usize, p as usize + 100);
    reg.constant_address(&out, base, 200).unwrap();
    assert_eq!(
        out.load(Ordering::Acquire) as usize,
        p as usize + 100,
        "already set: unchanged"
    );
    reg.release(base).unwrap();
}

#[test]
fn a_loaded_slot_asked_for_another_size_or_file_is_an_error_naming_both() {
    let sc = Scratch::new("mismatch");
    let a = sc.file("a.bin", 1 << 20);
    let b = sc.file("b.bin", 1 << 20);
    let reg = registry(Choice::Read);
    let slot = new_slot();
    let p = reg.acquire(slot, &req(&a, 4096)).unwrap();
    for (what, other, size) in [("size", &a, 64 << 10), ("file", &b, 4096)] {
        let e = reg.acquire(slot, &req(other, size)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Mismatch, "{what}: {e}");
        let m = e.message();
        assert!(m.contains("a.bin") && m.contains("4096"), "{what}: {m}");
        assert!(
            m.contains("but this call asks for"),
            "{what}: one line: {m}"
        );
        assert!(
            m.contains(&other.display().to_string()) && m.contains(&size.to_string()),
            "{what}: {m}"
        );
        let e = reg.ensure_loaded(slot, || Ok(req(other, size)));
        // A loaded slot is trusted by ensure-loaded (its fast path).
        assert_eq!(e.unwrap(), p);
    }
    assert_eq!(slot.load(Ordering::Acquire), p, "nothing changed");
    assert_eq!(reg.stats().references, 1, "no reference was taken");
    reg.release(slot).unwrap();
}

#[test]
fn a_slot_holding_the_loading_marker_with_no_load_is_an_error_not_a_hang() {
    let sc = Scratch::new("marker");
    let a = sc.file("a.bin", 4096);
    let reg = registry(Choice::Read);
    let slot = new_slot();
    slot.store(om_constants::LOADING, Ordering::Release);
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (reg, a) = (reg.clone(), a.clone());
        std::thread::spawn(move || {
            let r = reg.acquire(slot, &req(&a, 4096)).map(|p| p as usize);
            let _ = tx.send(r);
        });
    }
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("acquire of a slot holding LOADING hung");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("no load of this slot is in flight"),
        "{e}"
    );
    assert_eq!(slot.load(Ordering::Acquire), om_constants::LOADING);
}

#[test]
fn a_constant_address_is_checked_against_a_buffer_of_ours_or_refused() {
    let sc = Scratch::new("addr");
    let a = sc.file("a.bin", 8192);
    let reg = registry(Choice::Read);
    let base = new_slot();
    let out = AtomicPtr::<c_void>::default();
    // A base slot holding memory this library did not give it: its length
    // is unknown, so no offset can be checked, and none is accepted.
    let mut host = [0u8; 64];
    base.store(host.as_mut_ptr().cast(), Ordering::Release);
    for offset in [0, 1 << 40] {
        let e = reg.constant_address(&out, base, offset).unwrap_err();
        assert!(e.message().contains("did not give it"), "{e}");
        assert!(out.load(Ordering::Acquire).is_null());
    }
    base.store(std::ptr::null_mut(), Ordering::Release);
    let p = reg.acquire(base, &req(&a, 8192)).unwrap();
    assert!(reg.constant_address(&out, base, 8193).is_err());
    reg.constant_address(&out, base, 100).unwrap();
    assert_eq!(out.load(Ordering::Acquire) as usize, p as usize + 100);
    reg.release(base).unwrap();
}

/// Releases racing constant-address calls: an offset outside the buffer is
/// never accepted, whatever the interleaving.
#[test]
fn constant_addresses_racing_releases_never_accept_a_bad_offset() {
    let sc = Scratch::new("addr-race");
    let a = sc.file("a.bin", 8192);
    let reg = registry(Choice::Read);
    let base = new_slot();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (reg, a, stop) = (reg.clone(), a.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                reg.acquire(base, &req(&a, 8192)).unwrap();
                reg.release(base).unwrap();
            }
        })
    };
    for _ in 0..200_000 {
        let out = AtomicPtr::<c_void>::default();
        let _ = reg.constant_address(&out, base, 1 << 40);
        assert!(out.load(Ordering::Acquire).is_null(), "a bad offset passed");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}
