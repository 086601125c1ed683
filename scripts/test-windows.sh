#!/usr/bin/env bash
# Builds om-constants for Windows (x86_64-pc-windows-gnu, with mingw-w64)
# and runs its tests under wine:
#   bash scripts/test-windows.sh
#
# 1. The Rust tests (unit and integration) for that target, with wine as
#    cargo's runner.
# 2. The DLL, its import library and the generated header as a C host
#    uses them: c_tests/windows/host.c and a model DLL
#    (c_tests/windows/model.c), built with mingw-w64's gcc and run under
#    wine for every strategy.
#
# Installs what it needs (Debian's gcc-mingw-w64-x86-64, wine, wine64; the
# target's standard library through rustup) and fails, never skips, if one
# cannot be had. Debian's wine 8 lacks ProcessPrng, which Rust's standard
# library imports, so a stand-in DLL (scripts/windows/process_prng.c) is
# put beside every program it runs; real Windows needs none of that.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=x86_64-pc-windows-gnu
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null 2>&1 || need+=(wine wine64)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
for tool in x86_64-w64-mingw32-gcc wine cargo rustup; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool" >&2; exit 1; }
done
if ! rustup target list --installed | grep -qx "$triple"; then
  rustup target add "$triple"
fi

out="$PWD/target/windows-test"
mkdir -p "$out"
export WINEPREFIX="$out/wineprefix" WINEDEBUG=-all WINEDLLOVERRIDES="bcryptprimitives=n,b"
shim="$out/bcryptprimitives.dll"
x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" scripts/windows/process_prng.c -ladvapi32

# cargo's runner: the shim beside the program, then wine.
cat >"$out/run" <<EOF
#!/bin/sh
dir=\$(dirname "\$1")
[ -e "\$dir/bcryptprimitives.dll" ] || cp "$shim" "\$dir/"
exec wine "\$@"
EOF
chmod +x "$out/run"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$out/run"
# The tests start the programs they build through this runner too.
export OM_TEST_RUNNER="$out/run"

echo "== wine: $(wine --version)"
# The first start creates the wine prefix (a few seconds).
wineboot -i

echo "== cargo test --target $triple (under wine)"
cargo test --locked --no-fail-fast --target "$triple" --lib --bins --tests

echo "== the DLL as a C host uses it (c_tests/windows/host.c)"
cargo build --locked --release --target "$triple" -p om-constants
rel="target/$triple/release"
for f in om_constants.dll libom_constants.dll.a; do
  [ -e "$rel/$f" ] || { echo "missing $rel/$f" >&2; exit 1; }
done
bash c_tests/windows/run.sh "$rel" "$out/c" "$shim"

echo "== om-constants check reads a PE model (the native tool on the Windows model DLL)"
cargo build --locked --release -p om-constants-cli
report=$(target/release/om-constants check --json "$out/c/model/model.dll" || true)
echo "$report"
for want in '"format":"Pe"' '"loader":"imported"' '"om_constants":true'; do
  grep -qF "$want" <<<"$report" || { echo "check on model.dll: no $want" >&2; exit 1; }
done
echo "== all Windows tests passed"
