#!/usr/bin/env bash
# Runs every check of om-constants on a fresh machine: installs the system
# tools the tests need (Debian packages: C/C++ compilers, clang for the LLVM
# IR models, cmake and pkg-config for the package test, binutils for the
# symbol checks, valgrind for the leak checks, python3-venv for the Python
# package's fresh virtual environment), then format, lint, every test
# of the workspace (Rust, C, IR models, CMake, header, ABI) against the
# library as it ships, the fault-injection tests in a build of their own,
# the sanitizers and Miri (scripts/sanitizers.sh, scripts/miri.sh; they
# install the nightly parts they need), the model check, the README's main command, and the other platforms:
# Windows under wine (scripts/test-windows.sh), and Linux on s390x under
# qemu-user (scripts/test-linux-cross.sh; aarch64 the same way, by hand),
# each of which installs what it needs.
# Fails on the first failure; a missing tool is a failure, never a skip.
# Last, it fails if a test left scratch behind (see TMPDIR below).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every scratch folder the tests make (named om-*) goes to a temporary folder
# of this run's own, and the run fails if one is left there at the end: a
# test that leaked 8 GiB per run once filled the disk of a later CI run.
# Its mode is /tmp's: some checks run as nobody (tests/c_abi.rs).
TMPDIR="$(mktemp -d)"
chmod 1777 "$TMPDIR"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# tool -> Debian package (python3 runs the Python host of tests/onnx_mlir.rs;
# unshare and setpriv run a cache builder in another pid namespace and a
# check as nobody, prlimit a read without threads; fusermount3 unmounts the FUSE volume of tests/volumes.rs; mkfs.ext4 and
# mount make the data=journal volume of tests/huge_pages.rs)
declare -A pkg_of=(
  [cc]=gcc [c++]=g++ [clang]=clang [cmake]=cmake [pkg-config]=pkg-config
  [nm]=binutils [readelf]=binutils [ar]=binutils [strip]=binutils [ldd]=libc-bin
  [valgrind]=valgrind [python3]=python3 [unshare]=util-linux [setpriv]=util-linux [prlimit]=util-linux
  [fusermount3]=fuse3 [mkfs.ext4]=e2fsprogs [mount]=mount [umount]=mount
)
need_pkgs=()
for tool in "${!pkg_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || need_pkgs+=("${pkg_of[$tool]}")
done
# venv and ensurepip make the fresh virtual environment the Python package is
# installed into (tests/onnx_mlir/python.rs; pip then fetches setuptools and
# pyelftools from the package registry to build it)
command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null \
  || need_pkgs+=(python3-venv)
# libfuse 3 builds the FUSE volume of tests/volumes.rs (bench/slowfs.c)
pkg-config --exists fuse3 2>/dev/null || need_pkgs+=(libfuse3-dev pkg-config)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing ${need_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need_pkgs[@]}" | sort -u)
fi
for tool in cargo rustfmt "${!pkg_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool" >&2; exit 1; }
done
cargo clippy --version >/dev/null 2>&1 || { echo "missing tool: cargo clippy" >&2; exit 1; }
pkg-config --exists fuse3 || { echo "missing library: libfuse 3 (pkg-config fuse3)" >&2; exit 1; }
python3 -c 'import ensurepip, venv' || { echo "missing Python module: venv or ensurepip (python3-venv)" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
CARGO_TARGET_DIR=target/fault-injection cargo clippy --all-targets --locked --features fault-injection -- -D warnings
echo "== cargo test: the library as it ships (C, IR and CLI tests use target/release)"
cargo test --workspace --locked
echo "== the fault-injection build, a build of its own: every test named injected::"
# Its own target folder too: cargo names the cdylib without a hash, so a
# shared folder would hand the C tests whichever build linked last.
CARGO_TARGET_DIR=target/fault-injection cargo test --locked --features fault-injection --tests -- injected:: fault::tests
echo "== AddressSanitizer and ThreadSanitizer, builds of their own (scripts/sanitizers.sh)"
bash scripts/sanitizers.sh
echo "== Miri over the modules without system calls (scripts/miri.sh)"
bash scripts/miri.sh
echo "== loom: every interleaving of the slot state machine (tests/loom.rs)"
RUSTFLAGS="--cfg loom -A dead_code" CARGO_TARGET_DIR=target/loom cargo test --release --locked --test loom
echo "== coverage-guided fuzzing, bounded (scripts/fuzz.sh; cargo +nightly fuzz)"
bash scripts/fuzz.sh
echo "== main command (small)"
cargo run --release --locked --bin om-constants -- bench --size 64MiB --runs 1 --threads 16
echo "== loaded fast path from C, shared and static (bench/fast_path.c)"
bash scripts/bench-fast-path.sh
echo "== Windows (x86_64-pc-windows-gnu) under wine: scripts/test-windows.sh"
bash scripts/test-windows.sh
echo "== Linux on IBM Z (s390x, big-endian) under qemu-user: scripts/test-linux-cross.sh s390x"
bash scripts/test-linux-cross.sh s390x
echo "== no scratch left behind in $TMPDIR"
left="$(find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'om-*')"
if [ -n "$left" ]; then
  echo "tests left these behind (each must remove its own scratch):" >&2
  echo "$left" >&2
  exit 1
fi
echo "== all checks passed (a missed timing target of the small bench run above is informational: see its verdict line)"
