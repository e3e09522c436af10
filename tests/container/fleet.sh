#!/usr/bin/env bash
# container-fleet: the container images and the compose fleet, as the
# documentation has users run them, with Debian 12's own podman and
# podman-compose.
#
#   1. A Debian 12 base image made here: debootstrap (minbase) from the
#      mirror apt uses, `podman import`ed as debian:bookworm-slim. No
#      registry is ever contacted (--pull=never, no search registries).
#   2. Both images built from packaging/container/Containerfile exactly as
#      documented (--target agent, --target mp; the context is the source
#      tree, .containerignore applies). They must be slim: no compiler or
#      cmake, and no systemd in the MP image.
#   3. compose.yaml checked with docker-compose 1.29 (`config`) and run with
#      podman-compose: one MP and 5 agent replicas (TETHER_AGENTS=5), each
#      with its own state. Then one more agent in the rootless mode
#      (--user tether), pinned by fingerprints.
#   4. The three actions pushed to --all: 6 distinct ClientIDs, 18 answers.
#
# Everything podman needs is in this test's own files (CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF, a CNI directory):
# overlay storage, or vfs where overlay cannot mount (nested containers);
# runc with cgroupfs (crun refuses hybrid cgroup hierarchies), file events,
# lowered ulimits
# (podman would raise them, which fails without CAP_SYS_RESOURCE). The
# fleet runs in a network and mount namespace of its own (unshare), so its
# bridge, firewall rules and published ports never touch the host's.
# Storage and the base are kept in WORK_DIR between runs (a re-run reuses
# the layer cache).
#
# usage: fleet.sh SOURCE_DIR WORK_DIR
#        (fleet.sh --in-netns ... is the part that runs inside unshare)
. "$(dirname "$0")/../packaging/lib.sh"

skip() {
        echo "SKIP: $*"
        exit 77
}

