//! Symbol hygiene of the shared library: it exports exactly the functions
//! the header declares (no Rust or std symbols), and has a SONAME.

#[path = "common/native.rs"]
mod native;

use std::collections::BTreeSet;
use std::process::Command;

use native::{deps_dir, manifest_dir};

fn tool(name: &str, args: &[&str]) -> String {
    let o = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is needed (binutils): {e}"));
    assert!(o.status.success(), "{name} {args:?} failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Function names declared in the header: `... name(args);` lines.
fn header_functions() -> BTreeSet<String> {
    let h = std::fs::read_to_string(manifest_dir().join("include/om_constants.h")).unwrap();
    h.lines()
        .filter(|l| l.ends_with(");") && !l.starts_with(' ') && !l.starts_with('#'))
        .filter_map(|l| {
            let before = &l[..l.find('(')?];
            let name = before.rsplit([' ', '*']).next()?;
            Some(name.to_string())
        })
        .collect()
}

#[test]
fn exports_exactly_the_header_functions() {
    let so = deps_dir().join("libom_constants.so");
    let so = so.to_str().unwrap();
    let exported: BTreeSet<String> = tool("nm", &["-D", "--defined-only", so])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let declared = header_functions();
    // 12 for the constants, 5 for the packed-weights cache.
    assert_eq!(declared.len(), 17, "header functions: {declared:?}");
    assert_eq!(
        exported, declared,
        "the library must export exactly what the header declares"
    );
}

#[test]
fn has_a_soname_with_the_major_version() {
    let so = deps_dir().join("libom_constants.so");
    let dynamic = tool("readelf", &["-d", so.to_str().unwrap()]);
    let want = format!(
        "Library soname: [libom_constants.so.{}]",
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert!(dynamic.contains(&want), "{dynamic}");
}
