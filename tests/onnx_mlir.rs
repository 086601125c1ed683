//! Models that carry their own loader, as every model onnx-mlir links does
//! (docs/ONNX-MLIR.md): each way of putting om-constants in front of that
//! copy without a rebuild, from C (c_tests/onnx_mlir/host.c) and Python
//! (host.py), with both IR shapes; onnx-mlir's ExecutionSession pattern with
//! two versions of a model; the `-l` pitfall; a loader replaced half-way;
//! and `om-constants check` on such models.
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

/// The stand-in for onnx-mlir's libcruntime.a, archived in `dir`.
fn standin_archive(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let obj = dir.join("standin_cruntime.o");
    let mut cc = compiler(Lang::C99);
    cc.args(["-c", "-fPIC", "-D_GNU_SOURCE"])
        .arg(manifest_dir().join("c_tests/onnx_mlir/standin_cruntime.c"))
        .arg("-o")
        .arg(&obj);
    check(cc, "compile standin_cruntime.c");
    let mut ar = Command::new("ar");
    ar.arg("rcs")
        .arg(dir.join("libstandin_cruntime.a"))
        .arg(&obj);
    check(ar, "ar rcs libstandin_cruntime.a");
    dir.to_path_buf()
}

/// `dir/model.so` of `shape`, linked as onnx-mlir's driver links a model:
/// `cc model.o -shared -o model.so -L<lib> -lcruntime` then `extra` (the
/// user's `-l` libraries), with lazy binding; its constants file beside it.
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
        .arg(format!("-L{}", archive.display()))
        .arg("-lstandin_cruntime")
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

/// The C host, linked with the library (`linked`) or not.
fn c_host(dir: &Path, linked: bool) -> PathBuf {
    let exe = dir.join(if linked { "host_linked" } else { "host" });
    let mut cmd = compiler(Lang::C99);
    cmd.arg(manifest_dir().join("c_tests/onnx_mlir/host.c"))
        .arg("-o")
        .arg(&exe);
    if linked {
        let lib = lib_dir(dir);
        cmd.arg("-DOM_LINKED")
            .arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lom_constants");
    }
    cmd.arg("-ldl");
    check(cmd, "compile c_tests/onnx_mlir/host.c");
    exe
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
    let mut c = native::command(exe);
    c.arg(way).arg(shipped_lib()).args(models);
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
    let s = Scratch::new("onnx-mlir-ways");
    let archive = standin_archive(&s.path("cruntime"));
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    let linked = c_host(&s.dir, true);
    let lib = shipped_lib();
    let preload = lib.to_str().unwrap();
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
                py_cmd("session", &m),
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

/// onnx-mlir's ExecutionSession sets OM_CONSTANT_PATH to each model's
/// folder around its dlopen: two versions of a model, each with its own
/// `model.constants.bin`, get their own weights (the library once read the
/// variable once per process, and served v2 with v1's file).
#[test]
fn execution_session_gives_each_version_its_own_weights() {
    let s = Scratch::new("onnx-mlir-session");
    let archive = standin_archive(&s.path("cruntime"));
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    for shape in SHAPES {
        let v1 = stock_model(&s.path(&format!("{shape}/v1")), shape, 1, &archive, &[]);
        let v2 = stock_model(&s.path(&format!("{shape}/v2")), shape, 2, &archive, &[]);
        let m = [v1.as_path(), v2.as_path()];
        let c = run_in(&cwd, c_cmd(&host, "session", &m), &[]);
        served_by_om(&c, shape, &format!("{shape}: C ExecutionSession"));
        let py = run_in(&cwd, py_cmd("session", &m), &[]);
        served_by_om(&py, shape, &format!("{shape}: Python ExecutionSession"));
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
    assert!(seen
        .stderr
        .contains("standin-cruntime: Error while opening"));

    let o = native::command(&native::tool_path())
        .args(["check", "--json"])
        .arg(&model)
        .current_dir(&cwd)
        .env_remove("OM_CONSTANT_PATH")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["loader"], "own-copy", "{v}");
    assert!(o.status.success(), "om-constants would find it: {v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("LD_PRELOAD") && notes.contains("RTLD_GLOBAL"),
        "{notes}"
    );
    assert!(notes.contains("which does not exist here"), "{notes}");
}

/// The flags docs/ONNX-MLIR.md ("Relinking from `--EmitObj`") puts between
/// the model and the runtime library, with the shipped library's folder for
/// `/opt/om/lib` (and an rpath to it, for the test's host to start).
fn relink_flags_of_the_doc(scratch: &Path) -> Vec<String> {
    let lines = docs::commands("docs/ONNX-MLIR.md", "Relinking from `--EmitObj`");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // c++ model.o -o model.so -shared -fPIC  <these>  -L<onnx-mlir lib> -lcruntime
    let (head, runtime) = lines[0]
        .split_once(" -L<onnx-mlir lib> ")
        .expect("the runtime library's folder");
    assert_eq!(runtime, "-lcruntime", "{lines:?}");
    let words: Vec<&str> = head.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "-fPIC").expect("-fPIC") + 1;
    let lib = lib_dir(scratch);
    let mut flags: Vec<String> = words[start..]
        .iter()
        .map(|w| w.replace("/opt/om/lib", lib.to_str().unwrap()))
        .collect();
    assert!(flags.contains(&"-lom_constants".to_string()), "{flags:?}");
    flags.push(format!("-Wl,-rpath,{}", lib.display()));
    flags
}

/// Relinking `onnx-mlir --EmitObj` output with om-constants before the
/// runtime library: the model imports the loader, and any host serves it.
#[test]
fn relinking_with_om_constants_first_imports_the_loader() {
    let s = Scratch::new("onnx-mlir-relink");
    let archive = standin_archive(&s.path("cruntime"));
    let first = relink_flags_of_the_doc(&s.dir);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let host = c_host(&s.dir, false);
    for shape in SHAPES {
        let model = linked_model(&s.path(shape), shape, 8, &first, &archive, &[]);
        let seen = run_in(&cwd, c_cmd(&host, "none", &[&model]), &[]);
        let m = &seen.models[0];
        assert_eq!((m["ok"], m["match"]), (1, 1), "{shape}");
        assert_eq!(
            m["standin_loads"], -1,
            "{shape}: no copy of the runtime's loader"
        );
        assert_eq!(seen.process["om_loads"], 1, "{shape}");

        let o = native::command(&native::tool_path())
            .args(["check", "--json"])
            .arg(&model)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["loader"], "imported", "{v}");
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
