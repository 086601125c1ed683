//! The C ABI from C: every function and every bad input (c_tests/abi_test.c),
//! and 64 threads racing on one slot with each strategy (c_tests/race.c).

mod common;
#[path = "common/native.rs"]
mod native;

use common::Scratch;
use native::{build, lib_dir, manifest_dir, run, Lang};

#[test]
fn every_function_and_bad_input_from_c() {
    let s = Scratch::new("c-abi");
    let lib = lib_dir(&s.dir);
    let exe = build(
        Lang::C99,
        &manifest_dir().join("c_tests/abi_test.c"),
        &s.path("abi_test"),
        &lib,
    );
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
    let lib = lib_dir(&s.dir);
    let exe = build(
        Lang::C99,
        &manifest_dir().join("c_tests/race.c"),
        &s.path("race"),
        &lib,
    );
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
