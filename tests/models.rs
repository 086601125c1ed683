//! Compiler-emitted code links against the library and runs: the LLVM IR
//! models of c_tests/ (onnx-mlir's legacy, constructor and snake-case
//! shapes) are compiled with clang into model shared objects and run by the
//! C host from 8 threads, with each strategy; and statically linked.
//!
//! Each model's constants file is sparse, 4 GiB + 4 KiB, with one constant
//! above 4 GiB, so 64-bit offsets are exercised without 4 GiB of disk.
//! The `read` strategy really reads 4 GiB per load, so the runs are
//! serialised to bound memory.

mod common;
#[path = "common/native.rs"]
mod native;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::Scratch;
use native::{deps_dir, lib_dir, manifest_dir, run, Lang};

const FILE_SIZE: u64 = (4 << 30) + 4096;
const STRATEGIES: [&str; 2] = ["mmap", "read"];

/// Loads of 4 GiB each must not run side by side.
static HEAVY: Mutex<()> = Mutex::new(());

/// Writes the constants layout of c_tests/model_compute.ll; `seed` varies
/// the values so two models give two different results.
fn write_constants(path: &Path, seed: i64) {
    let mut f = std::fs::File::create(path).unwrap();
    let vals = |n: i64, k: i64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                (seed.wrapping_mul(1_000_003) ^ ((i * k + 17) * (i - 3)))
                    .to_le_bytes()
                    .into_iter()
            })
            .collect()
    };
    for (offset, n, k) in [(0u64, 1024, 7), (8192, 512, 11), (4 << 30, 512, 13)] {
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&vals(n, k)).unwrap();
    }
    f.set_len(FILE_SIZE).unwrap();
}

/// clang, with opaque pointers enabled on releases before 15 (where they
/// became the default); a missing clang fails the test.
fn clang() -> Command {
    let out = Command::new("clang")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "clang is needed to compile the IR models ({e}); scripts/test-all.sh installs it"
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let major: u32 = text
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read clang's version from: {text}"));
    let mut cmd = Command::new("clang");
    if major < 15 {
        cmd.args(["-mllvm", "-opaque-pointers"]);
    }
    cmd.args(["-O2", "-fPIC", "-Wno-override-module"]);
    cmd
}

fn check(mut cmd: Command, what: &str) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Compiles `style` (legacy, ctor, snake) into `dir/libmodel.so` beside a
/// constants file made with `seed` (or hard-linked from `share`).
fn model(dir: &Path, style: &str, seed: i64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let c = manifest_dir().join("c_tests");
    let so = dir.join("libmodel.so");
    let mut cmd = clang();
    cmd.arg("-shared")
        .arg(c.join(format!("model_{style}.ll")))
        .arg(c.join("model_compute.ll"))
        .arg("-o")
        .arg(&so);
    check(cmd, &format!("clang model_{style}.ll"));
    write_constants(&dir.join("model.constants.bin"), seed);
    so
}

fn host(s: &Scratch) -> PathBuf {
    let lib = lib_dir(&s.dir);
    let exe = s.path("host");
    let mut cmd = native::compiler(Lang::C99);
    cmd.arg(manifest_dir().join("c_tests/host.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lom_constants", "-lpthread", "-ldl"]);
    check(cmd, "compile host.c");
    exe
}

fn run_host(exe: &Path, strategy: &str, args: &[&Path], live: (u32, u32)) {
    let mut a = vec![live.0.to_string(), live.1.to_string()];
    a.extend(args.iter().map(|p| p.display().to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run(exe, &a, &[("OM_CONSTANT_LOAD", strategy)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains(" 0 failed"),
        "host {a:?} with {strategy} failed"
    );
}

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
    for ll in ["model_ctor.ll", "model_compute.ll"] {
        let obj = s.path(&format!("{ll}.o"));
        let mut cmd = clang();
        cmd.arg("-c").arg(c.join(ll)).arg("-o").arg(&obj);
        check(cmd, &format!("clang -c {ll}"));
        objects.push(obj);
    }
    let archive = deps_dir().join("libom_constants.a");
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
    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    assert!(!String::from_utf8_lossy(&ldd.stdout).contains("om_constants"));
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
