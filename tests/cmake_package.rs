//! The CMake package: configure, build (cmake drives cargo) and install into
//! a temporary prefix; then a C++ consumer finds it with
//! find_package(OmConstants CONFIG REQUIRED), shared by default and static on
//! request, and a C program builds with pkg-config.

// Unix only: CMake and pkg-config packaging. On Windows, scripts/test-windows.sh runs the C host
// c_tests/windows/host.c against the DLL instead (docs/PLATFORMS.md).
#![cfg(unix)]
// Native builds only: the CMake package is built for this machine (docs/PLATFORMS.md).
#![cfg(not(om_cross))]

mod common;
#[path = "common/docs.rs"]
mod docs;
#[path = "common/native.rs"]
mod native;

use std::path::Path;
use std::process::Command;

use common::Scratch;
use native::{manifest_dir, run};

fn sh(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); scripts/test-all.sh installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed: {cmd:?}\n{text}");
    text
}

fn ldd_mentions_library(exe: &Path) -> bool {
    let out = sh(Command::new("ldd").arg(exe), "ldd");
    out.contains("libom_constants")
}

#[test]
fn install_then_find_package_and_pkg_config() {
    let s = Scratch::new("cmake");
    let prefix = s.path("prefix");
    let build = s.path("build");
    // The commands of docs/PLATFORMS.md ("CMake"), as written, from the
    // repository's folder, with the scratch folder's `build` and `prefix`
    // for `build` and /opt/om.
    for line in docs::commands("docs/PLATFORMS.md", "CMake") {
        let line = line
            .replace("/opt/om", prefix.to_str().unwrap())
            .split(' ')
            .map(|w| {
                if w == "build" {
                    build.to_str().unwrap()
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        sh(
            Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(manifest_dir()),
            &line,
        );
    }
    assert!(build.join("CMakeCache.txt").is_file(), "the build folder");
    let lib = prefix.join("lib");
    let v = env!("CARGO_PKG_VERSION");
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let dynamic = sh(
        Command::new("readelf")
            .arg("-d")
            .arg(lib.join(format!("libom_constants.so.{v}"))),
        "readelf",
    );
    assert!(
        dynamic.contains(&format!("Library soname: [libom_constants.so.{major}]")),
        "the installed library carries the versioned SONAME: {dynamic}"
    );
    for f in [
        format!("lib/libom_constants.so.{v}"),
        format!("lib/libom_constants.so.{major}"),
        "lib/libom_constants.so".into(),
        "lib/libom_constants.a".into(),
        "include/om_constants.h".into(),
        "lib/cmake/OmConstants/OmConstantsConfig.cmake".into(),
        "lib/cmake/OmConstants/OmConstantsConfigVersion.cmake".into(),
        "lib/pkgconfig/om_constants.pc".into(),
    ] {
        assert!(prefix.join(&f).exists(), "{f} was not installed");
    }
    assert_eq!(
        std::fs::read(prefix.join("include/om_constants.h")).unwrap(),
        std::fs::read(manifest_dir().join("include/om_constants.h")).unwrap()
    );

    let size = 100_000usize;
    let data = s.path("weights.bin");
    std::fs::write(
        &data,
        (0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let args = [data.to_str().unwrap(), &size.to_string()];

    for (tag, flags) in [
        ("shared", vec![]),
        ("static", vec!["-DOmConstants_USE_STATIC=ON"]),
    ] {
        let cbuild = s.path(&format!("consumer-{tag}"));
        sh(
            Command::new("cmake")
                .arg("-S")
                .arg(manifest_dir().join("c_tests/cmake_consumer"))
                .arg("-B")
                .arg(&cbuild)
                .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
                .args(&flags),
            "configure consumer",
        );
        sh(
            Command::new("cmake").arg("--build").arg(&cbuild),
            "build consumer",
        );
        for exe in ["app", "consumer_static"] {
            let exe = cbuild.join(exe);
            let o = run(&exe, &args, &[]);
            assert!(o.status.success(), "{} ({tag}) failed", exe.display());
        }
        assert_eq!(
            ldd_mentions_library(&cbuild.join("app")),
            tag == "shared",
            "app ({tag}) links the wrong library"
        );
        assert!(!ldd_mentions_library(&cbuild.join("consumer_static")));
    }

    // pkg-config: compile and run a C program against the install.
    let pc = sh(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "om_constants"])
            .env("PKG_CONFIG_PATH", lib.join("pkgconfig")),
        "pkg-config",
    );
    let exe = s.path("pc_consumer");
    let mut cc = native::compiler(native::Lang::C99);
    cc.arg(manifest_dir().join("c_tests/header_c.c"))
        .arg("-o")
        .arg(&exe)
        .args(pc.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()));
    // Drop the repository's include dir so the installed header is used.
    let mut cmd = Command::new(cc.get_program());
    cmd.args(
        cc.get_args()
            .filter(|a| *a != "-I" && Path::new(a) != manifest_dir().join("include").as_path()),
    );
    sh(&mut cmd, "cc with pkg-config flags");
    let o = run(&exe, &[], &[]);
    assert!(o.status.success(), "pkg-config consumer failed");
}
