//! Builds the ABI check: ctest2 compares the C header with Rust
//! declarations of the ABI, and those declarations are derived here,
//! mechanically, from the library's own source (every `#[no_mangle] extern
//! "C" fn` in src/ffi/ and every `#[repr(C)]` struct in src/stats.rs), so
//! the check compares the header with the real definitions, not with a copy
//! someone keeps by hand.
//!
//! ctest2 (not ctest 0.5) is used: it builds and runs on this toolchain, and
//! its parser handles the plain declarations we feed it.

use std::fmt::Write as _;
use std::path::PathBuf;

use quote::ToTokens;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = here
        .parent()
        .expect("abi-check sits in the crate")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for f in ["src/ffi", "src/stats.rs", "include/om_constants.h"] {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }

    let mut decls = String::from("use libc::{c_char, c_void};\n\n");
    let stats = parse(&root.join("src/stats.rs"));
    for item in &stats.items {
        if let syn::Item::Struct(s) = item {
            if !has_attr(&s.attrs, "repr") {
                continue;
            }
            let _ = writeln!(decls, "#[repr(C)]\npub struct {} {{", s.ident);
            for f in &s.fields {
                let name = f.ident.as_ref().expect("named fields");
                let _ = writeln!(decls, "    pub {}: {},", name, f.ty.to_token_stream());
            }
            decls.push_str("}\n\n");
        }
    }
    // Opaque handle types: declared, never sized (C has only a forward
    // declaration of them).
    decls.push_str("pub enum Cache {}\n\n");
    let mut ffi_files: Vec<PathBuf> = std::fs::read_dir(root.join("src/ffi"))
        .expect("src/ffi/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    ffi_files.sort();
    let items: Vec<syn::Item> = ffi_files.iter().flat_map(|f| parse(f).items).collect();
    decls.push_str("extern \"C\" {\n");
    let mut count = 0;
    for item in &items {
        if let syn::Item::Fn(f) = item {
            if f.sig.abi.is_none() || !has_attr(&f.attrs, "no_mangle") {
                continue;
            }
            let args: Vec<String> = f
                .sig
                .inputs
                .iter()
                .map(|a| a.to_token_stream().to_string())
                .collect();
            let ret = match &f.sig.output {
                syn::ReturnType::Default => String::new(),
                syn::ReturnType::Type(_, t) => format!(" -> {}", t.to_token_stream()),
            };
            let _ = writeln!(
                decls,
                "    pub fn {}({}){};",
                f.sig.ident,
                args.join(", "),
                ret
            );
            count += 1;
        }
    }
    decls.push_str("}\n");
    assert!(
        count >= 12,
        "expected the ABI functions in src/ffi/, found {count}"
    );
    let decls_path = out.join("decls.rs");
    std::fs::write(&decls_path, decls).expect("write decls.rs");

    let mut cfg = ctest2::TestGenerator::new();
    cfg.header("om_constants.h")
        .include(root.join("include"))
        .flag("-Wno-unused-parameter")
        .skip_type(|t| t == "Cache")
        .skip_struct(|t| t == "Cache")
        .type_name(|ty, is_struct, _is_union| match ty {
            "Stats" => "struct om_constants_stats".to_string(),
            "StrategyStats" => "struct om_constants_strategy_stats".to_string(),
            "Cache" => "struct om_cache".to_string(),
            t if is_struct => format!("struct {t}"),
            t => t.to_string(),
        });
    cfg.generate(&decls_path, "abi_all.rs");
}

fn parse(path: &std::path::Path) -> syn::File {
    let text = std::fs::read_to_string(path).expect("read source");
    syn::parse_file(&text).expect("the library's source parses")
}

fn has_attr(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs.iter().any(|a| a.path().is_ident(name))
}
