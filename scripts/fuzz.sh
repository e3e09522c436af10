#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each one for a bounded
# time over its checked-in seed corpus. A crash fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${TETHER_FUZZ_SECONDS:-15}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target fuzz-targets

shopt -s nullglob
targets=(build/fuzz/tests/fuzz/fuzz-*)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets were built" >&2
  exit 1
fi

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in "${targets[@]}"; do
  name=$(basename "$t")
  seeds=tests/fuzz/corpus/${name#fuzz-}
  work=$(mktemp -d)
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
  echo "fuzz: $name for ${seconds}s"
  if ! "$t" -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 "$work" >"$work.log" 2>&1; then
    tail -n 60 "$work.log" >&2
    echo "fuzz: $name FAILED (log above)" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs)' "$work.log" | tail -n 1 || true
  rm -rf "$work" "$work.log"
done
echo "fuzz: ${#targets[@]} targets passed"
