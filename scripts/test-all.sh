#!/usr/bin/env bash
# Runs every check of om-constants on a fresh machine: installs the system
# tools the tests need (Debian packages), then format, lint, every test of
# the workspace (Rust, C, header, ABI), and the README's main command.
# Fails on the first failure; a missing tool is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v cc  >/dev/null 2>&1 || need_pkgs+=(gcc)
command -v c++ >/dev/null 2>&1 || need_pkgs+=(g++)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing ${need_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
for tool in cargo rustfmt cc c++; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool" >&2; exit 1; }
done
cargo clippy --version >/dev/null 2>&1 || { echo "missing tool: cargo clippy" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== main command (small)"
cargo run --release --locked --bin om-constants -- demo --size 8MiB
echo "== all checks passed"
