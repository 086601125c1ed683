//! Every interleaving of 2–3 threads through the slot state machine and the
//! acquire / release / trim paths, checked by loom on the real registry
//! code (its locks, atomics and condition variables are loom's under
//! `--cfg loom`; the file I/O is an in-memory stand-in, `files` in
//! src/registry/flight.rs).
//!
//! Run: RUSTFLAGS="--cfg loom -A dead_code" cargo test --release --test loom
//! (scripts/test-all.sh does, with its own target folder; the code that
//! reads real files goes unused there, hence `-A dead_code`). Without
//! `--cfg loom` this file is empty.

#![cfg(loom)]

use std::ffi::OsStr;
use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use loom::sync::atomic::AtomicPtr;
use loom::sync::Arc;
use loom::thread;
use om_constants::{Config, ErrorKind, Registry, Request};

const SIZE: i64 = 64;

fn registry(keep: bool) -> Arc<Registry> {
    Arc::new(Registry::new(Config {
        keep,
        log: om_constants::log::Level::Off,
        ..Config::default()
    }))
}

fn req(name: &'static str) -> Request<'static> {
    Request::new(
        OsStr::new(name),
        SIZE,
        i64::from(cfg!(target_endian = "little")),
    )
    .unwrap()
}

fn new_slot() -> Arc<AtomicPtr<c_void>> {
    Arc::new(AtomicPtr::new(std::ptr::null_mut()))
}

#[test]
fn load_vs_load_loads_once() {
    loom::model(|| {
        let (reg, slot) = (registry(false), new_slot());
        let t = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.acquire(&slot, &req("a")).unwrap() as usize)
        };
        let mine = reg.acquire(&slot, &req("a")).unwrap() as usize;
        let theirs = t.join().unwrap();
        assert_eq!(mine, theirs, "one buffer");
        let st = reg.stats();
        assert_eq!((st.loads, st.references), (1, 2));
        reg.release(&slot).unwrap();
        reg.release(&slot).unwrap();
        assert!(slot.load(Ordering::Acquire).is_null());
        assert_eq!(reg.stats().live_buffers, 0);
    });
}

#[test]
fn load_failure_vs_waiter_both_fail_and_leave_the_slot_empty() {
    loom::model(|| {
        let (reg, slot) = (registry(false), new_slot());
        let t = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.acquire(&slot, &req("fail")).unwrap_err())
        };
        let mine = reg.acquire(&slot, &req("fail")).unwrap_err();
        let theirs = t.join().unwrap();
        assert_eq!(mine.kind(), ErrorKind::Io);
        assert_eq!(mine, theirs, "the waiter gets the loader's error");
        assert!(slot.load(Ordering::Acquire).is_null());
        let st = reg.stats();
        assert!((1..=2).contains(&st.failures), "{st:?}");
        assert_eq!(st.live_buffers, 0);
    });
}

#[test]
fn acquire_vs_last_release_never_yields_a_freed_pointer() {
    loom::model(|| {
        let (reg, slot) = (registry(false), new_slot());
        reg.acquire(&slot, &req("a")).unwrap();
        let t = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.release(&slot).unwrap())
        };
        let p = reg.acquire(&slot, &req("a")).unwrap();
        t.join().unwrap();
        // Whichever came first, the pointer we got is the live buffer.
        assert_eq!(slot.load(Ordering::Acquire), p);
        let st = reg.stats();
        assert_eq!((st.live_buffers, st.references), (1, 1), "{st:?}");
        assert_eq!(st.frees + 1, st.loads, "freed only what is not live");
        reg.release(&slot).unwrap();
        assert_eq!(reg.stats().live_buffers, 0);
    });
}

#[test]
fn release_vs_trim_frees_once() {
    loom::model(|| {
        let (reg, slot) = (registry(true), new_slot());
        reg.acquire(&slot, &req("a")).unwrap();
        let t = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.release(&slot).unwrap())
        };
        let trimmed = reg.trim();
        t.join().unwrap();
        let st = reg.stats();
        // Trim ran before the release (nothing to free: the buffer is kept
        // now) or after it (freed once).
        assert_eq!(st.live_buffers + st.frees, 1, "{st:?} trimmed={trimmed}");
        assert_eq!(st.references, 0);
        reg.trim();
        let st = reg.stats();
        assert_eq!((st.live_buffers, st.frees), (0, 1), "never freed twice");
    });
}

#[test]
fn three_threads_acquire_and_ensure_on_an_empty_slot() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let (reg, slot) = (registry(false), new_slot());
        let acquirer = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.acquire(&slot, &req("a")).unwrap() as usize)
        };
        let ensurer = {
            let (reg, slot) = (reg.clone(), slot.clone());
            thread::spawn(move || reg.ensure_loaded(&slot, || Ok(req("a"))).unwrap() as usize)
        };
        let mine = reg.acquire(&slot, &req("a")).unwrap() as usize;
        let (a, e) = (acquirer.join().unwrap(), ensurer.join().unwrap());
        assert!(mine == a && a == e, "one buffer for all three");
        let st = reg.stats();
        assert_eq!(st.loads, 1, "{st:?}");
        // Two acquires, plus one if ensure-loaded was the loader.
        assert!((2..=3).contains(&st.references), "{st:?}");
        while reg.release(&slot).is_ok() {}
        assert_eq!(reg.stats().live_buffers, 0);
    });
}
