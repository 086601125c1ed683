#!/usr/bin/env bash
# The unit tests of the modules that make no system calls, under Miri
# (cargo +nightly miri, strict provenance): undefined behaviour, a data
# race, or a leak in them fails the run.
#
# Run: the run-once protocol, its waits and the slot's states (registry::flight::,
# registry::slot::), the cache file format (cache::format::), option
# parsing (config::, log::), the C boundary's
# argument checks (ffi::args::, ffi::per_inference::), error messages and the
# last-error store (error::), range splitting for the read threads
# (strategy::read::tests::split), the thread pool (threads::), and the
# parsers of mount, cgroup and huge-page text (sys::facts::).
# Not run, because Miri cannot make their system calls (files, mmap,
# madvise, /proc, dladdr, pthread_atfork): the rest of registry::, locate::, source::,
# global::, strategy:: except the split, strategy::heap:: (madvise); their
# memory and threads are checked by scripts/sanitizers.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
for c in miri rust-src; do
  rustup component list --toolchain nightly --installed | grep -q "^$c" \
    || rustup component add "$c" --toolchain nightly
done

filters=(registry::flight:: registry::slot:: cache::format:: config:: log::
  ffi::args:: ffi::per_inference:: error:: strategy::read::tests::split threads::
  sys::facts::)
out=$(mktemp)
MIRIFLAGS="-Zmiri-strict-provenance" CARGO_TARGET_DIR=target/miri \
  cargo +nightly miri test --lib --locked -- "${filters[@]}" 2>&1 | tee "$out"
# A renamed module must not leave its tests out silently.
for f in "${filters[@]}"; do
  grep -q "^test $f" "$out" || { echo "miri: no test matched $f" >&2; exit 1; }
done
rm -f "$out"
