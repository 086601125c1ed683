//! Compiler-emitted code links against the library and runs: the LLVM IR
//! models of c_tests/ (onnx-mlir's legacy, constructor and snake-case
//! shapes) are compiled with clang into model shared objects and run by the
//! C host from 8 threads, with each strategy; and statically linked.
//!
//! Each model's constants file is sparse, 4 GiB + 4 KiB, with one constant
//! above 4 GiB, so 64-bit offsets are exercised without 4 GiB of disk.
//! The `read` strategy really reads 4 GiB per load, so the runs are
//! serialised to bound memory.

// Unix only: LLVM IR models linked as shared objects. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/models.rs"]
mod models;
#[path = "common/native.rs"]
mod native;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use common::Scratch;
use models::{
    check, clang, host, model, model_ir, run_host, write_constants, FILE_SIZE, STRATEGIES,
};
use native::{artefacts, manifest_dir, run, Lang};

/// Loads of 4 GiB each must not run side by side.
static HEAVY: Mutex<()> = Mutex::new(());

#[test]
fn three_ir_styles_run_from_8_threads_with_each_strategy() {
    let s = Scratch::new("models");
    let exe = host(&s);
    let legacy = model(&s.path("legacy"), "legacy", 1);
    let ctor = model(&s.path("ctor"), "ctor", 2);
    let snake = model(&s.path("snake"), "snake", 3);
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    for strategy in STRATEGIES {
        // Legacy models never release: the buffer outlives dlclose.
        run_host(&exe, strategy, &[&legacy], (1, 1));
        // Constructor styles release in their destructor: nothing is left.
        run_host(&exe, strategy, &[&ctor], (1, 0));
        run_host(&exe, strategy, &[&snake], (1, 0));
    }
}

#[test]
fn two_models_at_once_and_one_model_from_two_paths() {
    let s = Scratch::new("models2");
    let exe = host(&s);
    let a = model(&s.path("a"), "ctor", 10);
    let b = model(&s.path("b"), "snake", 20);
    // The same model copied to two folders whose constants file is one
    // file (a hard link): two slots, one buffer.
    let c = model(&s.path("c"), "ctor", 30);
    let d_dir = s.path("d");
    std::fs::create_dir_all(&d_dir).unwrap();
    let d = d_dir.join("libmodel.so");
    std::fs::copy(&c, &d).unwrap();
    std::fs::hard_link(
        s.path("c").join("model.constants.bin"),
        d_dir.join("model.constants.bin"),
    )
    .unwrap();
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    for strategy in STRATEGIES {
        run_host(&exe, strategy, &[&a, &b], (2, 0));
        run_host(&exe, strategy, &[&c, &d], (1, 0));
    }
}

#[test]
fn a_model_linked_statically_with_the_static_library() {
    let s = Scratch::new("static");
    let c = manifest_dir().join("c_tests");
    let mut objects = Vec::new();
    for ir in [model_ir(&s.dir, "ctor"), c.join("model_compute.ll")] {
        let ll = ir.file_name().unwrap().to_string_lossy().into_owned();
        let obj = s.path(&format!("{ll}.o"));
        let mut cmd = clang();
        cmd.arg("-c").arg(&ir).arg("-o").arg(&obj);
        check(cmd, &format!("clang -c {ll}"));
        objects.push(obj);
    }
    let archive = artefacts().join("libom_constants.a");
    assert!(archive.exists(), "{} is missing", archive.display());
    let exe = s.path("host_static");
    let mut cmd = native::compiler(Lang::C99);
    cmd.arg("-DOM_STATIC_MODEL")
        .arg(c.join("host.c"))
        .args(&objects)
        .arg(&archive)
        .arg("-o")
        .arg(&exe)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s", "-lc"]);
    check(cmd, "link host_static");
    // No libom_constants.so is needed at run time.
    // readelf reads the ELF of any architecture (ldd would have to run a
    // cross-built program, and says nothing then).
    let o = Command::new("readelf")
        .arg("-d")
        .arg(&exe)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && dynamic.contains("(NEEDED)"),
        "{dynamic}"
    );
    assert!(!dynamic.contains("om_constants"), "{dynamic}");
    write_constants(&s.path("model.constants.bin"), 4);
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    for strategy in STRATEGIES {
        let o = run(&exe, &["1"], &[("OM_CONSTANT_LOAD", strategy)]);
        assert!(o.status.success(), "host_static with {strategy} failed");
    }
}

/// Two different models really do give two different results, so the
/// host's checks would notice a model reading the wrong file.
#[test]
fn constants_of_two_seeds_differ() {
    let s = Scratch::new("seeds");
    write_constants(&s.path("1"), 1);
    write_constants(&s.path("2"), 2);
    let read = |p: PathBuf| {
        let mut v = std::fs::read(p).unwrap();
        v.truncate(8192);
        v
    };
    assert_ne!(read(s.path("1")), read(s.path("2")));
    assert_eq!(std::fs::metadata(s.path("1")).unwrap().len(), FILE_SIZE);
}
