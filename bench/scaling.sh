#!/usr/bin/env bash
# The figures of docs/SCALING.md: bench/mp-swarm with its simulated agents
# spread over 1 and then 3 tether-mp nodes on one throwaway PostgreSQL each
# (tests/integration/mp-pg/pg-run.sh), release build. A benchmark, not a
# test. Usage: bench/scaling.sh [CLIENTS (3000)] [BUILD_DIR (build/release)]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-3000}
build=${2:-build/release}
if [ ! -x "$build/bench/mp-swarm" ]; then
  cmake --preset release >/dev/null
  cmake --build "$build" -j 2 --target tether-mp mp-swarm
fi
for nodes in 1 3; do
  echo "== $nodes node(s), $clients clients, $(date -u +%FT%TZ)"
  tests/integration/mp-pg/pg-run.sh sh -c \
    "exec '$build/bench/mp-swarm' --clients $clients --no-storm --nodes $nodes --store \"\$TETHER_TEST_PG\" --mp '$build/mp/tether-mp'"
done
