//! Generates the C header from the Rust source with cbindgen.
//!
//! The header is written to `$OUT_DIR/om_constants.h` on every build; the
//! committed `include/om_constants.h` is compared with it by the test
//! `header_is_current`. To refresh the committed copy after changing the ABI:
//! `OM_CONSTANTS_UPDATE_HEADER=1 cargo build` (never edit it by hand).

use std::path::PathBuf;

fn main() {
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=OM_CONSTANTS_UPDATE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can parse the crate");
    let generated = out_dir.join("om_constants.h");
    bindings.write_to_file(&generated);

    let committed = crate_dir.join("include").join("om_constants.h");
    if std::env::var_os("OM_CONSTANTS_UPDATE_HEADER").is_some() || !committed.exists() {
        std::fs::create_dir_all(crate_dir.join("include")).expect("can create include/");
        std::fs::copy(&generated, &committed).expect("can write include/om_constants.h");
    }

    // The C test driver compiles C with the cc crate, which needs the target.
    if let Ok(target) = std::env::var("TARGET") {
        println!("cargo:rustc-env=OM_CONSTANTS_TARGET={target}");
    }
    if let Ok(host) = std::env::var("HOST") {
        println!("cargo:rustc-env=OM_CONSTANTS_HOST={host}");
        // Built for another architecture (scripts/test-linux-cross.sh):
        // the tests of the host's own tools (the README's commands, the
        // CMake package, valgrind) are compiled out; docs/PLATFORMS.md.
        if std::env::var("TARGET").is_ok_and(|t| t != host) {
            println!("cargo:rustc-cfg=om_cross");
        }
    }

    // A SONAME only for installed builds (the CMake package sets
    // OM_CONSTANTS_SONAME=libom_constants.so.<major> and installs that
    // name). A plain `cargo build` has none, so a program linked with
    // `-L target/release -lom_constants` records the file that exists there,
    // libom_constants.so, and runs with LD_LIBRARY_PATH=target/release.
    println!("cargo:rerun-if-env-changed=OM_CONSTANTS_SONAME");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        if let Ok(soname) = std::env::var("OM_CONSTANTS_SONAME") {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        }
        // Never unloaded: dlclose of the library, or of the last model
        // using it, leaves it mapped, so no helper thread of ours can run
        // unmapped code and no per-load state is lost per reload
        // (docs/ARCHITECTURE.md, "Unload").
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
