#!/usr/bin/env bash
# Runs the test suite for another Linux architecture under qemu-user:
#   bash scripts/test-linux-cross.sh s390x     # IBM Z, big-endian
#   bash scripts/test-linux-cross.sh aarch64   # ARM64
#
# rustup cannot fetch those standard libraries here, but Debian ships Rust's
# for every architecture: this script downloads rustc-web 1.85 (amd64) and
# the target's libstd-rust-web packages, unpacks them into
# target/cross-toolchain (no apt install: the :s390x packages would conflict
# with the host's), and gives cargo a wrapper as RUSTC. That compiler is
# older than the workspace's, so this also checks the declared rust-version.
# It installs the Debian packages it needs (cross gcc, qemu-user, libllvm19)
# and fails, never skips, if one cannot be had.
#
# The tests then run under qemu: cargo's runner for the test binaries, and
# tests/common/native.rs's OM_TEST_RUNNER for the C hosts and the CLI they
# start. The valgrind leak checks are native-only (valgrind does not run
# under qemu-user); every other test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:?usage: $0 s390x|aarch64}"
case "$arch" in
  s390x) deb_arch=s390x; gnu=s390x-linux-gnu; qemu=qemu-s390x ;;
  aarch64) deb_arch=arm64; gnu=aarch64-linux-gnu; qemu=qemu-aarch64 ;;
  *) echo "unknown architecture '$arch': s390x or aarch64" >&2; exit 2 ;;
esac
triple="$arch-unknown-linux-gnu"
# Pinned: the newer security build has no s390x twin in bookworm.
version="1.85.0+dfsg3-1~deb12u3"

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
need=()
command -v "$gnu-gcc" >/dev/null 2>&1 || need+=("gcc-$gnu")
command -v "$gnu-g++" >/dev/null 2>&1 || need+=("g++-$gnu")
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v "$qemu" >/dev/null 2>&1 || need+=(qemu-user)
dpkg -s libllvm19 >/dev/null 2>&1 || need+=(libllvm19)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
  $sudo dpkg --add-architecture "$deb_arch"
  updated=""
else
  updated="yes"
fi
if [ ${#need[@]} -gt 0 ] || [ -z "$updated" ]; then
  echo "== installing ${need[*]:-(package lists for $deb_arch)}"
  $sudo apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
fi
for tool in "$gnu-gcc" "$gnu-g++" clang "$qemu" cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool" >&2; exit 1; }
done

root="$PWD/target/cross-toolchain"
sysroot="$root/usr"
if [ ! -e "$root/.$deb_arch-$version" ]; then
  echo "== fetching Debian's Rust $version for amd64 and $deb_arch"
  mkdir -p "$root/debs"
  (
    cd "$root/debs"
    # apt-get download drops root privileges to fetch; let it write here.
    chmod 777 . 2>/dev/null || true
    apt-get download -q \
      "rustc-web=$version" "libstd-rust-web-dev=$version" "libstd-rust-web-1.85=$version" \
      "libstd-rust-web-dev:$deb_arch=$version" "libstd-rust-web-1.85:$deb_arch=$version"
  )
  for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  touch "$root/.$deb_arch-$version"
fi

cat >"$root/rustc" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$sysroot/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
  exec "$sysroot/bin/rustc" --sysroot "$sysroot" "\$@"
EOF
chmod +x "$root/rustc"
"$root/rustc" --version

upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export RUSTC="$root/rustc"
export CARGO_TARGET_DIR="$PWD/target/cross-$arch"
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
export "CARGO_TARGET_${upper}_RUNNER=$qemu -L /usr/$gnu"
# For tests/common/native.rs: how to start the programs the tests build.
export OM_TEST_RUNNER="$qemu -L /usr/$gnu"
# The cc crate finds $gnu-gcc for the C hosts by itself.

echo "== cargo test --target $triple (under $qemu)"
cargo test --locked --no-fail-fast --target "$triple" --tests
echo "== the fault-injection build for $triple: every test named injected::"
CARGO_TARGET_DIR="$PWD/target/cross-$arch-fault-injection" \
  cargo test --locked --target "$triple" --features fault-injection --tests -- injected:: fault::tests
echo "== all $arch tests passed"