setup_podman_env() { # WORK_DIR [DRIVER]
        local w=$1 driver=${2:-$(cat "$1/driver" 2>/dev/null || echo overlay)}
        mkdir -p "$w/graph-$driver" "$w/run" "$w/tmp" "$w/cni" "$w/xdg-config" "$w/xdg-runtime"
        local nofile nproc
        # Below the hard limits (equal values are refused here as a raise).
        nofile=$(($(ulimit -Hn) / 2))
        [ "$nofile" -le 65536 ] || nofile=65536
        nproc=$(($(ulimit -Hu) / 2))
        [ "$nproc" -le 16384 ] || nproc=16384
        cat >"$w/containers.conf" <<EOF
[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
image_copy_tmp_dir = "$w/tmp"
tmp_dir = "$w/libpod-tmp"
[network]
network_backend = "cni"
network_config_dir = "$w/cni"
EOF
        cat >"$w/storage.conf" <<EOF
[storage]
driver = "$driver"
graphroot = "$w/graph-$driver"
runroot = "$w/run"
EOF
        cat >"$w/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "permissive"
EOF
        export CONTAINERS_CONF="$w/containers.conf" CONTAINERS_STORAGE_CONF="$w/storage.conf"
        export CONTAINERS_REGISTRIES_CONF="$w/registries.conf" TMPDIR="$w/tmp"
        export XDG_CONFIG_HOME="$w/xdg-config" XDG_RUNTIME_DIR="$w/xdg-runtime"
}

# ------------------------------------------------------ inside the netns ----
if [ "${1:-}" = --in-netns ]; then
        src=$2
        work=$3
        setup_podman_env "$work"
        ip link set lo up
        # What CNI and podman keep outside the test's directories (network
        # namespace files, IP allocations, dnsmasq state) goes to tmpfs
        # mounts of this private mount namespace, never to the host's.
        for d in /run/netns /var/lib/cni /run/containers/cni; do
                mkdir -p "$d"
                mount -t tmpfs tether-container-test "$d" || fail "mount tmpfs on $d"
        done
        project=tether-fleet-test
        compose=(podman-compose -p "$project" -f "$src/packaging/container/compose.yaml")
        mp=${project}_tether-mp_1
        cleanup() {
                "${compose[@]}" down -v >"$work/down.log" 2>&1 || true
                podman rm -f -v -t 5 tether-fleet-test-rootless >/dev/null 2>&1 || true
                podman volume rm -f "${project}_mp-state" >/dev/null 2>&1 || true
                podman volume prune -f >/dev/null 2>&1 || true
                podman network rm -f "${project}_default" >/dev/null 2>&1 || true
                # The dnsname plugin's dnsmasq for this network, if still up.
                local pidfile=/run/containers/cni/dnsname/${project}_default/pidfile
                [ ! -s "$pidfile" ] || kill "$(cat "$pidfile")" 2>/dev/null || true
        }
        trap cleanup EXIT
        cleanup

        note "podman-compose up: 1 MP, 5 agents (TETHER_AGENTS=5)"
        start=$(date +%s)
        TETHER_AGENTS=5 TETHER_START_DELAY_MAX=0 "${compose[@]}" up -d >"$work/up.log" 2>&1 ||
                { tail -n 40 "$work/up.log"; fail "podman-compose up"; }
        agents=$(podman ps --format '{{.Names}}' | grep -c "^${project}_agent_" || true)
        [ "$agents" = 5 ] || { podman ps -a; fail "podman-compose started $agents agent containers, not 5"; }

        # The MP's key fingerprints, for the rootless agent (which cannot
        # read the MP's 0700 state volume, and pins instead, as real devices do).
        for _ in $(seq 60); do podman exec "$mp" test -S /var/lib/tether-mp/admin.sock 2>/dev/null && break; sleep 1; done
        site_fp=$(podman exec "$mp" tether-mp site-key --state-dir /var/lib/tether-mp | sed -n 's/^fingerprint: //p')
        tls_fp=$(podman exec "$mp" tether-mp tls-fingerprint --state-dir /var/lib/tether-mp | grep -o -E '[0-9a-f]{64}' | head -n 1)
        [ -n "$site_fp" ] && [ -n "$tls_fp" ] || { podman logs "$mp"; fail "no fingerprints from the MP"; }
        # Rootless mode (issue 11, item 7): the entrypoint cannot write
        # /etc/tether as "tether"; it must still configure and start.
        podman run -d --name tether-fleet-test-rootless --user tether --net "${project}_default" \
                -e TETHER_MP_HOST=tether-mp -e TETHER_SITE_KEY_FINGERPRINT="$site_fp" \
                -e TETHER_SERVER_FINGERPRINT="$tls_fp" tether-agent:latest >/dev/null ||
                fail "podman run --user tether"

        # Six devices online, each its own.
        online=0
        for _ in $(seq 90); do
                podman exec "$mp" tether-mp devices --json >"$work/devices.json" 2>/dev/null || true
                online=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["devices"] if isinstance(d, dict) else d
print(sum(1 for r in rows if r.get("online")))' "$work/devices.json" 2>/dev/null || echo 0)
                [ "$online" -ge 6 ] && break
                sleep 1
        done
        if [ "$online" -lt 6 ]; then
                podman ps -a
                for c in $(podman ps -a --format '{{.Names}}'); do echo "== $c"; podman logs --tail 15 "$c" 2>&1; done
                fail "$online of 6 agents online after 90 s"
        fi
        note "6 agents online after $(($(date +%s) - start)) s"
        podman logs tether-fleet-test-rootless 2>&1 | grep_q "Signed in to the MP as" ||
                fail "the rootless agent did not sign in: $(podman logs tether-fleet-test-rootless 2>&1 | tail -n 20)"
        echo "ok: the rootless agent (--user tether) configured itself and signed in"

        ids=()
        for c in $(podman ps --format '{{.Names}}' | grep -E "^(${project}_agent_|tether-fleet-test-rootless$)"); do
                id=$(podman exec "$c" cat /var/lib/tether/identity/client-id) || fail "no identity in $c"
                ids+=("$id")
        done
        distinct=$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)
        [ "${#ids[@]}" = 6 ] && [ "$distinct" = 6 ] ||
                fail "${#ids[@]} agents with $distinct distinct ClientIDs: ${ids[*]} (shared state?)"
        if podman exec "$mp" tether-mp conflicts 2>/dev/null | grep_q duplicate-identity; then
                fail "the MP recorded a duplicate identity: $(podman exec "$mp" tether-mp conflicts)"
        fi
        echo "ok: 6 agent containers, 6 distinct ClientIDs, no duplicate-identity conflict"

        answers=0
        for type in machine-policy user-policy app-evaluation; do
                out=$(podman exec "$mp" tether-mp push --type "$type" --all) || fail "push $type: $out"
                push_id=$(printf '%s' "$out" | sed -n 's/^PushID: \([0-9]*\).*/\1/p')
                [ -n "$push_id" ] || fail "push $type printed no PushID: $out"
                podman exec "$mp" tether-mp push-status "$push_id" --wait 60 >"$work/push-$type.txt" 2>&1 ||
                        { cat "$work/push-$type.txt"; fail "push $type ($push_id) not answered by all"; }
                n=$(grep -c "  answered  ReturnCode: " "$work/push-$type.txt" || true)
                [ "$n" = 6 ] || { cat "$work/push-$type.txt"; fail "push $type: $n answers, not 6"; }
                answers=$((answers + n))
        done
        [ "$answers" = 18 ] || fail "$answers answers, not 18"
        echo "ok: machine-policy, user-policy and app-evaluation pushed to --all: $answers answers from 6 devices"
        exit 0
