//! The host's whole life, from C hosts using the library as it ships:
//! unloading the library or a model while a helper thread runs, and
//! reloading it (c_tests/unload.c, which does not link the library), forking
//! under traffic and during a load, a directory change after a relative
//! dlopen, and a blocked stderr (c_tests/lifecycle.c).

// Unix only: C hosts (dlopen, fork, chdir). On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/models.rs"]
mod models;
#[path = "common/native.rs"]
mod native;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;
use native::{artefacts, c_program, c_program_unlinked, run};

/// A sparse file of `len` bytes: mapping and touching it is real work for
/// the kernel (seconds for GiBs), without the disk space.
fn sparse(path: &Path, len: u64) -> PathBuf {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    path.to_path_buf()
}

fn library() -> String {
    artefacts()
        .join("libom_constants.so")
        .to_str()
        .unwrap()
        .to_string()
}

/// `ASAN_OPTIONS` for a host that forks while its other threads free
/// memory: AddressSanitizer's quarantine takes a lock of its own that its
/// fork handler does not (a child hung in `free`, seen with gdb), so the
/// quarantine is off there. glibc's malloc is fork-safe, which is what the
/// library relies on; without a sanitizer this changes nothing.
fn fork_safe_asan() -> String {
    format!(
        "{}:quarantine_size_mb=0",
        std::env::var("ASAN_OPTIONS").unwrap_or_default()
    )
}

fn passed(o: &std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains(" 0 failed"),
        "{what}: {:?}\n{stdout}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn dlclose_of_the_library_while_its_prefetch_thread_runs_does_not_crash() {
    let s = Scratch::new("unload-lib");
    let exe = c_program_unlinked(&s.dir, "unload");
    let f = sparse(&s.path("big.bin"), 8 << 30);
    let o = run(
        &exe,
        &[
            "library",
            &library(),
            f.to_str().unwrap(),
            &(8u64 << 30).to_string(),
        ],
        &[("OM_CONSTANT_PREFETCH", "background")],
    );
    passed(&o, "unload-library");
}

#[test]
fn dlclose_of_a_legacy_model_while_its_prefetch_thread_runs_does_not_crash() {
    let s = Scratch::new("unload-model");
    let exe = c_program_unlinked(&s.dir, "unload");
    // The model links the library itself; the host does not, so closing
    // the model is what would unload the library.
    let so = models::model_linked(&s.path("legacy"), "legacy", 1, &native::lib_dir(&s.dir));
    let o = run(
        &exe,
        &["model", so.to_str().unwrap()],
        &[("OM_CONSTANT_PREFETCH", "background")],
    );
    passed(&o, "unload-model");
}

/// The first call's "ignoring OM_CONSTANT_LOAD=..." line is written after
/// the registry is published: a full stderr stalls only the thread that
/// writes it.
#[test]
fn a_bad_option_s_line_on_a_blocked_stderr_stalls_no_other_thread() {
    let s = Scratch::new("blocked-stderr-init");
    let exe = c_program(&s.dir, "lifecycle");
    let o = run(
        &exe,
        &["blocked-stderr-init"],
        &[("OM_CONSTANT_LOAD", "bogus")],
    );
    passed(&o, "blocked-stderr-init");
}

/// A load's log lines (here its "loaded" line and the note on re-laying a
/// just-written file in 2 MiB pages) are written after its waiters are
/// woken: with stderr a full pipe, a second acquire of the slot, an acquire
/// of another slot on the file and stats complete.
#[test]
fn a_load_s_log_lines_on_a_blocked_stderr_stall_no_waiter() {
    let s = Scratch::new("blocked-stderr-waiters");
    let exe = c_program(&s.dir, "lifecycle");
    let f = s.path("w.bin");
    let size = 4 << 20;
    {
        use std::io::Write;
        let mut w = std::fs::File::create(&f).unwrap();
        for i in 0..4u8 {
            w.write_all(&vec![i; 1 << 20]).unwrap();
        }
    }
    let o = run(
        &exe,
        &[
            "blocked-stderr-waiters",
            f.to_str().unwrap(),
            &size.to_string(),
        ],
        &[("OM_CONSTANT_LOG", "info")],
    );
    passed(&o, "blocked-stderr-waiters");
}

