//! Models that carry their own loader, as every model onnx-mlir links does
//! (docs/ONNX-MLIR.md): each way of putting om-constants in front of that
//! copy without a rebuild, from C (c_tests/onnx_mlir/host.c) and Python
//! (host.py), with both IR shapes; onnx-mlir's ExecutionSession pattern with
//! two versions of a model; the `-l` pitfall; a loader replaced half-way;
//! `om-constants check` on such models; and the Python package
//! (onnx_mlir/python.rs).
//!
//! The models are linked as onnx-mlir's driver links them: the model object,
//! then a static archive that defines the loader functions
//! (c_tests/onnx_mlir/standin_cruntime.c, a stand-in for libcruntime.a whose
//! behaviour a test can tell apart: bare name relative to the current
//! directory, no reference count, a call counter). Each host runs from an
//! empty folder, so only a loader that looks beside the model finds the file.

// ELF interposition and dlopen: Linux and the other ELF systems.
#![cfg(unix)]
// Native builds only: Python hosts and binutils' `ar`/`strip` run on this
// machine, not under the emulator (docs/PLATFORMS.md); symbol lookup and the
// ELF reading are the same on every Linux architecture.
#![cfg(not(om_cross))]

mod common;
#[path = "common/docs.rs"]
mod docs;
#[path = "common/models.rs"]
mod models;
#[path = "common/native.rs"]
mod native;
#[path = "onnx_mlir/python.rs"]
mod python;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Scratch;
use models::{check, clang, model_ir, write_constants};
use native::{artefacts, compiler, lib_dir, manifest_dir, Lang};

/// The two IR shapes onnx-mlir emits: a constructor / destructor pair, and
/// the older per-inference `omMMapBinaryFile`.
const SHAPES: [&str; 2] = ["ctor", "legacy"];

/// A way to run a host: what it is, the command, its environment.
type Case<'a> = (&'a str, Command, Vec<(&'a str, &'a str)>);

/// The stand-ins for onnx-mlir's libcruntime.a, one per release line of
/// its loader, each archived as `dir/<line>/libcruntime.a`; returns `dir`.
fn standin_archive(dir: &Path) -> PathBuf {
    standin_archive_with(dir, &[])
}

/// As [`standin_archive`], compiled with `cflags` too.
fn standin_archive_with(dir: &Path, cflags: &[&str]) -> PathBuf {
    for (line, define) in [("v05", "-DOM_RUNTIME_V05"), ("ctor", "-DOM_RUNTIME_CTOR")] {
        let at = dir.join(line);
        std::fs::create_dir_all(&at).unwrap();
        let obj = at.join("cruntime.o");
        let mut cc = compiler(Lang::C99);
        cc.args(["-c", "-fPIC", "-D_GNU_SOURCE", define])
            .args(cflags)
            .arg(manifest_dir().join("c_tests/onnx_mlir/standin_cruntime.c"))
            .arg("-o")
            .arg(&obj);
        check(cc, "compile standin_cruntime.c");
        let mut ar = Command::new("ar");
        ar.arg("rcs").arg(at.join("libcruntime.a")).arg(&obj);
        check(ar, "ar rcs libcruntime.a");
    }
    dir.to_path_buf()
}

/// The release line of onnx-mlir's loader that emitted `shape`: the
/// per-inference `omMMapBinaryFile` until commit 0c3b3db22, the
/// constructor / destructor pair since.
fn loader_line(shape: &str) -> &'static str {
    if shape == "legacy" {
        "v05"
    } else {
        "ctor"
    }
}

/// `dir/model.so` of `shape`, linked as onnx-mlir's driver links a model:
/// `cc model.o -shared -o model.so -L<lib> -lcruntime` then `extra` (the
/// user's `-l` libraries), with lazy binding, against the runtime of the
/// same time; its constants file beside it.
fn stock_model(dir: &Path, shape: &str, seed: i64, archive: &Path, extra: &[String]) -> PathBuf {
    linked_model(dir, shape, seed, &[], archive, extra)
}

/// As [`stock_model`], with `before` on the link line ahead of the runtime
/// archive (relinking `onnx-mlir --EmitObj` output).
fn linked_model(
    dir: &Path,
    shape: &str,
    seed: i64,
    before: &[String],
    archive: &Path,
    extra: &[String],
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let obj = dir.join("model.o");
    let compute = dir.join("compute.o");
    let mut c = clang();
    c.arg("-c").arg(model_ir(dir, shape)).arg("-o").arg(&obj);
    check(c, &format!("clang -c model_{shape}.ll"));
    let mut c = clang();
    c.arg("-c")
        .arg(manifest_dir().join("c_tests/model_compute.ll"))
        .arg("-o")
        .arg(&compute);
    check(c, "clang -c model_compute.ll");
    let so = dir.join("model.so");
    let mut link = compiler(Lang::C99);
    link.arg(&obj)
        .arg(&compute)
        .args(["-shared", "-fPIC", "-Wl,-z,lazy", "-o"])
        .arg(&so)
        .args(before)
        .arg(format!("-L{}", archive.join(loader_line(shape)).display()))
        .arg("-lcruntime")
        .args(extra);
    check(link, "link model.so");
    write_constants(&dir.join("model.constants.bin"), seed);
    so
}

