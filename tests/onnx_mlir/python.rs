//! The Python package (python/; README.md, "Use from Python") in a fresh
//! virtual environment, made once per run by the README's own commands in
//! a folder laid out like the repository: installed, imported, and serving
//! stock models opened as onnx-mlir's PyRuntime opens them (host.py
//! `package-*`), its `check` agreeing, the late import warning, and the
//! wheel's manylinux tag matching the glibc versions the built files need.

use std::sync::OnceLock;

use super::*;

/// The folder the README's "Use from Python" commands ran in: `python`
/// (a link to the repository's), `venv` (the environment they made),
/// `model.so` and its constants file, `app.py` (the README's block); and
/// what the last command printed.
struct Readme {
    dir: PathBuf,
    printed: String,
}

/// Runs the README's commands once per test run: the other tests here use
/// the environment they made.
fn readme() -> &'static Readme {
    static DONE: OnceLock<Readme> = OnceLock::new();
    DONE.get_or_init(|| {
        // The folder outlives every test of the run (a static has no
        // Drop), so it lives in this target's scratch folder under a fixed
        // name that the next run replaces: runs never pile up copies.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-python");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(manifest_dir().join("python"), dir.join("python")).unwrap();
        // An onnx-mlir model put into the folder, as the README says. Moved,
        // not copied: its constants file is 4 GiB of mostly holes, which a
        // copy would write out in full.
        let archive = standin_archive(&dir.join("cruntime"));
        let built = stock_model(&dir.join("built"), "ctor", 31, &archive, &[]);
        std::fs::rename(&built, dir.join("model.so")).unwrap();
        std::fs::rename(
            built.with_file_name("model.constants.bin"),
            dir.join("model.constants.bin"),
        )
        .unwrap();
        let app = docs::blocks("README.md")
            .into_iter()
            .find(|b| b.lang == "python" && b.heading == "Use from Python")
            .expect("a Python block under Use from Python");
        std::fs::write(dir.join("app.py"), &app.body).unwrap();
        let lines = docs::commands("README.md", "Use from Python");
        assert_eq!(lines.len(), 3, "{lines:?}");
        let mut printed = String::new();
        for line in &lines {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(line).current_dir(&dir);
            native::unshadow(&mut cmd);
            for (k, _) in std::env::vars() {
                if k.starts_with("OM_CONSTANT") {
                    cmd.env_remove(k);
                }
            }
            // A build of its own for the package (python/setup.py's
            // default), not whatever folder this test run builds in.
            cmd.env_remove("CARGO_TARGET_DIR");
            // The stand-in for onnx-mlir's PyRuntime module (a real one is
            // installed with onnx-mlir; c_tests/onnx_mlir/PyRuntime.py).
            cmd.env("PYTHONPATH", manifest_dir().join("c_tests/onnx_mlir"));
            let o = cmd.output().unwrap();
            printed = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "`{line}` failed:\n{printed}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Readme { dir, printed }
    })
}

/// The environment's Python, running host.py (the package way) with `way`.
fn venv_host(way: &str, models: &[&Path]) -> Command {
    let mut c = Command::new(readme().dir.join("venv/bin/python"));
    c.arg(manifest_dir().join("c_tests/onnx_mlir/host.py"))
        .arg(way)
        .arg("-")
        .args(models);
    c
}

