#!/usr/bin/env bash
# Builds the Windows C host and model DLL with mingw-w64 against the DLL
# in RELEASE (its import library and the generated header) and runs the
# host under wine for every strategy, then once with memory locking and
# prefetch. Called by scripts/test-windows.sh, which sets up wine.
#   bash c_tests/windows/run.sh RELEASE_DIR WORK_DIR SHIM_DLL
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
release="$(cd "$1" && pwd)"
work="$2"
shim="$3"
cc=x86_64-w64-mingw32-gcc
flags=(-std=c99 -O1 -Wall -Wextra -Werror -pedantic -I "$root/include")

# The DLL exports exactly the header's functions: ours and onnx-mlir's.
header_names=$(grep -oE '^[a-z][a-z_0-9 *]*[ *]([a-zA-Z_0-9]+)\(' "$root/include/om_constants.h" |
  sed -E 's/.*[ *]([a-zA-Z_0-9]+)\($/\1/' | sort)
dll_names=$(x86_64-w64-mingw32-objdump -p "$release/om_constants.dll" |
  awk '/\[Ordinal\/Name Pointer\] Table/{f=1;next} f&&/^$/{f=0} f{print $NF}' | sort)
if [ -z "$header_names" ] || [ "$header_names" != "$dll_names" ]; then
  echo "om_constants.dll exports differ from the header's functions:" >&2
  diff <(echo "$header_names") <(echo "$dll_names") >&2 || true
  exit 1
fi
echo "== om_constants.dll exports the header's $(echo "$header_names" | wc -l) functions"

rm -rf "$work"
mkdir -p "$work/model"
# The model links the import library; the host too, and loads the model.
"$cc" "${flags[@]}" -shared -o "$work/model/model.dll" "$here/model.c" -L "$release" -lom_constants
"$cc" "${flags[@]}" -o "$work/host.exe" "$here/host.c" -L "$release" -lom_constants
# Windows finds a program's DLLs beside it.
cp "$release/om_constants.dll" "$shim" "$work/"

winpath() { winepath -w "$1" 2>/dev/null; }
w=$(winpath "$work")
run_once() {
  (cd "$work" && env "$@" wine host.exe "$w" "$(echo "$*" | sed -n 's/.*OM_CONSTANT_LOAD=\([^ ]*\).*/\1/p')")
}
# A run whose wineserver connection dies ("wine client error": the emulator
# failed, not the host; seen about once in ten suites here) is run once
# more, saying so; a second failure, or any other failure, fails.
run() {
  echo "== host: $*"
  local log="$work/run.log"
  if run_once "$@" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    return 0
  fi
  if grep -q "wine client error" "$log"; then
    echo "== wine itself failed (wine client error); running the host once more: $*"
    run_once "$@"
    return
  fi
  return 1
}
for strategy in mmap read chunked-mmap auto; do
  run OM_CONSTANT_LOAD="$strategy"
done
run OM_CONSTANT_LOAD=mmap OM_CONSTANT_MLOCK=1 OM_CONSTANT_PREFETCH=willneed
# Unloading while a prefetch helper runs (the 512 MiB DllMain case).
run OM_CONSTANT_LOAD=mmap OM_CONSTANT_PREFETCH=background
run OM_CONSTANT_LOAD=chunked-mmap OM_CONSTANT_PREFETCH=background
run OM_CONSTANT_LOAD=read OM_CONSTANT_MLOCK=1 OM_CONSTANT_READ_THREADS=4