/// The link flags that name the shipped library (`-L`, rpath, `-l`).
fn link_om_constants(scratch: &Path) -> Vec<String> {
    let lib = lib_dir(scratch);
    vec![
        format!("-L{}", lib.display()),
        format!("-Wl,-rpath,{}", lib.display()),
        "-lom_constants".to_string(),
    ]
}

/// The C host, linked with the library (`linked`) or not. Linked, it is
/// built by the command of docs/ONNX-MLIR.md ("The host links it") as
/// written, from a copy of `c_tests/` in `dir`, with `dir/om` (the shipped
/// library in `dir/om/lib`) for `/opt/om`.
fn c_host(dir: &Path, linked: bool) -> PathBuf {
    if linked {
        return host_by_the_doc(dir);
    }
    let exe = dir.join("host");
    let mut cmd = compiler(Lang::C99);
    cmd.arg(manifest_dir().join("c_tests/onnx_mlir/host.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .arg("-lpthread");
    check(cmd, "compile c_tests/onnx_mlir/host.c");
    exe
}

/// `dir/om`, laid out as the CMake package installs it: the shipped
/// library in `lib/`.
fn installed_prefix(dir: &Path) -> PathBuf {
    let prefix = dir.join("om");
    lib_dir(&prefix);
    prefix
}

/// Runs `line`, a command of the docs with `/opt/om` meaning `prefix`, in
/// `cwd` with `sh -c`.
fn run_doc_line(line: &str, prefix: &Path, cwd: &Path) {
    let line = line.replace("/opt/om", prefix.to_str().unwrap());
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&line).current_dir(cwd);
    native::unshadow(&mut sh);
    check(sh, &line);
}

fn host_by_the_doc(dir: &Path) -> PathBuf {
    let src = dir.join("c_tests");
    std::fs::create_dir_all(src.join("onnx_mlir")).unwrap();
    for f in ["check.h", "oracle.h", "byte_order.h", "onnx_mlir/host.c"] {
        std::fs::copy(manifest_dir().join("c_tests").join(f), src.join(f)).unwrap();
    }
    let prefix = installed_prefix(dir);
    let lines = docs::commands("docs/ONNX-MLIR.md", "The host links it");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("cc host.c -o host "), "{lines:?}");
    run_doc_line(&lines[0], &prefix, &src.join("onnx_mlir"));
    src.join("onnx_mlir/host")
}

/// The library as it ships.
fn shipped_lib() -> PathBuf {
    artefacts().join("libom_constants.so")
}

/// What a host printed: `key=value` words, per model (`model=I ...`) and
/// for the process.
struct Seen {
    models: Vec<HashMap<String, i64>>,
    process: HashMap<String, i64>,
    stderr: String,
}

fn parse(o: &Output) -> Seen {
    let out = String::from_utf8_lossy(&o.stdout);
    let mut seen = Seen {
        models: Vec::new(),
        process: HashMap::new(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    for line in out.lines() {
        let pairs: HashMap<String, i64> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        if pairs.contains_key("model") {
            seen.models.push(pairs);
        } else {
            seen.process.extend(pairs);
        }
    }
    seen
}

/// Runs a host from the empty folder `cwd`, with `env`; the host's own
/// checks must pass.
fn run_in(cwd: &Path, mut cmd: Command, env: &[(&str, &str)]) -> Seen {
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") || k == "LD_PRELOAD" {
            cmd.env_remove(k);
        }
    }
    native::unshadow(&mut cmd);
    cmd.current_dir(cwd).envs(env.iter().copied());
    let o = cmd.output().expect("run host");
    println!("$ {cmd:?}\n{}", String::from_utf8_lossy(&o.stdout));
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains(" 0 failed"),
        "host failed: {cmd:?}"
    );
    parse(&o)
}

fn c_cmd(exe: &Path, way: &str, models: &[&Path]) -> Command {
    c_cmd_with(exe, way, &shipped_lib(), models)
}

/// The C host with `lib` ("-": none) for LIB.
fn c_cmd_with(exe: &Path, way: &str, lib: &Path, models: &[&Path]) -> Command {
    let mut c = native::command(exe);
    c.arg(way).arg(lib).args(models);
    c
}

