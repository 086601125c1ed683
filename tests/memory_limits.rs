//! A `read` load under the process's limits: one that cannot fit gets a
//! clear error naming the limit, never the OOM killer; one that can have no
//! threads reads inline and says so truthfully. The host is `om-constants
//! load` (the shipped tool), run inside a cgroup v1 memory limit (as root,
//! as the CI machine runs), under `ulimit -v`, and as `nobody` under
//! `prlimit --nproc=1`.

#![cfg(target_os = "linux")]
// Native builds only: qemu-user has no cgroups of its own.
#![cfg(not(om_cross))]

mod common;
#[path = "common/native.rs"]
mod native;

use std::path::Path;

use common::Scratch;

const SIZE: usize = 256 << 20;

/// Writes a sparse file of SIZE bytes (reads as zeros).
fn big_file(s: &Scratch) -> std::path::PathBuf {
    let f = s.path("big.bin");
    std::fs::File::create(&f)
        .unwrap()
        .set_len(SIZE as u64)
        .unwrap();
    f
}

/// `sh -c SCRIPT sh om-constants load FILE --strategy read`: (success,
/// exit code, stdout and stderr).
fn load_in(script: &str, file: &Path) -> (bool, Option<i32>, String) {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(native::tool_path())
        .arg("load")
        .arg(file)
        .args(["--strategy", "read"])
        .env_remove("OM_CONSTANT_LOAD")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), o.status.code(), text)
}

/// Inside a memory cgroup of 64 MiB, a 256 MiB `read` load fails with an
/// error that names the limit, instead of the kernel killing the host.
#[test]
fn a_read_beyond_the_memory_cgroup_limit_is_an_error_not_an_oom_kill() {
    let root = Path::new("/sys/fs/cgroup/memory");
    assert!(
        root.join("cgroup.procs").exists(),
        "this test needs cgroup v1's memory controller at {} and root",
        root.display()
    );
    let s = Scratch::new("mem-cgroup");
    let f = big_file(&s);
    let cg = root.join(format!("om-constants-test-oom-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    std::fs::write(cg.join("memory.limit_in_bytes"), "64M").unwrap();
    let enter = format!("echo $$ > '{}/cgroup.procs' && exec \"$@\"", cg.display());
    let (ok, code, out) = load_in(&enter, &f);
    let _ = std::fs::remove_dir(&cg);
    assert!(!ok, "{out}");
    assert_eq!(code, Some(1), "an error, not a kill: {out}");
    assert!(
        out.contains("memory cgroup has room for") && out.contains("limit 64 MiB"),
        "{out}"
    );
}

/// Under `ulimit -v`, the error names RLIMIT_AS and how to raise it.
#[test]
fn a_read_beyond_the_address_space_limit_names_the_limit() {
    let s = Scratch::new("mem-as");
    let f = big_file(&s);
    let (ok, _, out) = load_in("ulimit -v 200000 && exec \"$@\"", &f);
    assert!(!ok, "{out}");
    assert!(out.contains("RLIMIT_AS"), "{out}");
}

/// With no thread to be had (`RLIMIT_NPROC` reached, as `nobody` with
/// `prlimit --nproc=1`), a parallel `read` runs inline: it succeeds, and the log
/// does not claim threads it never had.
#[test]
fn a_read_without_threads_runs_inline_and_says_so() {
    let s = Scratch::new("nproc");
    let f = s.file("c.bin", 32 << 20);
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["prlimit", "--nproc=1:1", "--"])
        .arg(native::tool_path())
        .arg("load")
        .arg(&f)
        .args(["--strategy", "read"])
        .env("OM_CONSTANT_LOG", "info")
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("setpriv (util-linux) is needed: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("by read in "),
        "no thread count claimed: {text}"
    );
}