fi

# ------------------------------------------------------------ the host ----
src=$(cd "$1" && pwd)
work=$2
[ "$(id -u)" = 0 ] || skip "needs root (podman storage, debootstrap, network namespaces)"
for tool in podman podman-compose docker-compose debootstrap runc unshare; do
        command -v "$tool" >/dev/null ||
                fail "$tool is not installed (scripts/install-deps.sh lists it)"
done
mirror=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' |
        grep -v -E 'security|updates' | grep -E '/debian/?$' | head -n 1 || true)
if [ -z "$mirror" ]; then
        mirror=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{ print $2 }' |
                grep -E '/debian/?$' | head -n 1 || true)
fi
[ -n "$mirror" ] || skip "no Debian mirror found in apt's sources"
wget -q -T 15 -t 1 -O /dev/null "$mirror/dists/bookworm/Release" ||
        skip "the Debian mirror $mirror is not reachable from here"

mkdir -p "$work"
setup_podman_env "$work"
t0=$(date +%s)

# compose.yaml as Debian 12's two compose programs read it.
cfg=$(TETHER_AGENTS=5 docker-compose -p tether-fleet -f "$src/packaging/container/compose.yaml" config 2>&1) ||
        fail "docker-compose 1.29 rejects compose.yaml: $cfg"
printf '%s\n' "$cfg" | grep_q -E '^ +replicas: 5$' || fail "docker-compose config: no 'replicas: 5' with TETHER_AGENTS=5"
dry=$(cd "$work" && TETHER_AGENTS=5 podman-compose --dry-run -p tether-fleet \
        -f "$src/packaging/container/compose.yaml" up -d 2>&1) || fail "podman-compose --dry-run: $dry"
[ "$(printf '%s\n' "$dry" | grep -c '^podman run --name=tether-fleet_agent_')" = 5 ] ||
        fail "podman-compose does not make 5 agent containers from TETHER_AGENTS=5"
if printf '%s\n' "$dry" | grep '^podman run --name=tether-fleet_agent_' | grep_q -e ':/var/lib/tether\b'; then
        fail "podman-compose mounts one volume on /var/lib/tether for every agent (one identity for the fleet)"
fi
# podman-compose 1.0.3 creates the network and volumes even in a dry run
# (definitions only, in this test's storage and CNI directory).
podman network rm -f tether-fleet_default >/dev/null 2>&1 || true
podman volume rm -f tether-fleet_mp-state >/dev/null 2>&1 || true
echo "ok: compose.yaml: docker-compose 1.29 accepts it; podman-compose makes 5 agents, no shared state volume"