// Native only: under qemu-user, a child forked while other threads run can
// deadlock inside the emulator itself (seen with gdb: qemu's emulation of
// /proc/self/maps, read_self_maps, waits in glib's g_slice_alloc for a
// lock another emulator thread held at fork), and then no signal reaches
// it. fork during a load still runs there (below).
#[cfg(not(om_cross))]
#[test]
fn fork_under_traffic_never_hangs_the_child() {
    let s = Scratch::new("fork-traffic");
    let exe = c_program(&s.dir, "lifecycle");
    let size = 1 << 20;
    let f = s.file("c.bin", size);
    for strategy in ["mmap", "read"] {
        let o = run(
            &exe,
            &[
                "fork-traffic",
                f.to_str().unwrap(),
                &size.to_string(),
                "300",
            ],
            &[
                ("OM_CONSTANT_LOAD", strategy),
                ("ASAN_OPTIONS", &fork_safe_asan()),
            ],
        );
        passed(&o, &format!("fork-traffic {strategy}"));
    }
}

#[test]
fn a_child_forked_during_a_load_loads_for_itself() {
    let s = Scratch::new("fork-loading");
    let exe = c_program(&s.dir, "lifecycle");
    // 256 MiB read by one thread: the host forks as soon as it sees the
    // slot LOADING, well inside the load.
    let size = 256u64 << 20;
    let f = sparse(&s.path("c.bin"), size);
    let o = run(
        &exe,
        &["fork-loading", f.to_str().unwrap(), &size.to_string()],
        &[
            ("OM_CONSTANT_LOAD", "read"),
            ("OM_CONSTANT_READ_THREADS", "1"),
            ("OM_CONSTANT_WAIT_TIMEOUT", "5"),
            ("ASAN_OPTIONS", &fork_safe_asan()),
        ],
    );
    passed(&o, "fork-loading");
}

#[test]
fn a_relative_dlopen_then_chdir_still_finds_the_model_s_own_constants() {
    let s = Scratch::new("chdir");
    let exe = models::host_program(&s, "lifecycle");
    let home = s.path("home");
    models::model(&home.join("models"), "legacy", 1);
    // A decoy at the same relative path from the new directory.
    let other = s.path("other");
    std::fs::create_dir_all(other.join("models")).unwrap();
    models::write_constants(&other.join("models/model.constants.bin"), 2);
    for strategy in models::STRATEGIES {
        let o = run(
            &exe,
            &["chdir", home.to_str().unwrap(), other.to_str().unwrap()],
            &[("OM_CONSTANT_LOAD", strategy)],
        );
        passed(&o, &format!("chdir {strategy}"));
    }
}

#[test]
fn a_blocked_stderr_does_not_stall_other_threads() {
    let s = Scratch::new("stderr");
    let exe = c_program(&s.dir, "lifecycle");
    let a = s.file("a.bin", 4096);
    let b = s.file("b.bin", 4096);
    let o = run(
        &exe,
        &["blocked-stderr", a.to_str().unwrap(), b.to_str().unwrap()],
        &[("OM_CONSTANT_LOG", "info")],
    );
    passed(&o, "blocked-stderr");
}