fn py_cmd(way: &str, models: &[&Path]) -> Command {
    let mut c = Command::new("python3");
    c.arg(manifest_dir().join("c_tests/onnx_mlir/host.py"))
        .arg(way)
        .arg(shipped_lib())
        .args(models);
    c
}

/// The release lines of onnx-mlir's ExecutionSession, as the hosts name
/// them (c_tests/onnx_mlir/host.c lists what each does with
/// OM_CONSTANT_PATH).
const SESSIONS: [&str; 3] = ["session-v05", "session-released", "session-newest"];

/// om-constants served every model: right results from an empty current
/// directory (so the file was found beside the model), one load per
/// model, the stand-in never loading; and the last release freed it all
/// (a per-inference model never releases, as with onnx-mlir: its buffer
/// stays until exit).
fn served_by_om(seen: &Seen, shape: &str, what: &str) {
    let n = seen.models.len() as i64;
    assert!(n > 0, "{what}: no model ran");
    for m in &seen.models {
        assert_eq!(m["ok"], 1, "{what}: the model failed to load its constants");
        assert_eq!(m["match"], 1, "{what}: wrong weights");
        assert_eq!(m["standin_loads"], 0, "{what}: the model's own loader ran");
    }
    assert_eq!(seen.process["om_loads"], n, "{what}: om-constants loads");
    assert_eq!(seen.process["om_live_open"], n, "{what}: live buffers");
    let after = if shape == "legacy" { n } else { 0 };
    assert_eq!(
        seen.process["om_live_closed"], after,
        "{what}: live buffers after dlclose"
    );
}

#[test]
fn each_way_without_a_rebuild_serves_stock_models_from_c_and_python() {
    let (s, archive, cwd, host) = setting("onnx-mlir-ways");
    let linked = c_host(&s.dir, true);
    // docs/ONNX-MLIR.md ("Preload"): LD_PRELOAD=/opt/om/lib/... ./host
    let lines = docs::commands("docs/ONNX-MLIR.md", "Preload");
    let value = lines[0]
        .strip_prefix("LD_PRELOAD=")
        .and_then(|rest| rest.strip_suffix(" ./host"))
        .unwrap_or_else(|| panic!("{lines:?}"))
        .replace("/opt/om", installed_prefix(&s.dir).to_str().unwrap());
    let preload = value.as_str();
    for shape in SHAPES {
        let model = stock_model(&s.path(shape), shape, 7, &archive, &[]);
        let m = [model.as_path()];
        let cases: [Case; 5] = [
            (
                "C host linked with it",
                c_cmd(&linked, "linked", &m),
                vec![],
            ),
            (
                "C host under LD_PRELOAD",
                c_cmd(&host, "preload", &m),
                vec![("LD_PRELOAD", preload)],
            ),
            (
                "C host, dlopen RTLD_GLOBAL first",
                c_cmd(&host, "dlopen-global", &m),
                vec![],
            ),
            (
                "Python, ctypes.CDLL RTLD_GLOBAL first",
                py_cmd("dlopen-global", &m),
                vec![],
            ),
            (
                "Python, ExecutionSession's way",
                py_cmd("session-newest", &m),
                vec![],
            ),
        ];
        for (what, cmd, env) in cases {
            let what = format!("{shape}: {what}");
            served_by_om(&run_in(&cwd, cmd, &env), shape, &what);
        }
    }
}

/// onnx-mlir's loader opens the current directory's file; om-constants
/// prefers the one beside the model, and its `info` log says which it
/// chose and why.
#[test]
fn the_model_folder_wins_over_the_current_directory_and_the_log_says_so() {
    let s = Scratch::new("onnx-mlir-both");
    let archive = standin_archive(&s.path("cruntime"));
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    write_constants(&cwd.join("model.constants.bin"), 99);
    let host = c_host(&s.dir, false);
    let model = stock_model(&s.path("m"), "ctor", 9, &archive, &[]);
    let seen = run_in(
        &cwd,
        c_cmd(&host, "dlopen-global", &[&model]),
        &[("OM_CONSTANT_LOG", "info")],
    );
    served_by_om(&seen, "ctor", "model folder and current directory");
    let beside = s.path("m/model.constants.bin").display().to_string();
    let line = seen
        .stderr
        .lines()
        .find(|l| l.contains("exists too and is not used"))
        .unwrap_or_else(|| panic!("no info line on the choice: {}", seen.stderr));
    assert!(line.starts_with("om-constants: info: using "), "{line}");
    assert!(line.contains(&beside), "{line}");
    assert!(line.contains("current directory"), "{line}");
}

