//! The project's docs as the tests read them: the README and every page
//! under `docs/`, their fenced blocks, and the section each block is in.
//! The tests that run a doc's commands take them from here, so a command
//! changed in the docs is the command that runs.

#![allow(dead_code)] // each test uses its part

use std::path::PathBuf;

/// A fenced block: its language, its text, and the file and the heading
/// (`##` or `###`) it is under.
#[derive(Debug, Clone)]
pub struct Block {
    pub lang: String,
    pub body: String,
    pub doc: String,
    pub heading: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The docs, as paths from the repository's root: `README.md` and
/// `docs/*.md`.
pub fn docs() -> Vec<String> {
    let mut out = vec!["README.md".to_string()];
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("the docs folder")
        .map(|e| {
            e.expect("a docs entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    pages.sort();
    out.extend(pages);
    out
}

/// The text of one doc.
pub fn text(doc: &str) -> String {
    std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"))
}

/// The fenced blocks of one doc.
pub fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(String, String)> = None;
    for line in text(doc).lines() {
        match &mut open {
            Some((lang, body)) => {
                if line.starts_with("```") {
                    out.push(Block {
                        lang: lang.clone(),
                        body: std::mem::take(body),
                        doc: doc.to_string(),
                        heading: heading.clone(),
                    });
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None => {
                if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
                    heading = h.to_string();
                } else if let Some(lang) = line.strip_prefix("```") {
                    open = Some((lang.trim().to_string(), String::new()));
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block in {doc}");
    out
}

/// Every block of every doc.
pub fn all_blocks() -> Vec<Block> {
    docs().iter().flat_map(|d| blocks(d)).collect()
}

/// The command lines of the `sh` blocks under `heading` in `doc` (blank
/// lines and comments left out), for a test that runs them.
pub fn commands(doc: &str, heading: &str) -> Vec<String> {
    let lines: Vec<String> = blocks(doc)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.heading == heading)
        .flat_map(|b| command_lines(&b.body))
        .collect();
    assert!(!lines.is_empty(), "no commands under '{heading}' in {doc}");
    lines
}

/// A block's command lines: no blank lines, no trailing `# comment`.
pub fn command_lines(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| match l.find(" #") {
            Some(at) => l[..at].trim_end(),
            None => l.trim_end(),
        })
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The sections whose commands a test of their own runs, taken from here:
/// (doc, heading, the test that runs them).
pub const RUN_ELSEWHERE: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "Use from Python",
        "tests/onnx_mlir/python.rs: the_use_from_python_commands_install_the_package_and_serve_a_model",
    ),
    (
        "README.md",
        "Use from C",
        "tests/doc_examples.rs: the_use_from_c_program_builds_and_runs_with_the_readme_commands",
    ),
    (
        "docs/PLATFORMS.md",
        "CMake",
        "tests/cmake_package.rs: install_then_find_package_and_pkg_config",
    ),
    (
        "docs/ONNX-MLIR.md",
        "The host links it",
        "tests/onnx_mlir.rs: each_way_without_a_rebuild_serves_stock_models_from_c_and_python",
    ),
    (
        "docs/ONNX-MLIR.md",
        "Preload",
        "tests/onnx_mlir.rs: each_way_without_a_rebuild_serves_stock_models_from_c_and_python",
    ),
    (
        "docs/ONNX-MLIR.md",
        "Relinking from `--EmitObj`",
        "tests/onnx_mlir.rs: relinking_with_om_constants_first_imports_the_loader",
    ),
];

/// The inline code spans of `text` (between single backquotes, outside
/// fenced blocks).
pub fn inline_spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}
