#!/usr/bin/env bash
# The README's test command, and what CI runs: install what is missing,
# build the sanitizer test build and the fuzz build, run every fuzz target
# for a bounded time, then run ctest (unit and integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== build (ASan + UBSan)"
cmake --preset test >/dev/null
cmake --build --preset test

echo "== fuzz (each target ${TETHER_FUZZ_SECONDS:-15} s)"
scripts/fuzz.sh

echo "== ctest"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ctest --preset test -j"$(nproc)"
