//! `om-constants check MODEL`, as it ships (target/release/om-constants), on
//! IR models compiled here: with and without symbols, stripped, with the
//! constants file missing, short, in the wrong byte order, beside the model
//! or only in the current directory; and on input that is not a model.

#![cfg(unix)]
// Native builds only: Python hosts and binutils' `ar`/`strip` run on this
// machine, not under the emulator (docs/PLATFORMS.md); symbol lookup and the
// ELF reading are the same on every Linux architecture.
#![cfg(not(om_cross))]

mod common;
#[path = "common/models.rs"]
mod models;
#[path = "common/native.rs"]
mod native;

use std::path::Path;
use std::process::{Command, Output};

use common::{Scratch, HOST_IS_LE};
use models::check;

/// `c_tests/model_{shape}.ll` as `dir/libmodel.so`, built without
/// optimisation so that onnx-mlir's internal symbols stay in the symbol
/// table (an optimising build folds `_filesize` and `_isLE` away; see
/// `an_optimised_model_is_checked_by_what_it_keeps`), with its constants
/// file beside it. `is_le` is the byte order the model says it has. It is
/// linked with the shipped library (a relinked model: it imports the loader
/// from om-constants, found through its rpath), so that it loads in any host.
fn model_with(dir: &Path, shape: &str, seed: i64, is_le: i64, opt: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let ir = models::model_ir(dir, shape);
    let text = std::fs::read_to_string(&ir).unwrap();
    let here = format!("@om_external_constant_isLE = internal constant i8 {HOST_IS_LE}");
    let said = format!("@om_external_constant_isLE = internal constant i8 {is_le}");
    std::fs::write(&ir, text.replace(&here, &said)).unwrap();
    let so = dir.join("libmodel.so");
    let mut cmd = models::clang();
    cmd.arg(opt)
        .arg("-shared")
        .arg(&ir)
        .arg(native::manifest_dir().join("c_tests/model_compute.ll"))
        .arg("-o")
        .arg(&so);
    let lib = native::lib_dir(dir);
    cmd.arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lom_constants");
    check(cmd, &format!("clang model_{shape}.ll"));
    models::write_constants(&dir.join("model.constants.bin"), seed);
    so
}

fn model(dir: &Path, shape: &str, seed: i64) -> std::path::PathBuf {
    model_with(dir, shape, seed, HOST_IS_LE, "-O0")
}

fn tool(cwd: &Path) -> Command {
    let mut c = native::command(&native::tool_path());
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") {
            c.env_remove(k);
        }
    }
    c.current_dir(cwd);
    c
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn check_json(cwd: &Path, model: &Path, env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let o = tool(cwd)
        .args(["check", "--json"])
        .arg(model)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (o.status.success(), json_of(&o))
}

/// A model's own name for its constants file, size and byte order come from
/// its symbols, and the file beside it is the one chosen.
#[test]
fn a_model_with_symbols_beside_its_file_loads() {
    let s = Scratch::new("check-ok");
    let so = model(&s.path("m"), "ctor", 1);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let (ok, v) = check_json(&cwd, &so, &[]);
    assert!(ok, "{v}");
    assert_eq!(v["loader"], "imported", "{v}");
    assert_eq!(v["file_name"], "model.constants.bin");
    assert_eq!(v["file_name_from_symbols"], true);
    assert_eq!(v["expected_size"], models::FILE_SIZE);
    assert_eq!(v["little_endian"], HOST_IS_LE == 1);
    assert_eq!(v["stripped"], false);
    let beside = s.path("m/model.constants.bin");
    assert_eq!(v["chosen"], beside.display().to_string());
    assert_eq!(v["strategy"], "mmap");
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "model folder, then current directory");
    assert_eq!(candidates[0]["origin"], "model folder");
    assert_eq!(candidates[1]["origin"], "current directory");
    assert_eq!(candidates[1]["exists"], false);

    // The text form says the same.
    let o = tool(&cwd).arg("check").arg(&so).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("verdict: loads"), "{text}");
    assert!(
        text.contains(&format!("om-constants loads: {}", beside.display())),
        "{text}"
    );
}

