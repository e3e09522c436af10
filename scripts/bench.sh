#!/usr/bin/env bash
# One command that regenerates the figures and plots of docs/PERFORMANCE.md:
#   1. installs what is missing, plus the peers and gnuplot (bench only: the
#      test path needs none of them): cfengine3, mosquitto, libmosquitto-dev;
#   2. builds the release binaries (build/release, or $TETHER_BENCH_BUILD);
#   3. runs bench/bench.py all: push latency (tmpfs and disk), idle cost,
#      the MQTT and CFEngine peers, 10,000 channels on one MP (mp-swarm:
#      idle memory per connection, fan-out to the last verified answer, and
#      the reconnection storm after an MP restart with and without TLS
#      session resumption; issue #16's MP rows with their targets),
#      the 1,000-agent fleet, the six fault
#      scenarios at 1,000 agents, then writes docs/PERFORMANCE.md and
#      docs/perf/*.png.
# Arguments go to bench/bench.py, e.g. a quicker run:
#   scripts/bench.sh --pushes 2000 --window 60 --agents 300
# The MP rows alone: python3 bench/bench.py swarm, then bench.py report-mp.
# Needs root for the tmpfs, the network namespaces of the fleet and
# cf-serverd; takes about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

TETHER_EXTRA_PACKAGES="cfengine3 mosquitto libmosquitto-dev gnuplot-nox nftables" \
        scripts/install-deps.sh

build=${TETHER_BENCH_BUILD:-build/release}
echo "== build (release) in $build"
if [ "$build" = build/release ]; then
        cmake --preset release >/dev/null
else
        cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTETHER_TESTS=OFF >/dev/null
fi
# Configure again so that the libmosquitto peer is found once installed.
cmake "$build" >/dev/null
cmake --build "$build" -j 2 --target tetherd tetherctl tether-mp tether-bench-push tether-bench-mqtt mp-swarm

echo "== benchmarks"
exec python3 bench/bench.py all --build "$build" "$@"
