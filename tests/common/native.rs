//! Compiling and running C/C++ test programs, and the CLI, against the
//! library as it ships: `cargo build --release`, the README's build, made
//! (or found up to date) once per test binary. The fault-injection build
//! (`cargo test --features fault-injection` in target/fault-injection, the
//! tests named `injected::`) uses its own debug build instead, which cargo
//! puts beside the test binary; nothing from it ever reaches target/release.
//! So do the sanitizer builds (scripts/sanitizers.sh), which are fault
//! builds too and compile every C host with the same sanitizer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when the tests run for another architecture than the machine's
/// (scripts/test-linux-cross.sh): the library is then built with
/// `--target`, and programs start through [`command`]'s runner.
pub fn is_cross() -> bool {
    cfg!(om_cross) // set by build.rs when the target is not the host
}

/// A command that starts `exe`, a program built for the target: directly,
/// or through the emulator named by `OM_TEST_RUNNER` (such as
/// `qemu-s390x -L /usr/s390x-linux-gnu`) when the tests run for another
/// architecture. A cross run without a runner is an error, not a skip.
pub fn command(exe: &Path) -> Command {
    if !is_cross() {
        let mut cmd = Command::new(exe);
        unshadow(&mut cmd);
        return cmd;
    }
    let runner = std::env::var("OM_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let program = words.next().unwrap_or_else(|| {
        panic!(
            "these tests are built for {} on {}: set OM_TEST_RUNNER to an emulator \
             (scripts/test-linux-cross.sh does)",
            env!("OM_CONSTANTS_TARGET"),
            env!("OM_CONSTANTS_HOST")
        )
    });
    let mut cmd = Command::new(program);
    cmd.args(words).arg(exe);
    unshadow(&mut cmd);
    cmd
}

/// Drops the `LD_LIBRARY_PATH` that `cargo test` gives its test binaries
/// (target/debug and its deps): the dynamic loader searches it before a
/// program's rpath, so a C host would load whatever `libom_constants.so`
/// a debug build left in target/debug instead of the library as it ships.
/// A test that wants `LD_LIBRARY_PATH` sets it after this.
pub fn unshadow(cmd: &mut Command) {
    cmd.env_remove("LD_LIBRARY_PATH");
}

/// The sanitizer this build was made with (`address` or `thread`), as
/// scripts/sanitizers.sh names it in `OM_SANITIZER` for the build; C hosts
/// are then compiled with `-fsanitize=` the same, and link the sanitizer
/// runtime the library's instrumented code calls into.
pub fn sanitizer() -> Option<&'static str> {
    option_env!("OM_SANITIZER").filter(|s| !s.is_empty())
}

/// The folder holding this test binary (target/debug/deps).
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().expect("deps dir").to_path_buf()
}

/// The folder with the artefacts under test: target/release, freshly built
/// by `cargo build --release --locked` (a no-op when it is up to date); or,
/// in the fault-injection and sanitizer builds, the deps folder of that build.
pub fn artefacts() -> PathBuf {
    if cfg!(feature = "fault-injection") || sanitizer().is_some() {
        return deps_dir();
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Relative to the package, as cargo reads it (and absolute, for
            // the links that lib_dir makes to it).
            let target = manifest_dir().join(
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "target".into()),
            );
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(manifest_dir())
                .args(["build", "--release", "--locked", "-p", "om-constants"])
                .args(["-p", "om-constants-cli"])
                .env_remove("RUSTFLAGS");
            let mut out = target;
            if is_cross() {
                cmd.args(["--target", env!("OM_CONSTANTS_TARGET")]);
                out = out.join(env!("OM_CONSTANTS_TARGET"));
            }
            let o = cmd.output().expect("run cargo build --release");
            assert!(
                o.status.success(),
                "cargo build --release failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            out.join("release")
        })
        .clone()
}

