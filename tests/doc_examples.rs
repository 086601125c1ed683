//! The docs' code works as written (README.md and every page of `docs/`):
//! every C block compiles as C99 with the project's warnings, the README's
//! "Use from C" program is built and run with the README's own commands
//! against the library as it ships, and every other command is run, by this
//! test or by the test that [`docs::RUN_ELSEWHERE`] names, or checked: the
//! tool's arguments parse, a script exists and parses, a cargo command is
//! one that CI runs. The tool and script commands the docs give inline, in
//! the text, are checked the same way.

// Unix only: the docs' shell commands. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]
// Native builds only: the docs' commands build for this machine (docs/PLATFORMS.md).
#![cfg(not(om_cross))]

#[path = "common/docs.rs"]
mod docs;
#[path = "common/native.rs"]
mod native;

use std::process::Command;

use native::{artefacts, manifest_dir, shown, tool_path, Lang};

#[test]
fn every_c_block_compiles_as_c99_without_warnings() {
    let dir = std::env::temp_dir().join(format!("om-docs-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c_blocks: Vec<_> = docs::all_blocks()
        .into_iter()
        .filter(|b| b.lang == "c")
        .collect();
    assert!(c_blocks.len() >= 2, "the docs' C blocks were not found");
    for (i, b) in c_blocks.iter().enumerate() {
        let src = dir.join(format!("block{i}.c"));
        std::fs::write(&src, &b.body).unwrap();
        let mut cmd = native::compiler(Lang::C99);
        cmd.arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(dir.join(format!("block{i}.o")));
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "the C block under '{}' in {} does not compile: {}\n{}",
            b.heading,
            b.doc,
            shown(&cmd),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The program and the commands under "Use from C", then the static link
/// command under "Linking", run literally in a folder laid out like the
/// repository (`include/`, `target/release/`).
#[test]
fn the_use_from_c_program_builds_and_runs_with_the_readme_commands() {
    let program = docs::blocks("README.md")
        .into_iter()
        .find(|b| b.lang == "c" && b.heading == "Use from C")
        .expect("a C block under Use from C");
    let lines = docs::commands("README.md", "Use from C");

    let dir = std::env::temp_dir().join(format!("om-readme-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("target")).unwrap();
    std::os::unix::fs::symlink(manifest_dir().join("include"), dir.join("include")).unwrap();
    // `cargo build --release`: artefacts() has just run exactly that.
    std::os::unix::fs::symlink(artefacts(), dir.join("target/release")).unwrap();
    std::fs::write(dir.join("app.c"), &program.body).unwrap();

    assert_eq!(
        lines.first().map(String::as_str),
        Some("cargo build --release"),
        "{lines:?}"
    );
    let run = |line: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(&dir)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "`{line}` failed:\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let mut last = String::new();
    for line in &lines[1..] {
        last = run(line);
    }
    assert!(last.starts_with("first byte: "), "{last}");

    // The static link the README gives inline, then the program runs with
    // no library to find.
    let text = docs::text("README.md");
    let section = &text[text.find("## Linking").expect("a Linking section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let cmd = section
        .split('`')
        .find(|c| c.starts_with("cc ") && c.contains("libom_constants.a"))
        .expect("the static link command under Linking");
    run(cmd);
    assert!(run("./app weights.bin 4096").starts_with("first byte: "));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command line without its leading `NAME=value` assignments.
fn without_env(line: &str) -> &str {
    let mut rest = line.trim();
    while let Some((word, tail)) = rest.split_once(' ') {
        if !word.contains('=') || word.starts_with('-') {
            break;
        }
        rest = tail.trim_start();
    }
    rest
}

/// True when `words` appear, in order, among the words of `line`.
fn is_subsequence(words: &[&str], line: &str) -> bool {
    let mut have = line.split_whitespace();
    words.iter().all(|w| have.any(|h| h == *w))
}

/// Checks one command of the docs that no other test runs; an error says
/// why it is not accounted for.
fn check_command(line: &str, ci: &str) -> Result<(), String> {
    let cmd = without_env(line);
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let tool_args = if words.first() == Some(&"om-constants") {
        Some(&words[1..])
    } else if cmd.starts_with("cargo run --release --bin om-constants -- ") {
        Some(&words[6..])
    } else {
        None
    };
    if let Some(args) = tool_args {
        // The tool parses the arguments in order and stops at --help: an
        // unknown command, option or value fails before it.
        let o = Command::new(tool_path())
            .args(args)
            .arg("--help")
            .output()
            .map_err(|e| e.to_string())?;
        return o.status.success().then_some(()).ok_or_else(|| {
            format!(
                "the tool refuses it: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
    }
    if let Some(script) = cmd.strip_prefix("bash ") {
        let script = script.split_whitespace().next().unwrap_or("");
        let path = manifest_dir().join(script);
        if !path.is_file() {
            return Err(format!("{script} does not exist"));
        }
        let o = Command::new("bash").arg("-n").arg(&path).output();
        return match o {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(format!("{script} does not parse (bash -n)")),
        };
    }
    if words.first() == Some(&"cargo") {
        let all: Vec<&str> = line.split_whitespace().collect();
        return ci
            .lines()
            .any(|l| is_subsequence(&all, l))
            .then_some(())
            .ok_or_else(|| "no line of scripts/test-all.sh runs it".to_string());
    }
    Err("no test runs or checks this kind of command: add a check here".to_string())
}

#[test]
fn every_command_in_the_docs_is_run_or_checked() {
    let ci = std::fs::read_to_string(manifest_dir().join("scripts/test-all.sh")).unwrap();
    // The sections other tests run must still be there, with commands.
    for (doc, heading, _) in docs::RUN_ELSEWHERE {
        docs::commands(doc, heading);
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for b in docs::all_blocks() {
        match b.lang.as_str() {
            // The one Python block is README's "Use from Python", which
            // tests/onnx_mlir/python.rs runs (RUN_ELSEWHERE).
            "c" | "text" | "python" => continue,
            "cmake" => {
                // The snippet is what the test's consumer project does.
                let consumer = std::fs::read_to_string(
                    manifest_dir().join("c_tests/cmake_consumer/CMakeLists.txt"),
                )
                .unwrap();
                for l in docs::command_lines(&b.body) {
                    checked += 1;
                    if !consumer.lines().any(|c| c.trim() == l.trim()) {
                        failures.push(format!(
                            "{} ({}): `{l}` is not in c_tests/cmake_consumer/CMakeLists.txt",
                            b.doc, b.heading
                        ));
                    }
                }
                continue;
            }
            "sh" => {}
            other => {
                failures.push(format!("{} ({}): a block in `{other}`", b.doc, b.heading));
                continue;
            }
        }
        if docs::RUN_ELSEWHERE
            .iter()
            .any(|(d, h, _)| *d == b.doc && *h == b.heading)
        {
            continue;
        }
        for line in docs::command_lines(&b.body) {
            checked += 1;
            if let Err(why) = check_command(&line, &ci) {
                failures.push(format!("{} ({}): `{line}`: {why}", b.doc, b.heading));
            }
        }
    }
    assert!(checked >= 10, "only {checked} commands found in the docs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_inline_tool_and_script_command_in_the_docs_is_checked() {
    let ci = std::fs::read_to_string(manifest_dir().join("scripts/test-all.sh")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for doc in docs::docs() {
        for span in docs::inline_spans(&docs::text(&doc)) {
            let tool = span.starts_with("om-constants ")
                || span.starts_with("cargo run --release --bin om-constants -- ");
            if !tool && !span.starts_with("bash scripts/") {
                continue;
            }
            checked += 1;
            if let Err(why) = check_command(&span, &ci) {
                failures.push(format!("{doc}: `{span}`: {why}"));
            }
        }
    }
    assert!(checked >= 5, "only {checked} inline commands found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
