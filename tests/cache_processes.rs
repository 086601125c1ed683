//! The packed-weights cache across processes, through the C ABI
//! (c_tests/cache.c): a second process packs nothing; a process killed
//! between reserve and commit leaves the old cache (or none) usable; two
//! processes building at once both succeed; a read-only folder works from
//! the heap with one log line.

// Unix only: C hosts and signals. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/native.rs"]
mod native;

use std::path::Path;
use std::process::Output;

use common::Scratch;
use native::{c_program, run};

fn packed(o: &Output) -> usize {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("packed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packed= in {out}"))
}

fn build(exe: &Path, path: &Path, id: &str, n: usize) -> usize {
    packed(&run(
        exe,
        &["build", path.to_str().unwrap(), id, &n.to_string()],
        &[],
    ))
}

fn temporaries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .count()
}

/// A builder in another pid namespace (another container sharing the
/// volume) has a pid this process cannot see: opening the cache here must
/// not delete its temporary file (liveness is the lock the builder holds on
/// it, never its pid), and the builder's commit succeeds.
// Native only: `unshare` starts the builder itself, not through the
// emulator that runs the other architectures' programs.
#[cfg(not(om_cross))]
#[test]
fn a_builder_in_another_pid_namespace_keeps_its_temporary_file() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let s = Scratch::new("cache-p-ns");
    let exe = c_program(&s.dir, "cache");
    let path = s.path("w.cache");
    // The builder's pid in its namespace is set high (300000), so that no
    // process of this namespace has it: a pid check would call it dead.
    let mut builder = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        // Forked, not exec'd by the shell (pid 1 of the namespace).
        .arg("echo 299999 > /proc/sys/kernel/ns_last_pid && \"$0\" hold \"$1\" ns; exit $?")
        .arg(&exe)
        .arg(&path)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("unshare (util-linux) is needed as root: {e}"));
    let mut line = String::new();
    BufReader::new(builder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "reserved", "the builder did not start");
    let tmp: Vec<String> = std::fs::read_dir(&s.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert_eq!(tmp.len(), 1, "{tmp:?}");
    let pid: i32 = tmp[0]
        .split(".tmp-")
        .nth(1)
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks that the pid exists.
    let seen = unsafe { libc::kill(pid, 0) } == 0;
    assert!(
        !seen,
        "pid {pid} of the builder's namespace exists here too; the test proves nothing"
    );
    // Another process opens the cache: its clean-up runs.
    let o = run(&exe, &["build", path.to_str().unwrap(), "other", "1"], &[]);
    assert!(o.status.success());
    drop(builder.stdin.take());
    let out = builder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the builder's commit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_process_finds_the_cache_and_packs_nothing() {
    let s = Scratch::new("cache-p-rt");
    let exe = c_program(&s.dir, "cache");
    let path = s.path("w.cache");
    assert_eq!(build(&exe, &path, "m1", 20), 20);
    assert_eq!(build(&exe, &path, "m1", 20), 0);
    assert_eq!(build(&exe, &path, "m2", 20), 20, "another identity repacks");
}

#[test]
fn a_crash_between_reserve_and_commit_leaves_a_usable_state() {
    let s = Scratch::new("cache-p-crash");
    let exe = c_program(&s.dir, "cache");
    let path = s.path("w.cache");
    // No cache yet: the crash leaves none, and a build works.
    let o = run(&exe, &["crash", path.to_str().unwrap(), "m1"], &[]);
    assert!(!o.status.success(), "the child was meant to die");
    assert!(!path.exists());
    assert_eq!(
        temporaries(&s.dir),
        1,
        "the dead child's temporary is left..."
    );
    assert_eq!(build(&exe, &path, "m1", 5), 5);
    assert_eq!(temporaries(&s.dir), 0, "...and removed by the next open");
    // A valid cache: a crash while building another identity leaves it.
    let o = run(&exe, &["crash", path.to_str().unwrap(), "m2"], &[]);
    assert!(!o.status.success());
    assert_eq!(build(&exe, &path, "m1", 5), 0, "the old cache is intact");
}

#[test]
fn two_processes_building_at_once_both_succeed() {
    let s = Scratch::new("cache-p-race");
    let exe = c_program(&s.dir, "cache");
    let path = s.path("w.cache");
    let mut overlapped = 0;
    for _ in 0..10 {
        let _ = std::fs::remove_file(&path);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (exe, path) = (exe.clone(), path.clone());
                std::thread::spawn(move || build(&exe, &path, "m1", 200))
            })
            .collect();
        let packs: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Both found no cache and built one: they really raced.
        overlapped += usize::from(packs == [200, 200]);
        assert_eq!(
            build(&exe, &path, "m1", 200),
            0,
            "one result won and is valid"
        );
        assert_eq!(temporaries(&s.dir), 0);
    }
    assert!(
        overlapped > 0,
        "the two builds never overlapped; the test proved nothing"
    );
    println!("{overlapped} of 10 rounds raced");
}

#[test]
fn a_read_only_folder_works_from_the_heap_with_one_log_line() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("cache-p-ro");
    let exe = c_program(&s.dir, "cache");
    let ro = s.path("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = run(&exe, &["readonly", ro.to_str().unwrap(), "m1"], &[]);
    assert_eq!(packed(&o), 3);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("cannot keep the packed-weights cache").count(),
        1,
        "one log line: {err}"
    );
}

#[test]
fn bad_arguments_from_c_are_refused_with_a_message() {
    let s = Scratch::new("cache-p-args");
    let exe = c_program(&s.dir, "cache");
    let o = run(&exe, &["args", s.dir.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_region_written_during_commit_never_leaves_a_file_with_wrong_checksums() {
    let s = Scratch::new("cache-writer");
    let exe = c_program(&s.dir, "cache");
    let path = s.path("w.cache");
    // Under a sanitizer, the fault is left to the kernel, as without one:
    // the write that faults is the point of the test, not a report.
    let opts = |var: &str| format!("{}:handle_segv=0", std::env::var(var).unwrap_or_default());
    let (asan, tsan) = (opts("ASAN_OPTIONS"), opts("TSAN_OPTIONS"));
    let o = run(
        &exe,
        &["writer", path.to_str().unwrap(), "id"],
        &[("ASAN_OPTIONS", &asan), ("TSAN_OPTIONS", &tsan)],
    );
    // The writer's next write after the region turns read-only faults.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGSEGV),
        "the writer was not stopped by the read-only region: {o:?}"
    );
    // Whatever is on disk is a valid cache for "id", or nothing.
    if path.exists() {
        let c = om_constants::cache::Cache::open(
            &path,
            b"id",
            &om_constants::Config {
                log: om_constants::log::Level::Off,
                ..om_constants::Config::default()
            },
        )
        .unwrap();
        assert!(
            c.is_complete(),
            "a cache file was committed whose checksums do not match its bytes"
        );
    }
}
