#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz, on the nightly
# toolchain) of what reads untrusted input: the cache file parser, option
# parsing, locating. Each target starts from its committed corpus in
# fuzz/corpus/ and runs for FUZZ_SECONDS (default 60); new inputs go to a
# scratch folder, so the committed corpus changes only by hand
# (`cargo +nightly fuzz cmin TARGET`). A crash fails the script and leaves
# the input in fuzz/artifacts/<target>/ (cargo fuzz makes the folder on a
# crash): add it to the corpus once fixed.
# A missing nightly toolchain is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"

cargo +nightly --version >/dev/null 2>&1 || {
  echo "missing tool: the nightly toolchain (cargo +nightly); install it with rustup" >&2
  exit 1
}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
cargo +nightly fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in cache_file options locate; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz $target failed: the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
