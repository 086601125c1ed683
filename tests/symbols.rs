//! Symbol hygiene of the shared library: it exports exactly the functions
//! the header declares (no Rust or std symbols), has no SONAME (installed
//! builds do), is never unloaded, and starts
//! each per-inference fast path on a cache line of its own.

// Unix only: nm and readelf on the ELF artefacts. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

#[path = "common/native.rs"]
mod native;

use std::collections::BTreeSet;
use std::process::Command;

use native::{artefacts, manifest_dir};

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
    let so = artefacts().join("libom_constants.so");
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

/// The per-inference fast paths and their onnx-mlir names. src/ffi/per_inference.rs puts
/// each in a 64-byte-aligned section so it never straddles two cache lines.
const FAST_PATHS: [&str; 4] = [
    "om_mmap_binary_file",
    "omMMapBinaryFile",
    "om_get_external_constant_addr",
    "omGetExternalConstantAddr",
];

#[test]
fn fast_paths_start_on_a_cache_line_in_the_shared_library() {
    let so = artefacts().join("libom_constants.so");
    let symbols = tool("nm", &["-D", "--defined-only", so.to_str().unwrap()]);
    for name in FAST_PATHS {
        let addr = symbols
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, _, sym) = (f.next()?, f.next()?, f.next()?);
                (sym == name).then(|| u64::from_str_radix(addr, 16))
            })
            .unwrap_or_else(|| panic!("{name} is not exported:\n{symbols}"))
            .unwrap_or_else(|e| panic!("{name}: address not hex: {e}"));
        assert_eq!(addr % 64, 0, "{name} at {addr:#x} is not 64-byte aligned");
    }
}

#[test]
fn fast_paths_start_on_a_cache_line_when_linked_statically() {
    // This test program links the library's rlib, as the bench does.
    let addrs: [usize; 4] = [
        om_constants::ffi::om_mmap_binary_file as *const () as usize,
        om_constants::ffi::omMMapBinaryFile as *const () as usize,
        om_constants::ffi::om_get_external_constant_addr as *const () as usize,
        om_constants::ffi::omGetExternalConstantAddr as *const () as usize,
    ];
    for (name, addr) in FAST_PATHS.iter().zip(addrs) {
        assert_eq!(addr % 64, 0, "{name} at {addr:#x} is not 64-byte aligned");
    }
}

/// The cargo-built library has no SONAME, so a program linked against
/// target/release records `libom_constants.so`, the file that is there
/// (the CMake package's install carries `libom_constants.so.<major>`:
/// tests/cmake_package.rs).
#[test]
fn the_cargo_build_has_no_soname_and_is_never_unloaded() {
    let so = artefacts().join("libom_constants.so");
    let dynamic = tool("readelf", &["-d", so.to_str().unwrap()]);
    // Some rustc versions (Debian's 1.85, scripts/test-linux-cross.sh)
    // give a cdylib its own file name as SONAME, which links the same.
    assert!(
        !dynamic.contains("Library soname")
            || dynamic.contains("Library soname: [libom_constants.so]"),
        "{dynamic}"
    );
    assert!(
        dynamic.contains("NODELETE"),
        "linked with -z nodelete: {dynamic}"
    );
}

/// The library the C, IR and CLI tests use is the one that ships: built by
/// `cargo build --release`, with no fault injection compiled in.
#[test]
fn the_tested_library_is_the_release_build_without_fault_injection() {
    for name in ["libom_constants.so", "libom_constants.a", "om-constants"] {
        let path = artefacts().join(name);
        assert!(
            path.starts_with(manifest_dir().join("target/release"))
                || std::env::var_os("CARGO_TARGET_DIR").is_some(),
            "{} is not the release build",
            path.display()
        );
        let bytes = std::fs::read(&path).unwrap();
        let needle = b"injected panic";
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} has fault injection compiled in",
            path.display()
        );
    }
}
