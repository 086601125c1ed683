//! The `om-constants` tool: `load` through the C ABI, `bench` end to end on
//! a small file (figures are not judged here; the bench prints them).

// Unix only: the CLI built by a nested cargo. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/native.rs"]
mod native;

use std::process::Command;

use common::Scratch;

/// The tool as it ships (target/release/om-constants).
fn tool() -> Command {
    let mut c = native::command(&native::tool_path());
    for (k, _) in std::env::vars() {
        if k.starts_with("OM_CONSTANT") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn load_reports_one_load_per_strategy() {
    let s = Scratch::new("cli-load");
    let f = s.file("c.bin", 3 << 20);
    for strategy in ["mmap", "read", "chunked-mmap", "auto"] {
        let o = tool()
            .args([
                "load",
                f.to_str().unwrap(),
                "--threads",
                "8",
                "--strategy",
                strategy,
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{strategy}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains(" loads=1 ") && out.contains("live_after_release=0"),
            "{out}"
        );
        let used = if strategy == "auto" { "mmap" } else { strategy };
        assert!(out.contains(&format!("strategy={used} ")), "{out}");
    }
}

#[test]
fn load_of_a_missing_file_fails_with_the_reason() {
    let o = tool()
        .args(["load", "/nonexistent/m.bin", "--size", "16"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/m.bin") && err.contains("not found"),
        "{err}"
    );
}

/// The table says how its columns relate, and ends with one verdict line
/// that agrees with the target lines above it.
// Native only: the bench starts itself again as a child process, which
// qemu-user cannot do without binfmt_misc (docs/PLATFORMS.md).
#[cfg(not(om_cross))]
#[test]
fn bench_table_explains_its_columns_and_ends_with_a_verdict() {
    let s = Scratch::new("cli-bench-table");
    let o = tool()
        .args(["bench", "--size", "4MiB", "--runs", "1", "--threads", "4"])
        .arg("--dir")
        .arg(&s.dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("load + pass + free = median") && out.contains("= median"),
        "{out}"
    );
    let met = out.matches("[met   ]").count();
    let missed = out.matches("[MISSED]").count();
    let last = out.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("verdict: {met} of {} targets met", met + missed)),
        "{last}"
    );
    assert_eq!(missed > 0, last.contains("not a failure"), "{last}");
    // Every target line has its value in the same column.
    let columns: std::collections::BTreeSet<usize> = out
        .lines()
        .filter(|l| l.starts_with("  [met   ]") || l.starts_with("  [MISSED]"))
        .map(|l| l.find("(target <=").unwrap())
        .collect();
    assert_eq!(columns.len(), 1, "{out}");
}

// Native only: the bench starts itself again as a child process, which
// qemu-user cannot do without binfmt_misc (docs/PLATFORMS.md).
#[cfg(not(om_cross))]
#[test]
fn bench_runs_every_method_and_prints_json() {
    let s = Scratch::new("cli-bench");
    let o = tool()
        .args([
            "bench",
            "--size",
            "4MiB",
            "--runs",
            "1",
            "--threads",
            "4",
            "--json",
        ])
        .arg("--dir")
        .arg(&s.dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("the bench prints JSON");
    let names: Vec<&str> = v["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in [
        "baseline: mmap + pass",
        "baseline: read, 1 thread (onnx-mlir z/OS)",
        "om: read",
        "om: chunked-mmap, limit 256 MiB",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // --runs 1 still takes the minimum number of fast-path samples.
    assert_eq!(v["fast_path_ns"]["samples"], 3, "{out}");
    assert!(v["fast_path_ns"]["median"]["threads_1"].is_f64(), "{out}");
    assert!(v["read_race_peak_rss"].is_u64(), "{out}");
    assert!(v["cache"]["second"]["seconds"].is_f64(), "{out}");
    let targets = v["targets"].as_array().expect("targets");
    assert_eq!(v["targets_total"], targets.len(), "{out}");
    let met = targets.iter().filter(|t| t["met"] == true).count();
    assert_eq!(v["targets_met"], met, "{out}");
    let races = v["races"].as_array().expect("races");
    assert_eq!(races.len(), 3, "{out}");
    assert!(
        races.iter().all(|r| r["loads"] == 1),
        "one load per race: {out}"
    );
    assert!(
        std::fs::read_dir(&s.dir).unwrap().next().is_none(),
        "bench file removed"
    );
}

/// Each error once (not the library's log line and then the tool's), with
/// the full message, and a non-zero exit.
#[test]
fn load_errors_are_reported_once_and_fail() {
    let s = Scratch::new("cli-errors");
    let ok = s.file("ok.bin", 4096);
    let empty = s.file("empty.bin", 0);
    let missing = s.path("missing.bin");
    let cases: [(Vec<&str>, &str, &str); 4] = [
        (
            vec!["load", ok.to_str().unwrap(), "--strategy", "foo"],
            "--strategy foo: expected auto, mmap, read or chunked-mmap",
            "OM_CONSTANT_LOAD",
        ),
        (
            vec!["load", missing.to_str().unwrap()],
            "not found; tried",
            "os error 2)\n",
        ),
        (
            vec!["load", missing.to_str().unwrap(), "--size", "16"],
            "not found; tried",
            "om-constants: error:",
        ),
        (
            vec!["load", empty.to_str().unwrap()],
            "is empty (0 bytes)",
            "invalid size 0",
        ),
    ];
    for (args, want, unwanted) in cases {
        let o = tool().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains(unwanted), "{args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: said more than once: {err}"
        );
    }
}

#[test]
fn help_prints_usage_for_the_tool_and_each_command() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["--help"],
            &["Usage: om-constants <COMMAND>", "bench", "load", "check"],
        ),
        (&["-h"], &["Usage: om-constants <COMMAND>"]),
        (
            &["bench", "--help"],
            &["Usage: om-constants bench", "--size <BYTES>", "--cold"],
        ),
        (
            &["load", "-h"],
            &["Usage: om-constants load", "<FILE>", "--strategy"],
        ),
        (
            &["check", "--help"],
            &["Usage: om-constants check", "<MODEL>", "--json"],
        ),
        (
            &["bench", "--size", "1GiB", "--help"],
            &["Usage: om-constants bench"],
        ),
    ];
    for (args, wants) in cases {
        let o = tool().args(args).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{args:?}: {out}");
        for want in wants {
            assert!(out.contains(want), "{args:?}: no {want:?} in {out}");
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    for args in [
        &["bench", "--size", "lots"][..],
        &["load"],
        &["frobnicate"],
        &["bench", "--nope"],
        &["check"],
        &["load", "f.bin", "--threads", "0"],
    ] {
        let o = tool().args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
    }
}

/// Tests that need injected faults: built and run only by the
/// fault-injection build (`cargo test --features fault-injection`), never
/// against the library that ships.
#[cfg(feature = "fault-injection")]
mod injected {
    use super::*;

    #[test]
    fn an_mmap_failure_under_auto_falls_back_and_says_so_in_the_log() {
        let s = Scratch::new("cli-fallback");
        let f = s.file("c.bin", 1 << 20);
        let o = tool()
            .args(["load", f.to_str().unwrap()])
            .env("OM_CONSTANT_FAULTS", "mmap_fails")
            .env("OM_CONSTANT_LOG", "info")
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{out}{err}");
        assert!(out.contains("strategy=read "), "{out}");
        assert!(
            err.contains("map (mmap)") && err.contains("reading the file into memory instead"),
            "{err}"
        );
    }

    /// The `sum=` of an `om-constants load` line.
    fn sum_of(out: &str) -> String {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix("sum="))
            .unwrap_or_else(|| panic!("no sum in {out}"))
            .to_string()
    }

    /// A `read` load that sees the file rewritten in place mid-read (as a
    /// deployer's `cp` does) reads it again and returns the bytes of one
    /// version, never old and new bytes mixed; one that sees it change at
    /// every try fails, saying so.
    #[test]
    fn a_read_that_sees_the_file_rewritten_reads_one_version_or_fails() {
        let s = Scratch::new("cli-rewrite");
        let size = 4 << 20;
        let f = s.file("c.bin", size);
        let load = |faults: &str| {
            let o = tool()
                .args(["load", f.to_str().unwrap(), "--strategy", "read"])
                .env("OM_CONSTANT_FAULTS", faults)
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).to_string(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        };
        // The file is rewritten (to 0xEE bytes) once, 1 MiB into the read.
        let (ok, out, err) = load("rewrite_at=1048576");
        assert!(ok, "{out}{err}");
        let (ok, fresh, err2) = load("");
        assert!(ok, "{fresh}{err2}");
        assert_eq!(sum_of(&out), sum_of(&fresh), "one version: the new one");
        // Rewritten at every try: the load fails and says why.
        let (ok, out, err) = load("rewrite_at=1048576,rewrites=100");
        assert!(!ok, "{out}{err}");
        assert!(err.contains("changed while it was read"), "{err}");
    }
}