/// Every release line of onnx-mlir's ExecutionSession writes the
/// process-wide OM_CONSTANT_PATH around a model's dlopen, and two of them
/// never clear it, so the second model's session finds the first model's
/// folder there: two versions of a model, each with its own
/// `model.constants.bin`, still get their own weights (the library once
/// took any set value as the only folder, and served v2 with v1's file).
#[test]
fn execution_session_gives_each_version_its_own_weights() {
    let (s, archive, cwd, host) = setting("onnx-mlir-session");
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &[]);
        let m = [v1.as_path(), v2.as_path()];
        for session in SESSIONS {
            let c = run_in(
                &cwd,
                c_cmd(&host, session, &m),
                &[("OM_CONSTANT_LOG", "info")],
            );
            served_by_om(&c, shape, &format!("{shape}: C {session}"));
            // Where the session left v1's folder in the variable, the info
            // log names both files for v2, and the one chosen.
            let noted = c.stderr.lines().any(|l| {
                l.starts_with("om-constants: info: using ")
                    && l.contains("beside the calling model wins")
                    && l.contains(&s.path(&format!("{shape}/v1")).display().to_string())
            });
            assert_eq!(
                noted,
                session != "session-newest",
                "{shape}, {session}: {}",
                c.stderr
            );
            let py = run_in(&cwd, py_cmd(session, &m), &[]);
            served_by_om(&py, shape, &format!("{shape}: Python {session}"));
        }
    }
}

/// The stand-ins are wrong where onnx-mlir's own loader is. Alone, from an
/// empty current directory, v1 then v2 (`right`: its own weights; `wrong`:
/// the other's; `fails`: no file found):
///
/// | shape \ session | v05                    | released      | newest        |
/// |----------------|------------------------|---------------|---------------|
/// | legacy         | right, wrong           | right, wrong  | fails, fails  |
/// | ctor           | fails, wrong           | right, wrong  | right, right  |
///
/// (A legacy model loads at its first inference, after the newest session
/// has cleared the variable; the v05 session sets it only after the
/// constructor ran.) Every cell is right with om-constants in front
/// (`execution_session_gives_each_version_its_own_weights`).
#[test]
fn onnx_mlirs_own_loader_serves_v2_with_v1s_weights_as_the_releases_do() {
    let (s, archive, cwd, host) = setting("onnx-mlir-own");
    let state = |m: &HashMap<String, i64>| match (m["ok"], m["match"]) {
        (1, 1) => "right",
        (1, _) => "wrong",
        _ => "fails",
    };
    let table = [
        ("legacy", "session-v05", ["right", "wrong"]),
        ("legacy", "session-released", ["right", "wrong"]),
        ("legacy", "session-newest", ["fails", "fails"]),
        ("ctor", "session-v05", ["fails", "wrong"]),
        ("ctor", "session-released", ["right", "wrong"]),
        ("ctor", "session-newest", ["right", "right"]),
    ];
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &[]);
        let m = [v1.as_path(), v2.as_path()];
        for (_, session, want) in table.iter().filter(|(sh, _, _)| *sh == shape) {
            let seen = run_in(&cwd, c_cmd_with(&host, session, Path::new("-"), &m), &[]);
            let got: Vec<&str> = seen.models.iter().map(state).collect();
            assert_eq!(got, want, "{shape}, {session}, onnx-mlir's loader alone");
        }
    }
}

/// A scratch folder with the stand-in runtimes, an empty folder to run
/// hosts from, and the C host.
fn setting(name: &str) -> (Scratch, PathBuf, PathBuf, PathBuf) {
    let s = Scratch::new(name);
    let archive = standin_archive(&s.path("cruntime"));
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    (s, archive, cwd, host)
}

/// Two versions of a model of `shape`, `shape/v1/model.so` and
/// `shape/v2/model.so`, each with its own constants file, linked with
/// `before` ahead of the runtime.
fn two_versions(s: &Scratch, shape: &str, archive: &Path, before: &[String]) -> (PathBuf, PathBuf) {
    let v = |n: i64| {
        let dir = s.path(&format!("{shape}/v{n}"));
        linked_model(&dir, shape, n, before, archive, &[])
    };
    (v(1), v(2))
}

