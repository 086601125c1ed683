#!/usr/bin/env bash
# The library under AddressSanitizer and ThreadSanitizer (cargo +nightly,
# -Zsanitizer, -Zbuild-std so the standard library is instrumented too):
# the unit tests, and the tests of concurrency and memory (registry, races,
# lifecycle, file changes, the cache, the C ABI), whose C hosts (race.c,
# abi_test.c, hostile.c, cache.c, lifecycle.c, unload.c) are compiled by
# clang with the same sanitizer against the sanitized library, and linked
# with the toolchain's sanitizer runtime that the library was built for. Each is a
# build of its own (target/sanitize-<name>), with fault injection on so the
# injected:: tests run too. A report is a failure: the runtime options
# below make every report end the process with an error.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
  || rustup component add rust-src --toolchain nightly
command -v clang >/dev/null || { echo "missing tool: clang" >&2; exit 1; }

# The tests that exercise concurrency and memory; cache_memory (it measures
# anonymous memory, which the sanitizers' shadow memory swamps) and the
# tests of tools (CLI, CMake, header, symbols) are left to the plain build.
tests=(--lib --test registry --test races --test lifecycle --test file_changes
  --test cache --test cache_processes --test c_abi)

# halt_on_error/exitcode: the first report fails the process that made it.
# detect_leaks stays on: nothing the library allocates may be unreachable.
# die_after_fork=0: tests fork hosts that run other threads (fork under
# traffic, a child that loads for itself), which the library supports and
# tests (docs/GUARANTEES.md); TSan's default kills such a child as soon as it
# starts a thread, which would report our tests, not a bug.
# log_path: reports go to files, never to stderr, which some tests block on
# purpose (a report written there would hang, not fail); they are printed
# below, and any report fails the run even if its test passed.
common="halt_on_error=1:exitcode=66"

sysroot=$(rustc +nightly --print sysroot)
status=0
for san in address thread; do
  echo "== sanitizer: $san"
  short=${san:0:1}san
  runtime="$sysroot/lib/rustlib/$host/lib/librustc-nightly_rt.$short.a"
  [ -f "$runtime" ] || { echo "missing sanitizer runtime: $runtime" >&2; exit 1; }
  target="$PWD/target/sanitize-$san"
  reports="$target/reports"
  rm -rf "$reports" && mkdir -p "$reports"
  export ASAN_OPTIONS="$common:detect_leaks=1:log_path=$reports/report"
  export TSAN_OPTIONS="$common:die_after_fork=0:log_path=$reports/report"
  RUSTFLAGS="-Zsanitizer=$san" OM_SANITIZER="$san" OM_SANITIZER_RUNTIME="$runtime" CC=clang \
    CARGO_TARGET_DIR="$target" \
    cargo +nightly test -Zbuild-std --target "$host" --locked \
    --features fault-injection "${tests[@]}" || status=1
  if compgen -G "$reports/report.*" >/dev/null; then
    echo "== $san reports:" >&2
    cat "$reports"/report.* >&2
    status=1
  fi
  [ "$status" -eq 0 ] || { echo "== sanitizer $san failed" >&2; exit 1; }
done