#[test]
fn a_missing_or_short_file_fails_with_the_reason_and_the_fix() {
    let s = Scratch::new("check-bad-file");
    let so = model(&s.path("m"), "legacy", 2);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let file = s.path("m/model.constants.bin");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(models::FILE_SIZE - 1)
        .unwrap();
    let (ok, v) = check_json(&cwd, &so, &[]);
    assert!(!ok, "a short file would fail: {v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("but the model needs"), "{problems}");

    std::fs::remove_file(&file).unwrap();
    let (ok, v) = check_json(&cwd, &so, &[]);
    assert!(!ok, "a missing file would fail: {v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("not found; tried"), "{problems}");
    assert!(problems.contains("beside the model"), "the fix: {problems}");

    // Only in the current directory: found there (the library's search).
    models::write_constants(&cwd.join("model.constants.bin"), 2);
    let (ok, v) = check_json(&cwd, &so, &[]);
    assert!(ok, "{v}");
    assert_eq!(
        v["chosen"],
        cwd.join("model.constants.bin").display().to_string()
    );

    // OM_CONSTANT_PATH set to a folder without it: the only place searched.
    let empty = s.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, v) = check_json(&cwd, &so, &[("OM_CONSTANT_PATH", empty.to_str().unwrap())]);
    assert!(!ok, "{v}");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 1);
    assert!(
        v["problems"]
            .to_string()
            .contains("OM_CONSTANT_PATH is set"),
        "{v}"
    );
}

/// Both the model's folder and the current directory hold a file of that
/// name: the model's folder is chosen, and the note says why.
#[test]
fn the_model_folder_wins_over_the_current_directory_and_says_so() {
    let s = Scratch::new("check-both");
    let so = model(&s.path("m"), "ctor", 3);
    let cwd = s.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    models::write_constants(&cwd.join("model.constants.bin"), 9);
    let (ok, v) = check_json(&cwd, &so, &[]);
    assert!(ok, "{v}");
    assert_eq!(
        v["chosen"],
        s.path("m/model.constants.bin").display().to_string()
    );
    let notes = v["notes"].to_string();
    assert!(notes.contains("exists too and is not used"), "{notes}");
}

#[test]
fn the_wrong_byte_order_fails() {
    let s = Scratch::new("check-order");
    let so = model_with(&s.path("m"), "ctor", 4, 1 - HOST_IS_LE, "-O0");
    let (ok, v) = check_json(&s.dir, &so, &[]);
    assert!(!ok, "{v}");
    assert_eq!(v["little_endian"], HOST_IS_LE == 0);
    assert!(v["problems"].to_string().contains("byte order"), "{v}");
}

/// Built with -O2 (as the other tests' models are), the size and byte
/// order constants are folded into the code: the name is still read, the
/// size and byte order are read from the calls to the loader (x86-64), so a
/// short file still fails; the check says where each came from.
#[test]
fn an_optimised_model_is_checked_by_what_it_keeps() {
    let s = Scratch::new("check-o2");
    for shape in ["ctor", "legacy"] {
        let so = model_with(&s.path(shape), shape, 7, HOST_IS_LE, "-O2");
        let (ok, v) = check_json(&s.dir, &so, &[]);
        assert!(ok, "{v}");
        assert_eq!(v["file_name"], "model.constants.bin");
        assert_eq!(v["file_name_from_symbols"], true);
        let notes = v["notes"].to_string();
        assert!(notes.contains("om_external_constant_filesize"), "{notes}");
        if !cfg!(target_arch = "x86_64") {
            assert_eq!(v["expected_size"], serde_json::Value::Null);
            continue;
        }
        assert_eq!(v["expected_size"], models::FILE_SIZE, "{shape}: {v}");
        assert_eq!(v["expected_size_from_code"], true, "{v}");
        assert_eq!(v["little_endian"], HOST_IS_LE == 1, "{v}");
        assert!(notes.contains("read from the arguments"), "{notes}");

        // A file one byte short fails, as the library would refuse it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(s.path(&format!("{shape}/model.constants.bin")))
            .unwrap()
            .set_len(models::FILE_SIZE - 1)
            .unwrap();
        let (ok, v) = check_json(&s.dir, &so, &[]);
        assert!(!ok, "{shape}: {v}");
        assert!(
            v["problems"].to_string().contains("but the model needs"),
            "{v}"
        );
    }
}