/// A model carrying the static library, opened on a short-lived thread
/// and closed on the main thread, then a fork and exit in both processes:
/// no thread-local destructor of the library is left pointing into the
/// unmapped model (before, exit crashed in `__call_tls_dtors`).
#[test]
fn a_model_carrying_the_static_library_closed_on_another_thread_exits_cleanly() {
    let s = Scratch::new("onnx-mlir-static-exit");
    let dir = s.path("m");
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join("model.so");
    let mut link = clang();
    link.args(["-shared", "-Wl,-z,lazy"])
        .arg(model_ir(&dir, "ctor"))
        .arg(manifest_dir().join("c_tests/model_compute.ll"))
        .arg("-o")
        .arg(&so)
        .arg(artefacts().join("libom_constants.a"))
        .args(["-lpthread", "-ldl", "-lm"]);
    check(link, "link model.so with libom_constants.a");
    write_constants(&dir.join("model.constants.bin"), 21);
    let exe = s.path("static_exit");
    let mut cc = compiler(Lang::C99);
    cc.arg(manifest_dir().join("c_tests/onnx_mlir/static_exit.c"))
        .arg("-o")
        .arg(&exe)
        .args(["-ldl", "-lpthread"]);
    check(cc, "compile static_exit.c");
    for round in 0..5 {
        let mut cmd = native::command(&exe);
        cmd.arg(&so);
        native::unshadow(&mut cmd);
        let o = cmd.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains(" 0 failed"),
            "round {round}: {:?}\n{out}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The environment of the many-trial runs: under the default
/// `OM_CONSTANT_HUGE_PAGES=reread` each of their hundreds of loads of the
/// 4 GiB test file costs about 0.1 s of system time (its page cache is
/// examined and re-laid), minutes in all; which file each model gets, what
/// these runs test, does not depend on it, and tests/huge_pages.rs tests
/// the default.
const TRIALS_ENV: &[(&str, &str)] = &[("OM_CONSTANT_HUGE_PAGES", "off")];

/// Copies of `v1` and `v2` (each model in a folder of its own, beside a
/// hard link to its constants file) for `trials` pairs, in `dir`.
fn trial_copies(dir: &Path, v1: &Path, v2: &Path, trials: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for t in 0..trials {
        for (name, model) in [("v1", v1), ("v2", v2)] {
            let folder = dir.join(format!("{t}/{name}"));
            std::fs::create_dir_all(&folder).unwrap();
            let so = folder.join("model.so");
            std::fs::copy(model, &so).unwrap();
            let from = model.parent().unwrap().join("model.constants.bin");
            std::fs::hard_link(from, folder.join("model.constants.bin")).unwrap();
            out.push(so);
        }
    }
    out
}

/// Each model ran and got the weights beside it, none from its own loader.
fn all_right(seen: &Seen, want: usize, what: &str) {
    assert_eq!(seen.models.len(), want, "{what}: models run");
    let wrong: Vec<_> = seen
        .models
        .iter()
        .filter(|m| m["ok"] != 1 || m["match"] != 1 || m["standin_loads"] > 0)
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {want} wrong, the first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// Two sessions opened from two threads at once, v1 and v2, 200 times
/// under each release line and shape: zero wrong weights.
#[test]
fn two_sessions_at_once_each_get_their_own_weights() {
    const TRIALS: usize = 200;
    let (s, archive, cwd, host) = setting("onnx-mlir-threads");
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &[]);
        for session in SESSIONS {
            let copies = trial_copies(&s.path(&format!("{shape}/{session}")), &v1, &v2, TRIALS);
            let m: Vec<&Path> = copies.iter().map(|p| p.as_path()).collect();
            let seen = run_in(
                &cwd,
                c_cmd(&host, &format!("{session}+threads"), &m),
                TRIALS_ENV,
            );
            all_right(
                &seen,
                2 * TRIALS,
                &format!("{shape}, {session}, two threads"),
            );
        }
    }
}

/// OM_CONSTANT_PATH in the environment the host started with, or set by
/// the host before it loads the library, is the deployer's: it still
/// redirects every model, under every release line, as in onnx-mlir's own
/// loader.
#[test]
fn a_deliberate_om_constant_path_still_redirects_every_model() {
    let s = Scratch::new("onnx-mlir-deliberate");
    let archive = standin_archive(&s.path("cruntime"));
    let cwd = s.path("elsewhere");
    let weights = s.path("weights");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&weights).unwrap();
    write_constants(&weights.join("model.constants.bin"), 3);
    let host = c_host(&s.dir, false);
    let w = weights.to_str().unwrap();
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &[]);
        let m = [v1.as_path(), v2.as_path()];
        for session in SESSIONS {
            let env = [("OM_CONSTANT_PATH", w), ("HOST_ORACLE_DIR", w)];
            let seen = run_in(&cwd, c_cmd(&host, session, &m), &env);
            all_right(&seen, 2, &format!("{shape}, {session}, deliberate path"));
            // Set by the host before it loads the library (read by the
            // library's constructor): deliberate too.
            let env = [("HOST_PATH_BEFORE_LIB", w), ("HOST_ORACLE_DIR", w)];
            let seen = run_in(&cwd, c_cmd(&host, session, &m), &env);
            all_right(
                &seen,
                2,
                &format!("{shape}, {session}, set before the library"),
            );
        }
    }
}

