//! Every path of this repository that the docs and the code's comments
//! name exists: the README, `docs/`, and the sources, scripts and C hosts
//! (where comments cite files). A renamed or removed file fails this test
//! until every mention of it is updated.

// The repository is read where it was checked out: Unix only (the Windows
// run under wine checks the code, not the docs, which this run covers).
#![cfg(unix)]

use std::path::{Path, PathBuf};

/// The repository's top-level folders: a word starting with one of these
/// and a `/` is taken for a path in the repository.
const ROOTS: &[&str] = &[
    "src", "tests", "c_tests", "scripts", "docs", "include", "cli", "fuzz", "bench", "cmake", ".ci",
];

/// Folders that tools make when they run (never in a clean checkout), which
/// the scripts name as where to look.
const OUTPUTS: &[&str] = &["fuzz/artifacts"];

/// The files scanned: Markdown, Rust, C, shell and TOML, under these.
const SCANNED: &[&str] = &[
    "README.md",
    "build.rs",
    "Cargo.toml",
    "docs",
    "src",
    "tests",
    "c_tests",
    "scripts",
    "cli/src",
    "bench",
    "fuzz/fuzz_targets",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(at: &Path, out: &mut Vec<PathBuf>) {
    if at.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(at)
            .unwrap_or_else(|e| panic!("reading {}: {e}", at.display()))
            .map(|e| e.expect("a folder entry").path())
            .collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else if matches!(
        at.extension().and_then(|e| e.to_str()),
        Some("md" | "rs" | "c" | "h" | "cpp" | "sh" | "toml")
    ) {
        out.push(at.to_path_buf());
    }
}

/// The repository paths `text` names: words that start (after a character
/// that cannot be part of a path) with one of [`ROOTS`] and a `/`, with
/// trailing punctuation and `:line` suffixes cut. Patterns (`*`, `{`, a
/// name cut at `_` or `-`, such as `c_tests/model_*.ll`) are not paths.
fn named_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-*{}".contains(c);
    let mut found = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        let starts_word = i == 0 || !is_path_char(chars[i - 1].1);
        if !starts_word || !(c.is_ascii_alphabetic() || c == '.') {
            continue;
        }
        let rest = &text[at..];
        let Some(root) = ROOTS.iter().find(|r| rest.starts_with(&format!("{r}/"))) else {
            continue;
        };
        let len = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let word = rest[..len].trim_end_matches(['.', ',', ';', ')']);
        if word.len() <= root.len() + 1 || word.contains(['*', '{']) || word.ends_with(['_', '-']) {
            continue;
        }
        found.push(word.to_string());
    }
    found
}

#[test]
fn every_repository_path_the_docs_and_comments_name_exists() {
    let root = root();
    let mut scanned = Vec::new();
    for s in SCANNED {
        files(&root.join(s), &mut scanned);
    }
    assert!(scanned.len() > 50, "only {} files scanned", scanned.len());
    let mut missing = Vec::new();
    for file in &scanned {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for path in named_paths(&text) {
            let output = OUTPUTS.iter().any(|o| path.starts_with(o));
            if !output && !root.join(&path).exists() {
                missing.push(format!(
                    "{} names {path}",
                    file.strip_prefix(&root).unwrap_or(file).display()
                ));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "paths named but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scanner_finds_paths_and_skips_patterns() {
    let text = "see `src/slot.rs`, tests/races.rs: and (docs/ARCHITECTURE.md). \
                Not c_tests/model_*.ll, /usr/local/include/om_constants.h, or src/.";
    assert_eq!(
        named_paths(text),
        ["src/slot.rs", "tests/races.rs", "docs/ARCHITECTURE.md"]
    );
}
