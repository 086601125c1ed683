//! The C ABI from C: every function and every bad input (c_tests/abi_test.c),
//! and 64 threads racing on one slot with each strategy (c_tests/race.c).

// Unix only: C hosts. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/native.rs"]
mod native;

use common::Scratch;
use native::{c_program, run};

#[test]
fn every_function_and_bad_input_from_c() {
    let s = Scratch::new("c-abi");
    let exe = c_program(&s.dir, "abi_test");
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = run(&exe, &[data.to_str().unwrap()], &[]);
    assert!(out.status.success(), "abi_test failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // The default log level prints one line per failure on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("om-constants: error: "), "{stderr}");
}

#[test]
fn sixty_four_c_threads_one_load_per_strategy() {
    let s = Scratch::new("c-race");
    let exe = c_program(&s.dir, "race");
    let size = 5 * 1024 * 1024 + 3;
    let file = s.file("weights.bin", size);
    for strategy in ["mmap", "read"] {
        let out = run(
            &exe,
            &[file.to_str().unwrap(), &size.to_string()],
            &[("OM_CONSTANT_LOAD", strategy)],
        );
        assert!(out.status.success(), "race with {strategy} failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("loads=1 "), "{stdout}");
    }
}

/// Scratch folders the C programs may use after dropping to `nobody`.
fn open_to_all(s: &Scratch) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    for d in [&s.dir, &data] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    data
}

#[test]
fn hostile_inputs_from_c_return_false_with_a_message() {
    let s = Scratch::new("c-hostile");
    let exe = c_program(&s.dir, "hostile");
    let data = open_to_all(&s);
    let out = run(&exe, &["inputs", data.to_str().unwrap()], &[]);
    assert!(out.status.success(), "hostile inputs failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));
}

#[test]
fn misuse_of_a_loaded_slot_or_the_stats_struct_is_refused_and_named() {
    let s = Scratch::new("c-misuse");
    let exe = c_program(&s.dir, "hostile");
    let data = open_to_all(&s);
    let out = run(&exe, &["misuse", data.to_str().unwrap()], &[]);
    assert!(out.status.success(), "misuse checks failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));
}

#[test]
fn garbage_in_every_option_is_reported_once_and_ignored() {
    let s = Scratch::new("c-garbage");
    let exe = c_program(&s.dir, "hostile");
    let data = open_to_all(&s);
    let vars = [
        ("OM_CONSTANT_LOAD", "fastest"),
        ("OM_CONSTANT_MMAP_LIMIT", "-3"),
        ("OM_CONSTANT_WAIT_TIMEOUT", "soon"),
        ("OM_CONSTANT_LOG", "loud"),
        ("OM_CONSTANT_KEEP", "maybe"),
        ("OM_CONSTANT_READ_THREADS", "many"),
        ("OM_CONSTANT_DIRECT_IO", "sometimes"),
        ("OM_CONSTANT_HUGE_PAGES", "big"),
        ("OM_CONSTANT_PREFETCH", "eager"),
        ("OM_CONSTANT_MLOCK", "tight"),
    ];
    let out = run(&exe, &["garbage", data.to_str().unwrap()], &vars);
    assert!(out.status.success(), "loads with garbage options failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (var, value) in vars {
        let line = format!("ignoring {var}=\"{value}\"");
        assert_eq!(
            stderr.matches(&line).count(),
            1,
            "{line} not reported once:\n{stderr}"
        );
    }
}

#[test]
fn a_thousand_load_free_cycles_return_rss_and_mappings_to_the_start() {
    let s = Scratch::new("c-cycle");
    let exe = c_program(&s.dir, "cycle");
    // 4 MiB is read by one thread; 20 MiB by several (their stacks are
    // created and freed every cycle).
    // AddressSanitizer's quarantine holds freed buffers (and the mappings
    // of large ones) back to catch late uses; off here, so what is counted
    // is what the library returns.
    let asan = format!(
        "{}:quarantine_size_mb=0",
        std::env::var("ASAN_OPTIONS").unwrap_or_default()
    );
    for (size, strategies) in [
        (4usize << 20, &["mmap", "read", "chunked-mmap"][..]),
        (20 << 20, &["read"][..]),
    ] {
        let file = s.file(&format!("c{size}.bin"), size);
        for strategy in strategies {
            let out = run(
                &exe,
                &[file.to_str().unwrap(), &size.to_string()],
                &[
                    ("OM_CONSTANT_LOAD", strategy),
                    ("OM_CONSTANT_MMAP_LIMIT", "1MiB"),
                    // Under qemu-user, the emulator's own memory (its code
                    // cache, per-thread state) grows the RSS by up to
                    // ~150 MiB over these cycles; a leak of 512 KiB per
                    // cycle would still add more than the 512 MiB allowed.
                    // Under a sanitizer, its allocator keeps freed heap
                    // blocks resident for a while (10 MiB over these
                    // cycles); a leak is LeakSanitizer's to find there.
                    (
                        "CYCLE_RSS_SLACK_KB",
                        if native::is_cross() || native::sanitizer().is_some() {
                            "524288"
                        } else {
                            "1024"
                        },
                    ),
                    ("ASAN_OPTIONS", &asan),
                    // ... and maps regions for its own allocator as it
                    // grows (1 to 13 over these cycles, more where
                    // mappings are made and unmade). Natively, two: the
                    // malloc arena glibc gives the 2 MiB-page helper thread
                    // (src/helper.rs) on its first allocation, which comes
                    // once a job of it runs, maybe only after the warm-up
                    // (a job whose buffer is freed first never runs). A
                    // mapping leaked per cycle would add a thousand; a
                    // thread started per load, dozens.
                    (
                        "CYCLE_MAPS_SLACK",
                        if native::sanitizer().is_some() {
                            "64"
                        } else {
                            "2"
                        },
                    ),
                ],
            );
            assert!(out.status.success(), "cycle {strategy} {size} failed");
        }
    }
}

/// Memory given back: 16 C threads load and free `read` buffers of eight
/// sizes (1 to 17 MiB, below glibc's largest mmap threshold) with
/// `OM_CONSTANT_KEEP=1` and trims in between; once everything is released
/// and trimmed, the resident memory is back at its start, within 8 MiB
/// (`c_tests/rss.c`). Buffers come from the kernel and go back to it; from
/// malloc, glibc kept ~200 MiB of them in its arenas.
#[cfg(unix)]
#[test]
fn rss_returns_to_its_start_after_many_threads_load_and_free_read_buffers() {
    let s = Scratch::new("c-rss");
    let exe = c_program(&s.dir, "rss");
    let files: Vec<String> = [1usize, 2, 3, 5, 7, 11, 13, 17]
        .iter()
        .map(|mib| {
            s.file(&format!("r{mib}.bin"), mib << 20)
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut args = vec!["24"];
    args.extend(files.iter().map(String::as_str));
    let out = run(
        &exe,
        &args,
        &[("OM_CONSTANT_LOAD", "read"), ("OM_CONSTANT_KEEP", "1")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let kb: Vec<i64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(text.contains(" live=0 "), "{text}");
    // A sanitizer's allocator and qemu-user's own memory are not the
    // library's: there, only a gross leak is caught.
    let slack = if native::is_cross() || native::sanitizer().is_some() {
        512 << 10
    } else {
        8 << 10
    };
    assert!(kb.len() >= 2 && kb[1] - kb[0] <= slack, "{text}");
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build (`cargo test --features fault-injection`), never
/// against the library that ships.
#[cfg(feature = "fault-injection")]
mod injected {
    use super::*;

    #[test]
    fn a_panic_inside_the_library_is_false_and_a_message_in_c() {
        let s = Scratch::new("c-panic");
        let exe = c_program(&s.dir, "hostile");
        let data = open_to_all(&s);
        let out = run(
            &exe,
            &["panic", data.to_str().unwrap()],
            &[("OM_CONSTANT_FAULTS", "panic")],
        );
        assert!(out.status.success(), "the host did not survive the panic");
        assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));
    }

    /// `pthread_cancel` of a thread blocked inside a load (here in a sleep
    /// the fault build adds, a cancellation point like `pread`) never
    /// aborts the process: the load ends, and the thread is cancelled at
    /// its next cancellation point (`c_tests/cancel.c`).
    #[cfg(unix)]
    #[test]
    fn a_thread_cancelled_inside_a_load_is_cancelled_after_it() {
        let s = Scratch::new("c-cancel");
        let exe = c_program(&s.dir, "cancel");
        let data = s.file("c.bin", 1 << 20);
        for strategy in ["read", "mmap"] {
            let out = run(
                &exe,
                &[data.to_str().unwrap(), &(1 << 20).to_string()],
                &[
                    ("OM_CONSTANT_FAULTS", "delay_ms=400"),
                    ("OM_CONSTANT_LOAD", strategy),
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{strategy}: {:?} {text}", out.status);
            assert!(text.contains("cancelled=1 loaded=1"), "{strategy}: {text}");
        }
    }
}