/// Models that carry om-constants' own archive (relinked with
/// `libom_constants.a` ahead of the runtime) load it with the model, after
/// a session set OM_CONSTANT_PATH: only the process's start counts as
/// deliberate there, so each still gets its own weights, one after the
/// other and two at once.
#[test]
fn models_linking_the_static_library_get_their_own_weights_under_every_session() {
    const TRIALS: usize = 50;
    let (s, archive, cwd, host) = setting("onnx-mlir-static");
    let first: Vec<String> = vec![
        artefacts().join("libom_constants.a").display().to_string(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ];
    let none = Path::new("-");
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &first);
        let m = [v1.as_path(), v2.as_path()];
        for session in SESSIONS {
            let what = format!("{shape}, {session}, static library in each model");
            let seen = run_in(&cwd, c_cmd_with(&host, session, none, &m), &[]);
            all_right(&seen, 2, &what);
            let copies = trial_copies(&s.path(&format!("{shape}/{session}")), &v1, &v2, TRIALS);
            let m: Vec<&Path> = copies.iter().map(|p| p.as_path()).collect();
            let way = format!("{session}+threads");
            let seen = run_in(&cwd, c_cmd_with(&host, &way, none, &m), TRIALS_ENV);
            all_right(&seen, 2 * TRIALS, &format!("{what}, two threads"));
        }
    }
}

/// `onnx-mlir -lom_constants`: the user's `-l` comes after the runtime
/// library, so the model keeps its own loader, which opens the bare name in
/// the current directory and fails from anywhere else; `check` says so.
#[test]
fn linking_the_model_after_the_runtime_keeps_its_own_loader() {
    let s = Scratch::new("onnx-mlir-pitfall");
    let archive = standin_archive(&s.path("cruntime"));
    let extra = link_om_constants(&s.dir);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    let model = stock_model(&s.path("m"), "ctor", 3, &archive, &extra);
    let seen = run_in(&cwd, c_cmd(&host, "none", &[&model]), &[]);
    assert_eq!(seen.models[0]["ok"], 0, "the own loader cannot find it");
    assert_eq!(seen.models[0]["standin_loads"], 1, "the own loader ran");
    // -1: the linker did not even record the library (nothing in the model
    // needed it); 0: it is loaded and was never called.
    assert!(
        seen.process["om_loads"] <= 0,
        "om-constants was not called: {:?}",
        seen.process
    );
    assert!(seen.stderr.contains("Error while opening"));

    let (code, v) = check_json(&model, &cwd, &[]);
    assert_eq!(v["loader"], "own-copy", "{v}");
    assert_eq!(code, 1, "its own loader would not find the file: {v}");
    assert_eq!(setup(&v, "plain")["loads"], false, "{v}");
    assert_eq!(setup(&v, "om-constants-first")["loads"], true, "{v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("LD_PRELOAD") && notes.contains("RTLD_GLOBAL"),
        "{notes}"
    );
    assert!(
        v["problems"]
            .to_string()
            .contains("onnx-mlir's loader opens exactly"),
        "{v}"
    );
    let (code, v) = check_json(&model, &cwd, &["--host", "om-constants-first"]);
    assert_eq!(code, 0, "with om-constants first it loads: {v}");
}

/// `om-constants check --json MODEL [ARGS]` from `cwd`: its exit code and
/// its report.
fn check_json(model: &Path, cwd: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let o = native::command(&native::tool_path())
        .args(["check", "--json"])
        .args(args)
        .arg(model)
        .current_dir(cwd)
        .env_remove("OM_CONSTANT_PATH")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    (o.status.code().unwrap_or(-1), v)
}

/// The setup named `host` in a check report.
fn setup<'a>(v: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    v["setups"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["host"] == host))
        .unwrap_or_else(|| panic!("no setup {host}: {v}"))
}

