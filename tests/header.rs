//! The committed header is what cbindgen generates, and it compiles cleanly
//! as C99 and as C++11 with -Wall -Wextra -Werror -pedantic.

// Unix only: the header compiled by the C and C++ compilers. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]

mod common;
#[path = "common/native.rs"]
mod native;

use common::Scratch;
use native::{build, lib_dir, manifest_dir, run, Lang};

#[test]
fn header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/om_constants.h"));
    let committed = std::fs::read_to_string(manifest_dir().join("include/om_constants.h"))
        .expect("include/om_constants.h is committed");
    assert!(
        generated == committed,
        "include/om_constants.h is stale: run `OM_CONSTANTS_UPDATE_HEADER=1 cargo build` \
         and commit the header"
    );
}

#[test]
fn header_compiles_as_c99_and_cxx11() {
    let s = Scratch::new("header");
    let lib = lib_dir(&s.dir);
    for (lang, src, exe) in [
        (Lang::C99, "c_tests/header_c.c", "header_c"),
        (Lang::Cxx11, "c_tests/header_cpp.cpp", "header_cpp"),
    ] {
        let exe = build(lang, &manifest_dir().join(src), &s.path(exe), &lib);
        let out = run(&exe, &[], &[]);
        assert!(out.status.success(), "{src} did not run: {out:?}");
    }
}

#[test]
fn header_declares_every_exported_function() {
    let header = std::fs::read_to_string(manifest_dir().join("include/om_constants.h")).unwrap();
    for f in [
        "om_load_constants_from_file",
        "om_free_constant_buffer",
        "om_mmap_binary_file",
        "om_get_external_constant_addr",
        "om_constants_last_error",
        "om_constants_stats",
        "om_constants_version",
        "om_constants_trim",
        "omMMapBinaryFile",
        "omGetExternalConstantAddr",
        "omLoadConstantData",
        "omUnloadConstantData",
        "om_cache_open",
        "om_cache_lookup",
        "om_cache_reserve",
        "om_cache_commit",
        "om_cache_close",
    ] {
        let declared = header.lines().any(|l| {
            (l.contains(&format!(" {f}(")) || l.contains(&format!("*{f}("))) && l.ends_with(");")
        });
        assert!(declared, "{f} is not declared");
    }
}
