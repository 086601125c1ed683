//! Every path of this repository that the docs and the code's comments
//! name exists: the README, `docs/`, and the sources, scripts and C hosts
//! (where comments cite files). So does every section they cite
//! (`docs/SEMANTICS.md, "The host's whole life"`), every Markdown link
//! between the docs, anchor included, and every test, field or symbol the
//! docs name. A renamed or removed file or heading
//! fails this test until every mention of it is updated.

// The repository is read where it was checked out: Unix only (the Windows
// run under wine checks the code, not the docs, which this run covers).
#![cfg(unix)]

#[path = "common/docs.rs"]
mod docs;

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

/// Every file under [`SCANNED`].
fn scanned() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in SCANNED {
        files(&root().join(s), &mut out);
    }
    assert!(out.len() > 50, "only {} files scanned", out.len());
    out
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
    let scanned = scanned();
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
    let text = "see `src/registry/slot.rs`, tests/races.rs: and (docs/ARCHITECTURE.md). \
                Not c_tests/model_*.ll, /usr/local/include/om_constants.h, or src/.";
    assert_eq!(
        named_paths(text),
        [
            "src/registry/slot.rs",
            "tests/races.rs",
            "docs/ARCHITECTURE.md"
        ]
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped but `-`
/// and `_`, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings of a Markdown text, outside code blocks, without their
/// `#`s and backquotes.
fn headings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(line.trim_start_matches('#').trim().replace('`', ""));
        }
    }
    out
}

/// The targets of the Markdown links of `text` (`](target)`), but web
/// addresses.
fn links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest.find(')')?;
            let target = &rest[..end];
            (!target.contains("://") && !target.contains(' ')).then(|| target.to_string())
        })
        .collect()
}

/// The sections `text` cites by name: a Markdown file, then `, ` or ` (`
/// (across a comment's line break), then the heading in double quotes:
/// (file, heading).
fn citations(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in named_paths(text)
        .into_iter()
        .chain(["README".to_string()])
        .filter(|p| p.ends_with(".md") || p == "README")
    {
        for (at, _) in text.match_indices(path.as_str()) {
            let after = &text[at + path.len()..];
            let rest = after.trim_start_matches([',', ' ', '(', '\n', '/', '!', '*', '#']);
            let between = &after[..after.len() - rest.len()];
            let Some(quoted) = rest.strip_prefix('"') else {
                continue;
            };
            let Some(end) = quoted.find(['"', '\n']) else {
                continue;
            };
            // A heading: after a `,` or `(`, on one line, starting with a
            // letter or a backquote (not a string literal's end).
            let heading = &quoted[..end];
            let starts = heading.starts_with(|c: char| c.is_alphanumeric() || c == '`');
            if !between.contains([',', '(']) || !starts || quoted[end..].starts_with('\n') {
                continue;
            }
            let file = if path == "README" { "README.md" } else { &path };
            out.push((file.to_string(), heading.to_string()));
        }
    }
    out
}

#[test]
fn every_section_and_link_the_docs_and_comments_cite_exists() {
    let root = root();
    let scanned = scanned();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &scanned {
        let text = read(file);
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (doc, heading) in citations(&text) {
            checked += 1;
            let want = heading.replace('`', "");
            if !headings(&read(&root.join(&doc))).contains(&want) {
                broken.push(format!("{shown} cites {doc}, \"{heading}\""));
            }
        }
        if file.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        for target in links(&text) {
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(&root).join(path)
            };
            if !dest.exists() {
                broken.push(format!("{shown} links to {target}: no such file"));
            } else if !anchor.is_empty()
                && !headings(&read(&dest)).iter().any(|h| slug(h) == anchor)
            {
                broken.push(format!("{shown} links to {target}: no such heading"));
            }
        }
    }
    assert!(checked > 20, "only {checked} citations and links found");
    broken.sort();
    broken.dedup();
    assert!(
        broken.is_empty(),
        "sections cited or linked but not there:\n{}",
        broken.join("\n")
    );
}

#[test]
fn anchors_citations_and_links_are_read_as_github_and_the_code_write_them() {
    assert_eq!(
        slug("onnx-mlir's ExecutionSession and OM_CONSTANT_PATH"),
        "onnx-mlirs-executionsession-and-om_constant_path"
    );
    let text =
        "(docs/SEMANTICS.md,\n    // \"What the emitted code calls\") and (README, \"Options\")";
    assert_eq!(
        citations(text),
        [
            (
                "docs/SEMANTICS.md".to_string(),
                "What the emitted code calls".to_string()
            ),
            ("README.md".to_string(), "Options".to_string())
        ]
    );
    assert_eq!(
        links("[a](GUARANTEES.md) [b](#the-bench) [c](https://x.org/a)"),
        ["GUARANTEES.md", "#the-bench"]
    );
}

/// A name in the docs that can only be one of ours (a test's name, most
/// often, or a field or symbol): snake case with at least three
/// underscores.
fn is_function_name(span: &str) -> bool {
    span.starts_with(|c: char| c.is_ascii_lowercase())
        && span
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && span.matches('_').count() >= 3
}

#[test]
fn every_test_and_field_the_docs_name_exists() {
    let sources: String = scanned()
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) != Some("md"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in docs::docs() {
        for span in docs::inline_spans(&docs::text(&doc)) {
            if is_function_name(&span) {
                checked += 1;
                if !sources.contains(&span) {
                    missing.push(format!("{doc} names `{span}`, which no source has"));
                }
            }
        }
    }
    assert!(checked >= 3, "only {checked} such names found in the docs");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