/// `check` names who answers the loader calls of every kind of model, and
/// the hosts agree: a stock model is taken over with om-constants first;
/// one linked `-Bsymbolic`, with protected visibility, or with the runtime's
/// symbols hidden never is (its own loader runs even under `LD_PRELOAD`:
/// exit 1); a model importing the loader from a shared libcruntime.so gets
/// onnx-mlir's loader in a plain host.
#[test]
fn check_names_who_loads_each_kind_of_model_and_the_hosts_agree() {
    let s = Scratch::new("onnx-mlir-check-kinds");
    let archive = standin_archive(&s.path("cruntime"));
    let protected = standin_archive_with(&s.path("protected"), &["-fvisibility=protected"]);
    let shared = s.path("shared");
    std::fs::create_dir_all(shared.join("ctor")).unwrap();
    let mut so = compiler(Lang::C99);
    so.args(["-shared", "-fPIC", "-o"])
        .arg(shared.join("ctor/libcruntime.so"))
        .arg(archive.join("ctor/cruntime.o"));
    check(so, "link libcruntime.so");
    let rpath = vec![format!("-Wl,-rpath,{}", shared.join("ctor").display())];
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    let preload = shipped_lib();
    let never = [
        (
            "-Bsymbolic",
            &archive,
            vec!["-Wl,-Bsymbolic".to_string()],
            "-Bsymbolic",
        ),
        ("protected", &protected, vec![], "protected visibility"),
        (
            "hidden",
            &archive,
            vec!["-Wl,--exclude-libs,ALL".to_string()],
            "without exporting",
        ),
    ];
    for (name, root, extra, why) in never {
        let model = stock_model(&s.path(name), "ctor", 11, root, &extra);
        let (code, v) = check_json(&model, &cwd, &["--host", "om-constants-first"]);
        assert_eq!(code, 1, "{name}: {v}");
        assert_eq!(v["loader"], "own-copy", "{name}: {v}");
        let said = v["never_taken_over"].as_str().unwrap_or_default();
        assert!(said.contains(why), "{name}: {v}");
        let first = setup(&v, "om-constants-first");
        assert!(
            first["loader"].as_str().unwrap().contains("own copy"),
            "{name}: {v}"
        );
        // And so it is: under LD_PRELOAD its own loader still runs.
        let mut cmd = c_cmd(&host, "preload", &[&model]);
        cmd.env("LD_PRELOAD", &preload);
        for (k, _) in std::env::vars() {
            if k.starts_with("OM_CONSTANT") {
                cmd.env_remove(k);
            }
        }
        let seen = parse(&cmd.current_dir(&cwd).output().unwrap());
        assert_eq!(
            seen.process["om_loads"], 0,
            "{name}: om-constants never called"
        );
        assert_eq!(
            seen.models[0]["ok"], 0,
            "{name}: its own loader found no file"
        );
        if name != "hidden" {
            // (--exclude-libs hides the stand-in's counter too.)
            assert_eq!(seen.models[0]["standin_loads"], 1, "{name}: own loader ran");
        }
    }

    // Taken over: a stock model.
    let stock = stock_model(&s.path("stock"), "ctor", 12, &archive, &[]);
    let (_, v) = check_json(&stock, &cwd, &[]);
    assert_eq!(v["never_taken_over"], serde_json::Value::Null, "{v}");
    assert_eq!(
        setup(&v, "om-constants-first")["loader"],
        "om-constants",
        "{v}"
    );

    // Imported from a shared libcruntime.so: onnx-mlir's loader unless
    // om-constants comes first.
    let imported = stock_model(&s.path("imported"), "ctor", 13, &shared, &rpath);
    let (code, v) = check_json(&imported, &cwd, &[]);
    assert_eq!(v["loader"], "imported", "{v}");
    let lib = shared.join("ctor/libcruntime.so").display().to_string();
    assert_eq!(v["provider"]["library"], lib.as_str(), "{v}");
    assert_eq!(v["provider"]["om_constants"], false, "{v}");
    assert_eq!(code, 1, "onnx-mlir's loader finds no file from here: {v}");
    let plain = setup(&v, "plain");
    assert!(
        plain["loader"].as_str().unwrap().contains("libcruntime.so"),
        "{v}"
    );
    assert_eq!(setup(&v, "om-constants-first")["loads"], true, "{v}");
    let seen = run_in(&cwd, c_cmd(&host, "dlopen-global", &[&imported]), &[]);
    assert_eq!((seen.models[0]["ok"], seen.models[0]["match"]), (1, 1));
    assert_eq!(seen.models[0]["standin_loads"], 0, "om-constants served it");
}

