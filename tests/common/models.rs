//! Building the LLVM IR models of c_tests/ and their C host (shared by
//! tests/models.rs and tests/valgrind.rs).

#![allow(dead_code)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{Scratch, HOST_IS_LE};
use super::native::{lib_dir, manifest_dir, run, Lang};

pub const FILE_SIZE: u64 = (4 << 30) + 4096;
pub const STRATEGIES: [&str; 2] = ["mmap", "read"];

/// Writes the constants layout of c_tests/model_compute.ll; `seed` varies
/// the values so two models give two different results.
pub fn write_constants(path: &Path, seed: i64) {
    let mut f = std::fs::File::create(path).unwrap();
    let vals = |n: i64, k: i64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                (seed.wrapping_mul(1_000_003) ^ ((i * k + 17) * (i - 3)))
                    .to_ne_bytes()
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
pub fn clang() -> Command {
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
    if super::native::is_cross() {
        // Compiled and linked for the target (clang finds Debian's cross
        // gcc's linker and libraries); run under OM_TEST_RUNNER.
        // The GNU triple (s390x-linux-gnu), under which Debian installs
        // the cross toolchain; with "-unknown" clang would link with the
        // host's ld.
        let gnu = env!("OM_CONSTANTS_TARGET").replace("-unknown-", "-");
        cmd.arg(format!("--target={gnu}"));
    }
    cmd
}

pub fn check(mut cmd: Command, what: &str) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Compiles `style` (legacy, ctor, snake) into `dir/libmodel.so` beside a
/// constants file made with `seed` (or hard-linked from `share`).
pub fn model(dir: &Path, style: &str, seed: i64) -> PathBuf {
    build_model(dir, style, seed, None)
}

/// As [`model`], but the model links the library in `lib` itself (a
/// `DT_NEEDED` entry and an rpath), as a model deployed without a host
/// that links the library does.
pub fn model_linked(dir: &Path, style: &str, seed: i64, lib: &Path) -> PathBuf {
    build_model(dir, style, seed, Some(lib))
}

/// `c_tests/model_{style}.ll` for this machine, written into `dir`:
/// onnx-mlir emits the target's byte order as @om_external_constant_isLE
/// (1 in the committed IR); a big-endian target's model says 0.
pub fn model_ir(dir: &Path, style: &str) -> PathBuf {
    let c = manifest_dir().join("c_tests");
    let ir = std::fs::read_to_string(c.join(format!("model_{style}.ll"))).unwrap();
    let le = "@om_external_constant_isLE = internal constant i8 1";
    assert!(ir.contains(le), "model_{style}.ll names its byte order");
    let ir = ir.replace(
        le,
        &format!("@om_external_constant_isLE = internal constant i8 {HOST_IS_LE}"),
    );
    let out = dir.join(format!("model_{style}.ll"));
    std::fs::write(&out, ir).unwrap();
    out
}

fn build_model(dir: &Path, style: &str, seed: i64, lib: Option<&Path>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let c = manifest_dir().join("c_tests");
    let so = dir.join("libmodel.so");
    let model_ir = model_ir(dir, style);
    let mut cmd = clang();
    cmd.arg("-shared")
        .arg(&model_ir)
        .arg(c.join("model_compute.ll"))
        .arg("-o")
        .arg(&so);
    if let Some(lib) = lib {
        cmd.arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lom_constants");
    }
    check(cmd, &format!("clang model_{style}.ll"));
    write_constants(&dir.join("model.constants.bin"), seed);
    so
}

pub fn host(s: &Scratch) -> PathBuf {
    host_program(s, "host")
}

/// Compiles the C host `c_tests/{name}.c`, linked with the library.
pub fn host_program(s: &Scratch, name: &str) -> PathBuf {
    let lib = lib_dir(&s.dir);
    let exe = s.path(name);
    let mut cmd = super::native::compiler(Lang::C99);
    cmd.arg(manifest_dir().join(format!("c_tests/{name}.c")))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lom_constants", "-lpthread", "-ldl"]);
    check(cmd, &format!("compile {name}.c"));
    exe
}

pub fn run_host(exe: &Path, strategy: &str, args: &[&Path], live: (u32, u32)) {
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
