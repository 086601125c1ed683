//! The strategies (docs/PERFORMANCE.md, "Strategies") and their options, through `Registry`
//! (exact bytes, not timings): chunked mapping across piece boundaries and
//! above 4 GiB, parallel reads with uneven splits, O_DIRECT and its
//! fallback, auto's fallback from a failing mapping, prefetch and mlock.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::raw::c_void;
use std::sync::atomic::AtomicPtr;

use common::{assert_pattern, name, pattern_bytes, Scratch, HOST_IS_LE};
use om_constants::config::{HugePages, Mlock, Prefetch};
use om_constants::{Choice, Config, Registry, Request};

/// Files from this size up are read by several threads (README, "Options").
const PARALLEL_MIN: usize = 16 << 20;
/// The huge page size that `read` buffers and ranges are aligned to.
const HUGE_PAGE: usize = 2 << 20;

fn quiet() -> Config {
    Config {
        log: om_constants::log::Level::Off,
        ..Config::default()
    }
}

fn req(path: &std::path::Path, size: usize) -> Request<'_> {
    Request::new(name(path), size as i64, HOST_IS_LE).unwrap()
}

fn slot() -> AtomicPtr<c_void> {
    AtomicPtr::new(std::ptr::null_mut())
}

/// Loads `path` with `config`, checks the bytes against the pattern,
/// releases, and returns the stats.
fn load_check(config: Config, path: &std::path::Path, size: usize) -> om_constants::Stats {
    let reg = Registry::new(config);
    let s = slot();
    let p = reg.acquire(&s, &req(path, size)).unwrap();
    assert_pattern(p.cast(), size);
    let st = reg.stats();
    reg.release(&s).unwrap();
    assert_eq!(reg.stats().live_buffers, 0);
    st
}

#[test]
fn chunked_mmap_is_contiguous_across_piece_boundaries() {
    let sc = Scratch::new("chunked");
    // 5 pieces of 16 KiB, the last one partial and not page-aligned.
    let size = 4 * 16384 + 1234;
    let path = sc.file("c.bin", size);
    let st = load_check(
        Config {
            strategy: Choice::ChunkedMmap,
            mmap_limit: Some(16384),
            ..quiet()
        },
        &path,
        size,
    );
    assert_eq!(
        (st.chunked_mmap.loads, st.bytes_mapped, st.bytes_read),
        (1, size as u64, 0)
    );
    // A limit that is not a page multiple is rounded down to whole pages.
    let st = load_check(
        Config {
            strategy: Choice::ChunkedMmap,
            mmap_limit: Some(10_000),
            ..quiet()
        },
        &path,
        size,
    );
    assert_eq!(st.chunked_mmap.loads, 1);
}

#[test]
fn chunked_mmap_reaches_above_4_gib_of_a_sparse_file() {
    let sc = Scratch::new("chunked4g");
    let path = sc.path("big.bin");
    let size: u64 = (4 << 30) + 8192;
    let tail = pattern_bytes(8192);
    let mut f = std::fs::File::create(&path).unwrap();
    f.seek(SeekFrom::Start(4 << 30)).unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let reg = Registry::new(Config {
        strategy: Choice::Auto,
        mmap_limit: Some(256 << 20),
        ..quiet()
    });
    let s = slot();
    let p = reg.acquire(&s, &req(&path, size as usize)).unwrap();
    // SAFETY: the buffer holds `size` bytes while we hold the reference.
    let got = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(4 << 30), 8192) };
    assert_eq!(got, &tail[..]);
    // SAFETY: as above; the hole before reads as zeros.
    assert_eq!(unsafe { *p.cast::<u8>().add((4 << 30) - 1) }, 0);
    let st = reg.stats();
    assert_eq!(
        (st.chunked_mmap.loads, st.read.loads),
        (1, 0),
        "auto chose chunked"
    );
    reg.release(&s).unwrap();
}

#[test]
fn parallel_reads_with_uneven_splits_return_every_byte() {
    let sc = Scratch::new("split");
    // Above the parallel threshold, not a multiple of 2 MiB or of 3.
    let size = PARALLEL_MIN + 3 * HUGE_PAGE + 12_345;
    let path = sc.file("c.bin", size);
    for threads in [1, 2, 3, 8] {
        let st = load_check(
            Config {
                strategy: Choice::Read,
                read_threads: threads,
                ..quiet()
            },
            &path,
            size,
        );
        assert_eq!(st.bytes_read, size as u64, "{threads} threads");
    }
    // Whatever the huge-page mode, every strategy gives the same bytes.
    for huge_pages in [HugePages::Off, HugePages::On, HugePages::Reread] {
        for strategy in [Choice::Read, Choice::Mmap, Choice::ChunkedMmap] {
            load_check(
                Config {
                    strategy,
                    huge_pages,
                    ..quiet()
                },
                &path,
                size,
            );
        }
    }
}