/// The environment's Python, running `code`; its standard output.
fn venv_python(code: &str, cwd: &Path) -> String {
    let o = Command::new(readme().dir.join("venv/bin/python"))
        .args(["-c", code])
        .current_dir(cwd)
        .env_remove("OM_CONSTANT_PATH")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python -c {code}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_use_from_python_commands_install_the_package_and_serve_a_model() {
    let r = readme();
    // app.py: one load, through om-constants, and check says so.
    assert_eq!(r.printed, "1\nTrue\n", "app.py printed");
    // The tool is installed as a command too.
    let o = Command::new(r.dir.join("venv/bin/om-constants"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("om-constants "),
        "{o:?}"
    );
    // The version the module reports is the package's and the crate's.
    let v = venv_python(
        "import om_constants, importlib.metadata as m; \
         print(om_constants.version(), m.version('om-constants'))",
        &r.dir,
    );
    let want = env!("CARGO_PKG_VERSION");
    assert_eq!(v.trim(), format!("{want} {want}"));
}

#[test]
fn the_package_gives_each_version_of_a_stock_model_its_own_weights() {
    let (s, archive, cwd, _) = setting("python-package-session");
    for shape in SHAPES {
        let (v1, v2) = two_versions(&s, shape, &archive, &[]);
        let m = [v1.as_path(), v2.as_path()];
        for line in ["package-v05", "package-released", "package-newest"] {
            let seen = run_in(&cwd, venv_host(line, &m), &[]);
            served_by_om(&seen, shape, &format!("{shape}: Python {line}"));
        }
    }
}

#[test]
fn check_from_python_agrees_and_reports_a_model_no_import_can_serve() {
    let (s, archive, cwd, _) = setting("python-package-check");
    let stock = stock_model(&s.path("stock"), "ctor", 41, &archive, &[]);
    let symbolic = stock_model(
        &s.path("symbolic"),
        "ctor",
        42,
        &archive,
        &["-Wl,-Bsymbolic".to_string()],
    );
    let code = |model: &Path| {
        format!(
            "import json, om_constants; r = om_constants.check({:?}); \
             print(json.dumps({{'loads': r['loads'], 'never': r['never_taken_over'], \
             'loader': r['loader']}}))",
            model.display().to_string()
        )
    };
    let stock_says: serde_json::Value =
        serde_json::from_str(&venv_python(&code(&stock), &cwd)).unwrap();
    assert_eq!(stock_says["loads"], true, "{stock_says}");
    assert_eq!(stock_says["never"], serde_json::Value::Null, "{stock_says}");
    // The tool's own answer for the same setup, as the package asks it.
    let (_, tool) = check_json(&stock, &cwd, &["--host", "om-constants-first"]);
    assert_eq!(tool["loads"], stock_says["loads"], "{tool}");
    // And the host agrees: served by om-constants.
    let seen = run_in(&cwd, venv_host("package-released", &[&stock]), &[]);
    served_by_om(&seen, "ctor", "Python package, stock model");

    let symbolic_says: serde_json::Value =
        serde_json::from_str(&venv_python(&code(&symbolic), &cwd)).unwrap();
    assert_eq!(symbolic_says["loads"], false, "{symbolic_says}");
    assert!(
        symbolic_says["never"]
            .as_str()
            .is_some_and(|w| w.contains("-Bsymbolic")),
        "{symbolic_says}"
    );
    // So it is: its own loader runs, om-constants never does.
    let seen = run_in(&cwd, venv_host("package-released", &[&symbolic]), &[]);
    assert_eq!(
        seen.process["om_loads"], 0,
        "-Bsymbolic: om-constants never called"
    );
    assert_eq!(
        seen.models[0]["standin_loads"], 1,
        "-Bsymbolic: its own loader ran"
    );

    // An error carries the tool's message.
    let missing = s.path("no-such-model.so");
    let err = venv_python(
        &format!(
            "import om_constants\ntry:\n    om_constants.check({:?})\nexcept om_constants.Error as e:\n    print('Error:', e)",
            missing.display().to_string()
        ),
        &cwd,
    );
    assert!(
        err.starts_with("Error:") && err.contains("no-such-model.so"),
        "{err}"
    );
}

#[test]
fn importing_after_a_model_opened_rtld_global_warns_with_the_fix() {
    let (s, archive, cwd, _) = setting("python-package-late");
    let (v1, v2) = two_versions(&s, "ctor", &archive, &[]);
    let seen = run_in(&cwd, venv_host("package-late", &[&v1, &v2]), &[]);
    assert_eq!(seen.process["warned"], 1, "{}", seen.stderr);
    assert_eq!(seen.process["fix"], 1, "the warning names the fix");
    // As it says: both models keep their own loader (the first model's
    // copy answers the second's calls), om-constants loads nothing.
    assert_eq!(seen.process["om_loads"], 0);
    // Imported first, nothing is said.
    let quiet = venv_python(
        "import warnings\nwith warnings.catch_warnings():\n    warnings.simplefilter('error')\n    import om_constants\nprint('quiet')",
        &cwd,
    );
    assert_eq!(quiet.trim(), "quiet");
}

#[test]
fn stats_and_prepare_follow_the_library() {
    let r = readme();
    // The module's stats struct is the header's, field for field.
    let header = std::fs::read_to_string(manifest_dir().join("include/om_constants.h")).unwrap();
    let body = header
        .split("struct om_constants_stats {")
        .nth(1)
        .and_then(|b| b.split("};").next())
        .expect("struct om_constants_stats in the header");
    let want: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';') && !l.starts_with('*'))
        .filter_map(|l| l.trim_end_matches(';').split_whitespace().last())
        .collect();
    let have = venv_python(
        "import om_constants; print(' '.join(n for n, _ in om_constants._STATS_FIELDS))",
        &r.dir,
    );
    assert_eq!(have.split_whitespace().collect::<Vec<_>>(), want);

    // prepare: the tool's JSON as Python objects; an error raises.
    let out = venv_python(
        "import om_constants\n\
         r = om_constants.prepare('model.constants.bin')\n\
         print(len(r), r[0]['file'], 0 <= r[0]['huge_page_share'] <= 1, type(r[0]['prepared']).__name__)\n\
         try:\n    om_constants.prepare('missing.bin')\nexcept om_constants.Error as e:\n    print('Error:', e)",
        &r.dir,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1 model.constants.bin True bool", "{out}");
    assert!(
        lines[1].starts_with("Error: missing.bin") && lines[1].contains("No such file"),
        "{out}"
    );
}

#[test]
fn the_wheel_is_tagged_with_the_glibc_its_files_need() {
    let r = readme();
    let wheels = r.dir.join("wheels");
    let mut cmd = Command::new(r.dir.join("venv/bin/pip"));
    cmd.args(["wheel", "--no-deps", "-q", "-w"])
        .arg(&wheels)
        .arg("./python")
        .current_dir(&r.dir);
    native::unshadow(&mut cmd);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "pip wheel: {o:?}");
    let name = std::fs::read_dir(&wheels)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".whl"))
        .expect("a wheel");
    // The newest GLIBC_2.N the installed library and tool need, as binutils
    // reads them.
    let site = venv_python(
        "import om_constants; print(om_constants.library_path()); print(om_constants.cli_path())",
        &r.dir,
    );
    let mut newest = 0;
    for file in site.lines() {
        let o = Command::new("readelf").args(["-V", file]).output().unwrap();
        assert!(o.status.success(), "readelf -V {file}");
        for word in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Some(minor) = word.strip_prefix("GLIBC_2.") {
                let minor: u32 = minor.split('.').next().unwrap().parse().unwrap_or(0);
                newest = newest.max(minor);
            }
        }
    }
    assert!(newest > 0, "no GLIBC version read");
    let arch = std::env::consts::ARCH;
    let want = format!(
        "om_constants-{}-py3-none-manylinux_2_{newest}_{arch}.whl",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(name, want);
}