/// With OM_CONSTANT_PATH naming v1's folder, checking v2 says that a host
/// started so would load v1's file for it.
#[test]
fn check_warns_when_om_constant_path_holds_another_file() {
    let s = Scratch::new("onnx-mlir-check-path");
    let archive = standin_archive(&s.path("cruntime"));
    let v1 = stock_model(&s.path("v1"), "ctor", 1, &archive, &[]);
    let v2 = stock_model(&s.path("v2"), "ctor", 2, &archive, &[]);
    let dir = v1.parent().unwrap().to_str().unwrap();
    let o = native::command(&native::tool_path())
        .args(["check", "--json", "--host", "om-constants-first"])
        .arg(&v2)
        .env("OM_CONSTANT_PATH", dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("differ") && warnings.contains(dir), "{v}");
    // The same file (a link to it) is no cause for a warning.
    std::fs::remove_file(s.path("v2/model.constants.bin")).unwrap();
    std::fs::hard_link(
        s.path("v1/model.constants.bin"),
        s.path("v2/model.constants.bin"),
    )
    .unwrap();
    let o = native::command(&native::tool_path())
        .args(["check", "--json", "--host", "om-constants-first"])
        .arg(&v2)
        .env("OM_CONSTANT_PATH", dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

/// `dir/model.so` of `shape`, relinked by the command of docs/ONNX-MLIR.md
/// ("Relinking from `--EmitObj`") as written, in `dir`: `model.o` is the
/// model's objects as one (`ld -r`), `<onnx-mlir lib>` the stand-in
/// runtime of the model's time, `/opt/om` the folder `prefix`.
fn relinked_by_the_doc(
    dir: &Path,
    shape: &str,
    seed: i64,
    archive: &Path,
    prefix: &Path,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut objects = Vec::new();
    for (name, ir) in [
        ("graph.o", model_ir(dir, shape)),
        ("compute.o", manifest_dir().join("c_tests/model_compute.ll")),
    ] {
        let mut c = clang();
        c.arg("-c").arg(ir).arg("-o").arg(dir.join(name));
        check(c, &format!("clang -c for {name}"));
        objects.push(dir.join(name));
    }
    let mut ld = Command::new("ld");
    ld.arg("-r")
        .args(&objects)
        .arg("-o")
        .arg(dir.join("model.o"));
    check(ld, "ld -r model.o");
    let lines = docs::commands("docs/ONNX-MLIR.md", "Relinking from `--EmitObj`");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let runtime = archive.join(loader_line(shape));
    let line = lines[0].replace("<onnx-mlir lib>", runtime.to_str().unwrap());
    run_doc_line(&line, prefix, dir);
    write_constants(&dir.join("model.constants.bin"), seed);
    dir.join("model.so")
}

/// Relinking `onnx-mlir --EmitObj` output with om-constants before the
/// runtime library: the model imports the loader, and any host serves it.
#[test]
fn relinking_with_om_constants_first_imports_the_loader() {
    let s = Scratch::new("onnx-mlir-relink");
    let archive = standin_archive(&s.path("cruntime"));
    let prefix = installed_prefix(&s.dir);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    for shape in SHAPES {
        let model = relinked_by_the_doc(&s.path(shape), shape, 8, &archive, &prefix);
        let seen = run_in(&cwd, c_cmd(&host, "none", &[&model]), &[]);
        let m = &seen.models[0];
        assert_eq!((m["ok"], m["match"]), (1, 1), "{shape}");
        assert_eq!(
            m["standin_loads"], -1,
            "{shape}: no copy of the runtime's loader"
        );
        assert_eq!(seen.process["om_loads"], 1, "{shape}");

        let (code, v) = check_json(&model, &cwd, &[]);
        assert_eq!(v["loader"], "imported", "{v}");
        assert_eq!(v["provider"]["om_constants"], true, "{v}");
        assert_eq!(code, 0, "it loads in any host: {v}");
    }
}

/// A host that puts om-constants in the global scope after a model's own
/// loader ran: the destructor's release reaches om-constants, which never
/// loaded that slot. It is refused, clearly, and nothing is freed or
/// crashes.
#[test]
fn a_loader_replaced_half_way_is_refused_clearly() {
    let s = Scratch::new("onnx-mlir-late");
    let archive = standin_archive(&s.path("cruntime"));
    let model = stock_model(&s.path("m"), "ctor", 4, &archive, &[]);
    let host = c_host(&s.dir, false);
    // From the model's folder, so the model's own loader finds the file.
    let seen = run_in(&s.path("m"), c_cmd(&host, "late", &[&model]), &[]);
    assert_eq!(seen.models[0]["ok"], 1);
    assert_eq!(seen.models[0]["match"], 1);
    assert_eq!(
        seen.models[0]["standin_loads"], 1,
        "its own loader loaded it"
    );
    assert_eq!(seen.process["om_loads"], 0);
    assert_eq!(seen.process["om_live_closed"], 0, "nothing of ours to free");
    assert!(
        seen.stderr.contains("which om-constants did not load")
            && seen.stderr.contains("before loading any model"),
        "the refusal says what happened and the fix: {}",
        seen.stderr
    );
}

/// A model whose constructor failed to load (no file) releases its empty
/// slot in its destructor: false, quietly, as onnx-mlir's loader does.
#[test]
fn unload_after_a_failed_load_is_quiet() {
    let s = Scratch::new("onnx-mlir-quiet");
    let archive = standin_archive(&s.path("cruntime"));
    let model = stock_model(&s.path("m"), "ctor", 5, &archive, &[]);
    std::fs::remove_file(s.path("m/model.constants.bin")).unwrap();
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    let mut cmd = c_cmd(&host, "dlopen-global", &[&model]);
    // The host's oracle cannot read the missing file: its own check fails,
    // so look at the output directly.
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.current_dir(&cwd).output().unwrap();
    let seen = parse(&o);
    assert_eq!(seen.models[0]["ok"], 0);
    let errors: Vec<&str> = seen
        .stderr
        .lines()
        .filter(|l| l.starts_with("om-constants: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "only the failed load: {}", seen.stderr);
    assert!(errors[0].contains("not found"), "{}", errors[0]);
}
