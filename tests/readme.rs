//! The README's code works as written: every C block compiles as C99 with
//! the project's warnings, and the "Use from C" program is built and run
//! with the README's own commands, against the library as it ships.

// Unix only: the README's shell commands. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (README, Platforms).
#![cfg(unix)]
// Native builds only: the README's commands build for this machine (README, Platforms).
#![cfg(not(om_cross))]

#[path = "common/native.rs"]
mod native;

use std::process::Command;

use native::{artefacts, manifest_dir, shown, Lang};

/// The README's fenced blocks: (language, body, the heading above it).
fn blocks() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut open {
            Some((lang, body)) => {
                if line.starts_with("```") {
                    out.push((lang.clone(), std::mem::take(body), heading.clone()));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    heading = h.to_string();
                } else if let Some(lang) = line.strip_prefix("```") {
                    open = Some((lang.trim().to_string(), String::new()));
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block in the README");
    out
}

#[test]
fn every_c_block_compiles_as_c99_without_warnings() {
    let dir = std::env::temp_dir().join(format!("om-readme-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c_blocks: Vec<_> = blocks().into_iter().filter(|b| b.0 == "c").collect();
    assert!(c_blocks.len() >= 2, "the README's C blocks were not found");
    for (i, (_, body, heading)) in c_blocks.iter().enumerate() {
        let src = dir.join(format!("block{i}.c"));
        std::fs::write(&src, body).unwrap();
        let mut cmd = native::compiler(Lang::C99);
        cmd.arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(dir.join(format!("block{i}.o")));
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "the C block under '{heading}' does not compile: {}\n{}",
            shown(&cmd),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The program and the commands under "Use from C", shared and static, run
/// literally in a folder laid out like the repository (`include/`,
/// `target/release/`).
#[test]
fn the_use_from_c_program_builds_and_runs_with_the_readme_commands() {
    let all = blocks();
    let mut in_section = all.iter().filter(|b| b.2 == "Use from C");
    let program = in_section
        .find(|b| b.0 == "c")
        .expect("a C block under Use from C");
    let commands = in_section
        .find(|b| b.0 == "sh")
        .expect("an sh block under Use from C");

    let dir = std::env::temp_dir().join(format!("om-readme-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("target")).unwrap();
    std::os::unix::fs::symlink(manifest_dir().join("include"), dir.join("include")).unwrap();
    // `cargo build --release`: artefacts() has just run exactly that.
    std::os::unix::fs::symlink(artefacts(), dir.join("target/release")).unwrap();
    std::fs::write(dir.join("app.c"), &program.1).unwrap();

    let lines: Vec<&str> = commands
        .1
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.first(), Some(&"cargo build --release"), "{lines:?}");
    let mut last = String::new();
    for line in &lines[1..] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(&dir)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "`{line}` failed:\n{last}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(last.starts_with("first byte: "), "{last}");

    // The static link the section gives inline, then the program runs with
    // no library to find.
    let text = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = &text[text.find("## Use from C").unwrap()..text.find("## Semantics").unwrap()];
    let cmd = section
        .split('`')
        .find(|c| c.starts_with("cc ") && c.contains("libom_constants.a"))
        .expect("the static link command under Use from C");
    for line in [cmd, "./app weights.bin 4096"] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(&dir)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "`{line}` failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
