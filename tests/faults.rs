//! Injected I/O faults (src/fault.rs): each gives the right result or a
//! clear error, leaves the slot empty, leaves no memory, mapping or file
//! descriptor behind, and the next call succeeds once the fault is lifted.
//!
//! One test function, run alone in this process, so that the counts of
//! open descriptors and mappings it compares are its own.

#![cfg(feature = "fault-injection")]

mod common;

/// Named `injected` as in every fault test, so the fault build can run
/// them all by that filter.
mod injected {

    use std::os::raw::c_void;
    use std::sync::atomic::{AtomicPtr, Ordering};

    use super::common::{assert_pattern, name, Scratch, HOST_IS_LE};
    use om_constants::fault::{self, Spec};
    /// Files from this size up are read by several threads (README, "Options").
    const PARALLEL_MIN: usize = 16 << 20;
    use om_constants::{Choice, Config, ErrorKind, Registry, Request};

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    struct Case {
        what: &'static str,
        strategy: Choice,
        spec: Spec,
        /// None: the load succeeds despite the fault.
        error: Option<(ErrorKind, &'static str)>,
        /// Expected `auto` fallbacks from mmap to read.
        fallbacks: u64,
        /// `OM_CONSTANT_MMAP_LIMIT`, for the cases that need pieces.
        limit: Option<u64>,
    }

    /// The last release closes the buffer's file after the registry's lock
    /// is released: a `close` that takes 2 s (NFS, SMB) stalls only the
    /// releasing thread, never stats or acquires on other threads.
    #[test]
    fn a_slow_close_on_the_last_release_blocks_no_other_thread() {
        let sc = Scratch::new("slow-close");
        let path = sc.file("c.bin", 4096);
        let reg = Registry::new(Config {
            strategy: Choice::Read,
            log: om_constants::log::Level::Off,
            ..Config::default()
        });
        let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
        let req = Request::new(name(&path), 4096, HOST_IS_LE).unwrap();
        reg.acquire(&slot, &req).unwrap();
        let faults = fault::inject(Spec {
            close_delay_ms: 3000,
            ..Spec::default()
        });
        std::thread::scope(|s| {
            let releaser = s.spawn(|| reg.release(&slot).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(300));
            // The releaser is now closing the file. Stats must not wait.
            let t = std::time::Instant::now();
            let st = reg.stats();
            let waited = t.elapsed();
            assert!(
                waited < std::time::Duration::from_millis(2000),
                "stats waited {waited:?} for a close on another thread"
            );
            assert_eq!(st.live_buffers, 0, "the buffer is out of the tables");
            releaser.join().unwrap();
        });
        drop(faults);
    }

    #[test]
    fn every_injected_fault_is_survived_or_reported_cleanly() {
        let sc = Scratch::new("faults");
        // Large enough to be read by several threads, not a multiple of 2 MiB.
        let size = PARALLEL_MIN + 3 * 4096 + 7;
        let path = sc.file("c.bin", size);
        let small = 70_000;
        let small_path = sc.file("small.bin", small);
        let middle = (size / 2) as u64;
        let quarter = (size / 4 / 4096 * 4096) as u64;
        let cases = [
            Case {
                what: "one-byte reads",
                strategy: Choice::Read,
                spec: Spec {
                    one_byte_reads: true,
                    ..Spec::default()
                },
                error: None,
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "EINTR on every other read",
                strategy: Choice::Read,
                spec: Spec {
                    eintr: true,
                    ..Spec::default()
                },
                error: None,
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "EIO in the middle of the file",
                strategy: Choice::Read,
                spec: Spec {
                    eio_at: Some(middle),
                    ..Spec::default()
                },
                error: Some((ErrorKind::Io, "Input/output error")),
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "EOF early (the file shrank after fstat)",
                strategy: Choice::Read,
                spec: Spec {
                    eof_at: Some(middle),
                    ..Spec::default()
                },
                error: Some((ErrorKind::TooShort, "shrank")),
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "allocation failure",
                strategy: Choice::Read,
                spec: Spec {
                    alloc_fails: true,
                    ..Spec::default()
                },
                error: Some((ErrorKind::OutOfMemory, "cannot allocate")),
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "mmap failure under auto falls back to read",
                strategy: Choice::Auto,
                spec: Spec {
                    mmap_fails: true,
                    ..Spec::default()
                },
                error: None,
                fallbacks: 1,
                limit: None,
            },
            Case {
                what: "mmap failure under an explicit mmap",
                strategy: Choice::Mmap,
                spec: Spec {
                    mmap_fails: true,
                    ..Spec::default()
                },
                error: Some((ErrorKind::Io, "mmap")),
                fallbacks: 0,
                limit: None,
            },
            Case {
                what: "chunked-mmap failure",
                strategy: Choice::ChunkedMmap,
                spec: Spec {
                    mmap_fails: true,
                    ..Spec::default()
                },
                error: Some((ErrorKind::Io, "chunked mmap")),
                fallbacks: 0,
                limit: None,
            },
            // The file is 4 pieces and a bit at this limit; piece 3 fails
            // after pieces 1 and 2 were mapped into the reservation.
            Case {
                what: "chunked-mmap piece failing after two were mapped",
                strategy: Choice::ChunkedMmap,
                spec: Spec {
                    mmap_piece_fails: Some(3),
                    ..Spec::default()
                },
                error: Some((ErrorKind::Io, "chunked mmap")),
                fallbacks: 0,
                limit: Some(quarter),
            },
            Case {
                what: "chunked-mmap piece failure under auto falls back to read",
                strategy: Choice::Auto,
                spec: Spec {
                    mmap_piece_fails: Some(3),
                    ..Spec::default()
                },
                error: None,
                fallbacks: 1,
                limit: Some(quarter),
            },
        ];

        // Warm up once per strategy, so that thread stacks and malloc arenas
        // the first loads create (and keep for reuse) are not counted as
        // leaks: among them the 2 MiB-page helper thread (src/helper.rs),
        // which lives on once started, and its arena, made as its first job
        // runs (waited for here). Mappings first: the helper takes a thread
        // stack for good, and `read`'s threads then find theirs cached.
        for strategy in [Choice::Mmap, Choice::ChunkedMmap, Choice::Read] {
            let reg = Registry::new(Config {
                strategy,
                log: om_constants::log::Level::Off,
                ..Config::default()
            });
            let s = AtomicPtr::new(std::ptr::null_mut::<c_void>());
            let p = reg
                .acquire(
                    &s,
                    &Request::new(name(&path), size as i64, HOST_IS_LE).unwrap(),
                )
                .unwrap();
            reg.page_report(p.cast(), std::time::Duration::from_secs(60));
            reg.release(&s).unwrap();
        }

        for case in &cases {
            // One-byte reads of 16 MiB would take long; they use a small file.
            let (path, size) = if case.spec.one_byte_reads {
                (&small_path, small)
            } else {
                (&path, size)
            };
            let faults = fault::inject(case.spec);
            let reg = Registry::new(Config {
                strategy: case.strategy,
                mmap_limit: case.limit.or(Config::default().mmap_limit),
                log: om_constants::log::Level::Off,
                ..Config::default()
            });
            let req = Request::new(name(path), size as i64, HOST_IS_LE).unwrap();
            let slot = AtomicPtr::new(std::ptr::null_mut::<c_void>());
            let (fds, maps) = (open_fds(), mappings());
            match (reg.acquire(&slot, &req), case.error) {
                (Ok(p), None) => {
                    assert_pattern(p.cast(), size);
                    reg.release(&slot).unwrap();
                }
                (Err(e), Some((kind, words))) => {
                    assert_eq!(e.kind(), kind, "{}: {e}", case.what);
                    assert!(e.message().contains(words), "{}: {e}", case.what);
                    assert!(
                        e.message().contains(&path.display().to_string()),
                        "{}: the message names the file: {e}",
                        case.what
                    );
                    assert!(slot.load(Ordering::Acquire).is_null(), "{}", case.what);
                }
                (r, want) => panic!("{}: got {r:?}, wanted error {want:?}", case.what),
            }
            let st = reg.stats();
            assert_eq!(
                (st.live_buffers, st.references, st.live_bytes),
                (0, 0, 0),
                "{}: {st:?}",
                case.what
            );
            assert_eq!(st.fallbacks, case.fallbacks, "{}", case.what);
            assert_eq!(open_fds(), fds, "{}: a descriptor leaked", case.what);
            assert_eq!(mappings(), maps, "{}: a mapping leaked", case.what);

            // Once the fault is gone, the same slot loads.
            super::common::loads_again(&reg, &slot, &faults, path, size);
            assert_eq!(reg.stats().live_buffers, 0);
            assert_eq!(open_fds(), fds, "{}: a descriptor leaked", case.what);
        }
    }
}