#[test]
fn reloading_the_library_leaks_nothing_per_cycle() {
    let s = Scratch::new("reload");
    let exe = c_program_unlinked(&s.dir, "unload");
    let size = 64 * 1024;
    let f = s.file("c.bin", size);
    // valgrind does not run under qemu-user: for another architecture the
    // reload cycles run plain, and the leak check is the native run's. Nor
    // over a sanitizer's runtime: there LeakSanitizer checks the cycles.
    let mut cmd = if native::is_cross() || native::sanitizer().is_some() {
        native::command(&exe)
    } else {
        let mut cmd = Command::new("valgrind");
        native::unshadow(&mut cmd);
        cmd.args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=99",
            "--quiet",
        ])
        .arg(&exe);
        cmd
    };
    let o = cmd
        .args([
            "reload",
            &library(),
            f.to_str().unwrap(),
            &size.to_string(),
            "10",
        ])
        .output()
        .unwrap_or_else(|e| panic!("valgrind is needed ({e}); scripts/test-all.sh installs it"));
    passed(&o, "reload under valgrind");
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build, never against the library that ships.
#[cfg(feature = "fault-injection")]
mod injected {
    use super::*;

    /// The lines a load writes in the middle of its work: `auto`'s fallback
    /// from mapping to `read`, `mlock` refused under `try`, `O_DIRECT`
    /// refused. Each is written after the waiters are woken.
    #[test]
    fn mid_load_log_lines_on_a_blocked_stderr_stall_no_waiter() {
        let s = Scratch::new("blocked-stderr-faults");
        let exe = c_program(&s.dir, "lifecycle");
        let size = 1 << 20;
        let f = s.file("c.bin", size);
        for env in [
            &[("OM_CONSTANT_FAULTS", "mmap_fails")][..],
            &[
                ("OM_CONSTANT_FAULTS", "mlock_fails"),
                ("OM_CONSTANT_MLOCK", "try"),
            ],
            &[
                ("OM_CONSTANT_FAULTS", "direct_io_refused"),
                ("OM_CONSTANT_DIRECT_IO", "1"),
                ("OM_CONSTANT_LOAD", "read"),
            ],
        ] {
            let mut env = env.to_vec();
            env.push(("OM_CONSTANT_LOG", "info"));
            let o = run(
                &exe,
                &[
                    "blocked-stderr-waiters",
                    f.to_str().unwrap(),
                    &size.to_string(),
                ],
                &env,
            );
            passed(&o, &format!("blocked-stderr-waiters {env:?}"));
        }
    }

    /// A child forked after a thread of its parent took a use of a shared
    /// buffer for a slot but before the slot was recorded as holding it
    /// (the window widened to 400 ms): the child, where that thread does not
    /// exist, frees every buffer once it has released what it holds (the
    /// use was once left counted for ever). Native only, as above.
    #[cfg(not(om_cross))]
    #[test]
    fn a_child_forked_between_a_use_and_its_record_frees_everything() {
        let s = Scratch::new("fork-recording");
        let exe = c_program(&s.dir, "lifecycle");
        let size = 1 << 20;
        let f = s.file("c.bin", size);
        let o = run(
            &exe,
            &[
                "fork-while-recording",
                f.to_str().unwrap(),
                &size.to_string(),
            ],
            &[
                ("OM_CONSTANT_FAULTS", "record_delay_ms=400"),
                ("ASAN_OPTIONS", &fork_safe_asan()),
            ],
        );
        passed(&o, "fork-while-recording");
    }

    /// A child forked while another thread of its parent was making the
    /// process-wide registry (slowed to 600 ms here) takes the making over:
    /// its first call returns (it once waited for ever for the thread it
    /// does not have). Native only, as fork under traffic (above): under
    /// qemu-user such a child can deadlock inside the emulator.
    #[cfg(not(om_cross))]
    #[test]
    fn a_child_forked_while_the_registry_is_made_takes_it_over() {
        let s = Scratch::new("fork-during-init");
        let exe = c_program(&s.dir, "lifecycle");
        let o = run(
            &exe,
            &["fork-during-init"],
            &[
                ("OM_CONSTANT_FAULTS", "init_delay_ms=600"),
                ("ASAN_OPTIONS", &fork_safe_asan()),
            ],
        );
        passed(&o, "fork-during-init");
    }
}