#[test]
fn direct_io_reads_the_aligned_part_and_the_tail_buffered() {
    let sc = Scratch::new("direct");
    let size = PARALLEL_MIN + 4096 * 3 + 100;
    let path = sc.file("c.bin", size);
    let st = load_check(
        Config {
            strategy: Choice::Read,
            direct_io: true,
            ..quiet()
        },
        &path,
        size,
    );
    assert_eq!(st.bytes_read, size as u64);
    // Either the file system took O_DIRECT (most bytes direct) or refused
    // it (counted as a fallback); both give the right bytes.
    assert!(
        st.direct_bytes >= (size as u64 / 4096 - 2) * 4096 || st.direct_fallbacks == 1,
        "{st:?}"
    );
}

#[test]
fn prefetch_modes_and_mlock_give_the_same_bytes() {
    let sc = Scratch::new("prefetch");
    let size = 3 * HUGE_PAGE + 77;
    let path = sc.file("c.bin", size);
    for prefetch in [
        Prefetch::None,
        Prefetch::WillNeed,
        Prefetch::Populate,
        Prefetch::Background,
    ] {
        for strategy in [Choice::Mmap, Choice::ChunkedMmap] {
            load_check(
                Config {
                    strategy,
                    prefetch,
                    mmap_limit: Some(HUGE_PAGE as u64),
                    mlock: Mlock::Try,
                    ..quiet()
                },
                &path,
                size,
            );
        }
    }
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build (`cargo test --features fault-injection`), never
/// against the library that ships.
#[cfg(feature = "fault-injection")]
mod injected {
    use super::*;
    use om_constants::fault::{self, Spec};

    #[test]
    fn direct_io_refused_falls_back_to_buffered_reads() {
        let sc = Scratch::new("direct-refused");
        let size = 3 * 4096 + 5;
        let path = sc.file("c.bin", size);
        let _faults = fault::inject(Spec {
            direct_io_refused: true,
            ..Spec::default()
        });
        let st = load_check(
            Config {
                strategy: Choice::Read,
                direct_io: true,
                ..quiet()
            },
            &path,
            size,
        );
        assert_eq!((st.direct_bytes, st.direct_fallbacks), (0, 1), "{st:?}");
    }

    #[test]
    fn auto_falls_back_to_read_when_mapping_fails() {
        let sc = Scratch::new("mmap-fails");
        let path = sc.file("c.bin", 10_000);
        let _faults = fault::inject(Spec {
            mmap_fails: true,
            ..Spec::default()
        });
        let st = load_check(quiet(), &path, 10_000);
        assert_eq!((st.fallbacks, st.read.loads, st.mmap.loads), (1, 1, 0));
        // An explicit mmap does not fall back: it fails with the reason.
        let reg = Registry::new(Config {
            strategy: Choice::Mmap,
            ..quiet()
        });
        let e = reg.acquire(&slot(), &req(&path, 10_000)).unwrap_err();
        assert!(e.message().contains("mmap"), "{e}");
    }

    #[test]
    fn mlock_on_fails_clearly_when_refused_and_try_goes_on() {
        let sc = Scratch::new("mlock");
        let size = 1 << 20;
        let path = sc.file("c.bin", size);
        let refused = Spec {
            mlock_fails: true,
            ..Spec::default()
        };
        let faults = fault::inject(refused);
        for strategy in [Choice::Mmap, Choice::Read] {
            let reg = Registry::new(Config {
                strategy,
                mlock: Mlock::On,
                ..quiet()
            });
            let s = slot();
            let e = reg.acquire(&s, &req(&path, size)).unwrap_err();
            assert!(e.message().contains("OM_CONSTANT_MLOCK"), "{e}");
            assert!(s.load(std::sync::atomic::Ordering::Acquire).is_null());
            let st = reg.stats();
            assert_eq!(
                (st.failures, st.live_buffers),
                (1, 0),
                "nothing kept: {st:?}"
            );
        }
        // `try` goes on unlocked; `1` without the fault locks (root or within
        // RLIMIT_MEMLOCK: 1 MiB is below the usual 8 MiB).
        for (mlock, spec) in [(Mlock::Try, refused), (Mlock::On, Spec::default())] {
            faults.set(spec);
            load_check(Config { mlock, ..quiet() }, &path, size);
        }
    }
}