/// The `om-constants` tool as it ships (in the fault-injection build, the
/// tool of that build).
pub fn tool_path() -> PathBuf {
    if cfg!(feature = "fault-injection") {
        // The CLI package (cli/) built against the fault-injection library,
        // into this build's target folder, beside deps/.
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        return BUILT
            .get_or_init(|| {
                let debug = deps_dir()
                    .parent()
                    .expect("deps dir has a parent")
                    .to_path_buf();
                // <target dir>/[<triple>/]debug: the CLI lands beside deps/.
                let mut target = debug.parent().expect("target folder").to_path_buf();
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let mut cmd = Command::new(cargo);
                cmd.current_dir(manifest_dir())
                    .args(["build", "--locked", "-p", "om-constants-cli"])
                    .args(["--features", "fault-injection"])
                    .env_remove("RUSTFLAGS");
                if is_cross() {
                    // Built for the target, as the tests are (and run
                    // through OM_TEST_RUNNER).
                    cmd.args(["--target", env!("OM_CONSTANTS_TARGET")]);
                    target = target.parent().expect("target folder").to_path_buf();
                }
                let o = cmd
                    .env("CARGO_TARGET_DIR", &target)
                    .output()
                    .expect("run cargo build -p om-constants-cli");
                assert!(
                    o.status.success(),
                    "cargo build -p om-constants-cli failed:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                debug.join("om-constants")
            })
            .clone();
    }
    artefacts().join("om-constants")
}

/// A folder with (a link to) `libom_constants.so` and nothing else, for
/// `-L` and rpath: what a host sees in target/release.
pub fn lib_dir(scratch: &Path) -> PathBuf {
    let so = artefacts().join("libom_constants.so");
    assert!(so.exists(), "{} is missing", so.display());
    let dir = scratch.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libom_constants.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).unwrap();
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
        .host(env!("OM_CONSTANTS_HOST"))
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
    if let Some(san) = sanitizer() {
        // Instrumented as the library is, and linked with the runtime the
        // library's own instrumentation was made for (the toolchain's, not
        // the C compiler's, which may be older: clang 14's AddressSanitizer
        // does not lock its allocator at fork, and its children can hang in
        // malloc), exported for the library. The flag goes to the compiler
        // proper (-Xclang), so the driver links no runtime of its own.
        let runtime = std::env::var("OM_SANITIZER_RUNTIME").unwrap_or_else(|_| {
            panic!("a {san} build needs OM_SANITIZER_RUNTIME (scripts/sanitizers.sh sets it)")
        });
        cmd.args(["-Xclang", &format!("-fsanitize={san}"), "-g"])
            .arg("-Wl,--whole-archive")
            .arg(runtime)
            .args(["-Wl,--no-whole-archive", "-Wl,--export-dynamic"])
            .args(["-lpthread", "-ldl", "-lm", "-lrt"]);
    }
    cmd.arg("-I").arg(manifest_dir().join("include"));
    cmd
}

/// Compiles `src` into `out`, linked against the cdylib in `lib`.
pub fn build(lang: Lang, src: &Path, out: &Path, lib: &Path) -> PathBuf {
    let mut cmd = compiler(lang);
    cmd.arg(src).arg("-o").arg(out);
    cmd.arg(format!("-L{}", lib.display()));
    cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
    cmd.args(["-lom_constants", "-lpthread", "-ldl"]);
    let o = cmd.output().expect("run the C compiler");
    assert!(
        o.status.success(),
        "compiling {} failed: {}\n{}{}",
        src.display(),
        shown(&cmd),
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

/// Compiles `c_tests/{name}.c` (C99) into `dir/{name}` without linking the
/// library: a host that only reaches it through `dlopen`, so that `dlclose`
/// can unload it.
pub fn c_program_unlinked(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = compiler(Lang::C99);
    cmd.arg(manifest_dir().join(format!("c_tests/{name}.c")))
        .arg("-o")
        .arg(&out)
        .args(["-lpthread", "-ldl"]);
    let o = cmd.output().expect("run the C compiler");
    assert!(
        o.status.success(),
        "compiling {name}.c failed: {}\n{}",
        shown(&cmd),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A command as a shell would show it: the program and its arguments,
/// without the environment the cc crate attaches.
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `exe` with no inherited OM_CONSTANT_* options plus `env`; returns
/// its output after echoing it (shown when the test fails).
pub fn run(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(exe);
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