# The base image, once per work directory and storage driver.
if ! podman image exists docker.io/library/debian:bookworm-slim; then
        base="$work/base-rootfs"
        if [ ! -f "$base/.complete" ]; then
                rm -rf "$base"
                note "debootstrap --variant=minbase bookworm ($mirror)"
                debootstrap --variant=minbase bookworm "$base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
                        { tail -n 30 "$work/debootstrap.log"; fail "debootstrap"; }
                # Keep apt's view of a snapshot mirror (its Release may be
                # past Valid-Until) the same as this host's.
                if apt-config dump Acquire::Check-Valid-Until | grep_q '"false"'; then
                        echo 'Acquire::Check-Valid-Until "false";' >"$base/etc/apt/apt.conf.d/99tether-test-mirror"
                fi
                rm -rf "$base/var/cache/apt/archives/"*.deb "$base/var/lib/apt/lists/"*
                touch "$base/.complete"
        fi
        tar -C "$base" --exclude=./.complete -c . |
                podman import - docker.io/library/debian:bookworm-slim >"$work/import.log" 2>&1 ||
                { cat "$work/import.log"; fail "podman import of the debootstrap root"; }
fi
# overlay where it works (fast layers), else vfs: decided once, kept.
if [ ! -f "$work/driver" ]; then
        if out=$(podman run --rm --pull=never --network none --entrypoint true debian:bookworm-slim 2>&1); then
                echo overlay >"$work/driver"
        else
                note "overlay storage does not work here ($out): vfs"
                echo vfs >"$work/driver"
                setup_podman_env "$work" vfs
                tar -C "$work/base-rootfs" --exclude=./.complete -c . |
                        podman import - docker.io/library/debian:bookworm-slim >"$work/import.log" 2>&1 ||
                        { cat "$work/import.log"; fail "podman import of the debootstrap root"; }
        fi
fi
note "storage driver $(cat "$work/driver")"
note "base image ready after $(($(date +%s) - t0)) s"

# The images, as documented (packaging/container/Containerfile).
for target in agent mp; do
        note "podman build --target $target -t tether-$target"
        b0=$(date +%s)
        (cd "$src" && podman build --pull=never --network host -f packaging/container/Containerfile \
                --target "$target" -t "tether-$target" . >"$work/build-$target.log" 2>&1) ||
                { tail -n 40 "$work/build-$target.log"; fail "podman build --target $target"; }
        note "tether-$target built in $(($(date +%s) - b0)) s"
done
podman image prune -f >/dev/null 2>&1 || true
# The build context: build/ and .git stay out (podman reads
# .containerignore, docker .dockerignore).
for f in .containerignore .dockerignore; do
        grep_q -x -E 'build/?' "$src/$f" && grep_q -x -E '\.git/?' "$src/$f" || fail "$f does not keep build/ and .git out"
done
# One container per image (each start copies the image under vfs).
slim_check='for p in cmake gcc ninja-build libssl-dev libc6-dev dpkg-dev $EXTRA; do
        if dpkg -s "$p" >/dev/null 2>&1; then echo "holds $p"; fi; done'
out=$(podman run --rm --network none --entrypoint sh -e EXTRA= tether-agent -c "$slim_check; tetherd --version") ||
        fail "podman run tether-agent: $out"
printf '%s\n' "$out" | grep_q '^holds' && fail "the agent image: $(printf '%s\n' "$out" | grep '^holds' | tr '\n' ' ')"
printf '%s\n' "$out" | grep_q '^tetherd ' || fail "tetherd --version in its image: $out"
out=$(podman run --rm --network none --entrypoint sh -e EXTRA=systemd tether-mp -c "$slim_check; tether-mp --version") ||
        fail "podman run tether-mp: $out"
printf '%s\n' "$out" | grep_q '^holds' && fail "the MP image: $(printf '%s\n' "$out" | grep '^holds' | tr '\n' ' ')"
printf '%s\n' "$out" | grep_q '^tether-mp ' || fail "tether-mp --version in its image: $out"
echo "ok: both images built from the Containerfile; no build dependencies in them, no systemd in the MP image"

# The mount points the fleet's namespace covers with tmpfs: the ones that
# did not exist before are removed again afterwards.
made=()
for d in /run/netns /var/lib/cni /run/containers/cni; do
        [ -d "$d" ] || made+=("$d")
done
rc=0
unshare --net --mount --propagation private bash "$0" --in-netns "$src" "$work" || rc=$?
for d in "${made[@]}"; do
        rmdir "$d" 2>/dev/null || true
done
[ "$rc" = 0 ] || fail "the fleet (see above)"
note "container-fleet took $(($(date +%s) - t0)) s"