/// Stripped, the model's internal symbols are gone: the name is guessed
/// from the model's own, and the check says what it could not see.
#[test]
fn a_stripped_model_is_named_as_such() {
    let s = Scratch::new("check-stripped");
    let so = model(&s.path("m"), "ctor", 5);
    let stripped = s.path("m/model.so");
    let mut strip = Command::new("strip");
    strip.arg("-o").arg(&stripped).arg(&so);
    check(strip, "strip");
    let (ok, v) = check_json(&s.dir, &stripped, &[]);
    assert!(ok, "the guessed name is beside it: {v}");
    assert_eq!(v["stripped"], true);
    assert_eq!(v["file_name"], "model.constants.bin");
    assert_eq!(v["file_name_from_symbols"], false);
    // The size is still in the code's call to the loader (read on x86-64).
    if cfg!(target_arch = "x86_64") {
        assert_eq!(v["expected_size"], models::FILE_SIZE, "{v}");
    } else {
        assert_eq!(v["expected_size"], serde_json::Value::Null, "{v}");
    }
    assert!(v["notes"].to_string().contains("stripped"), "{v}");
}

/// The library itself, or a program with its static archive linked in, is
/// named as such, with nothing to load.
#[test]
fn om_constants_itself_is_recognised() {
    let s = Scratch::new("check-itself");
    let lib = native::artefacts().join("libom_constants.so");
    let (ok, v) = check_json(&s.dir, &lib, &[]);
    assert!(ok, "{v}");
    assert_eq!(v["loader"], "om-constants", "{v}");
    assert_eq!(v["file_name"], serde_json::Value::Null, "{v}");
}

/// A model the user may not read: the error names the path, the OS error
/// and the fix (run as nobody: root reads anything).
#[test]
fn an_unreadable_model_gets_a_clear_error() {
    let s = Scratch::new("check-unreadable");
    let so = model(&s.path("m"), "ctor", 8);
    let locked = s.path("m/locked.so");
    std::fs::copy(&so, &locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(native::tool_path())
        .arg("check")
        .arg(&locked)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("setpriv (util-linux) is needed: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Permission denied") && err.contains(&locked.display().to_string()),
        "{err}"
    );
    assert!(err.contains("check its permissions"), "the fix: {err}");
}

#[test]
fn input_that_is_not_a_model_gets_a_clear_error() {
    let s = Scratch::new("check-input");
    let so = model(&s.path("m"), "ctor", 6);
    let text = s.path("notes.txt");
    std::fs::write(&text, "not an object file").unwrap();
    let truncated = s.path("truncated.so");
    let bytes = std::fs::read(&so).unwrap();
    std::fs::write(&truncated, &bytes[..200]).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&s.path("absent.so"), "No such file"),
        (&s.dir, "is a directory"),
        (&text, "is not an object file"),
        (&truncated, "truncated.so"),
    ];
    for (path, want) in cases {
        let o = tool(&s.dir).arg("check").arg(path).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", path.display());
        assert!(err.contains(want), "{}: {err}", path.display());
        assert!(
            err.contains(&path.display().to_string()),
            "names the path: {err}"
        );
    }
}

/// The check says how much of the constants file's page cache a mapping
/// would get in 2 MiB pages, and why not: here 64 MiB of it were just
/// written in 1 MiB pieces (small folios), which the default leaves as
/// they are (this kernel cannot collapse a file's pages in place).
#[cfg(target_os = "linux")]
#[test]
fn the_check_names_the_2_mib_page_share_and_why_it_is_low() {
    use std::io::{Seek, SeekFrom, Write};
    let s = Scratch::new("check-pages");
    let so = model(&s.path("m"), "ctor", 1);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("m/model.constants.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(2 << 20)).unwrap();
    for _ in 0..64 {
        f.write_all(&[7u8; 1 << 20]).unwrap();
    }
    drop(f);
    let o = tool(&s.dir).arg("check").arg(&so).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("2 MiB pages: "))
        .unwrap_or_else(|| panic!("no 2 MiB pages line: {text}"));
    assert!(
        line.contains("0% of the 64 MiB of it in the page cache"),
        "{line}"
    );
    assert!(
        line.contains("stays in small pages") && line.contains("reread"),
        "{line}"
    );
    let (_, v) = check_json(&s.dir, &so, &[]);
    assert!(
        v["huge_pages"].as_str().is_some_and(|p| p.contains("0%")),
        "{v}"
    );
}
