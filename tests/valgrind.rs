//! The C host and the IR models, and the C ABI test, under valgrind:
//! zero definite leaks, zero invalid reads or writes (valgrind's exit code
//! turns any error into a failure).

// Unix only: valgrind. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]
// Native builds only: valgrind does not run under qemu-user (docs/PLATFORMS.md).
#![cfg(not(om_cross))]

mod common;
#[path = "common/models.rs"]
mod models;
#[path = "common/native.rs"]
mod native;

use std::path::Path;
use std::process::Command;

use common::Scratch;
use native::c_program;

const ERROR_EXIT: i32 = 99;

fn valgrind(exe: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut cmd = Command::new("valgrind");
    native::unshadow(&mut cmd);
    cmd.args([
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        &format!("--error-exitcode={ERROR_EXIT}"),
        "--quiet",
    ])
    .arg(exe)
    .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("valgrind is needed ({e}); scripts/test-all.sh installs it"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{}", String::from_utf8_lossy(&o.stdout));
    assert_ne!(
        o.status.code(),
        Some(ERROR_EXIT),
        "valgrind found errors in {} {args:?} {env:?}:\n{stderr}",
        exe.display()
    );
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{stderr}",
        exe.display()
    );
}

#[test]
fn host_and_ir_models_are_clean_under_valgrind() {
    let s = Scratch::new("valgrind-models");
    let exe = models::host(&s);
    let legacy = models::model(&s.path("legacy"), "legacy", 1);
    let ctor = models::model(&s.path("ctor"), "ctor", 2);
    let snake = models::model(&s.path("snake"), "snake", 3);
    for strategy in models::STRATEGIES {
        let env = [("OM_CONSTANT_LOAD", strategy)];
        valgrind(&exe, &["1", "1", legacy.to_str().unwrap()], &env);
        valgrind(
            &exe,
            &["2", "0", ctor.to_str().unwrap(), snake.to_str().unwrap()],
            &env,
        );
    }
}

#[test]
fn the_c_abi_test_is_clean_under_valgrind() {
    let s = Scratch::new("valgrind-abi");
    let exe = c_program(&s.dir, "abi_test");
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    for strategy in ["mmap", "read"] {
        valgrind(
            &exe,
            &[data.to_str().unwrap()],
            &[("OM_CONSTANT_LOAD", strategy)],
        );
    }
}
