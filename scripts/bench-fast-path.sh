#!/usr/bin/env bash
# The loaded fast path as C models call it: om_mmap_binary_file against
# onnx-mlir's own check at the same call distance, once through shared
# libraries (dlopen) and once linked statically (bench/fast_path.c).
# Prints ns per call; fails if a build fails or any call returns false.
# Timings are figures, not pass/fail: this machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || { echo "missing tool: $cc" >&2; exit 1; }

cargo build --release --locked --lib
lib=target/release
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

head -c 1048576 /dev/urandom >"$tmp/model.constants.bin"
flags=(-std=c99 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L)
"$cc" "${flags[@]}" -shared -fPIC bench/onnx_mlir_check.c -o "$tmp/libonnx_mlir_check.so"
"$cc" "${flags[@]}" bench/fast_path.c -o "$tmp/fast_path" -ldl
"$cc" "${flags[@]}" -DOM_STATIC -Iinclude bench/fast_path.c bench/onnx_mlir_check.c \
  "$lib/libom_constants.a" -lpthread -ldl -lm -lrt -lgcc_s -o "$tmp/fast_path_static"

"$tmp/fast_path" "$tmp/model.constants.bin" "$(pwd)/$lib/libom_constants.so" "$tmp/libonnx_mlir_check.so"
"$tmp/fast_path_static" "$tmp/model.constants.bin"
