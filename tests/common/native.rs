//! Compiling and running C/C++ test programs against the library built for

#![allow(dead_code)]
//! this test run (the cdylib sits beside the test binary in target/*/deps).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding this test binary, where cargo also put the cdylib.
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().expect("deps dir").to_path_buf()
}

/// A folder with `libom_constants.so` and its SONAME link, for `-L` and rpath.
pub fn lib_dir(scratch: &Path) -> PathBuf {
    let so = deps_dir().join("libom_constants.so");
    assert!(
        so.exists(),
        "{} is missing: the cdylib is built with the tests (cargo test)",
        so.display()
    );
    let dir = scratch.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libom_constants.so", "libom_constants.so.0"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).unwrap();
    }
    dir
}

pub enum Lang {
    C99,
    Cxx11,
}

/// The system C (or C++) compiler as the cc crate finds it, with our flags.
pub fn compiler(lang: Lang) -> Command {
    let mut b = cc::Build::new();
    b.target(env!("OM_CONSTANTS_TARGET"))
        .host(env!("OM_CONSTANTS_TARGET"))
        .opt_level(1)
        .cargo_metadata(false);
    let std = match lang {
        Lang::C99 => "-std=c99",
        Lang::Cxx11 => {
            b.cpp(true);
            "-std=c++11"
        }
    };
    let mut cmd = b.get_compiler().to_command();
    cmd.args([std, "-Wall", "-Wextra", "-Werror", "-pedantic"]);
    cmd.arg("-I").arg(manifest_dir().join("include"));
    cmd
}

/// Compiles `src` into `out`, linked against the cdylib in `lib`.
pub fn build(lang: Lang, src: &Path, out: &Path, lib: &Path) -> PathBuf {
    let mut cmd = compiler(lang);
    cmd.arg(src).arg("-o").arg(out);
    cmd.arg(format!("-L{}", lib.display()));
    cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
    cmd.args(["-lom_constants", "-lpthread"]);
    let o = cmd.output().expect("run the C compiler");
    assert!(
        o.status.success(),
        "compiling {} failed: {:?}\n{}{}",
        src.display(),
        cmd,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}

/// Compiles `c_tests/{name}.c` (C99) into `dir/{name}`, linked against the
/// cdylib through a lib folder in `dir`.
pub fn c_program(dir: &Path, name: &str) -> PathBuf {
    let lib = lib_dir(dir);
    build(
        Lang::C99,
        &manifest_dir().join(format!("c_tests/{name}.c")),
        &dir.join(name),
        &lib,
    )
}

/// Runs `exe` with no inherited OM_CONSTANT_* options plus `env`; returns
/// its output after echoing it (shown when the test fails).
pub fn run(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let o = cmd.output().expect("run test program");
    println!("$ {} {}", exe.display(), args.join(" "));
    println!("{}", String::from_utf8_lossy(&o.stdout));
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    o
}
