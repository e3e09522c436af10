#!/usr/bin/env bash
# packaging-golden-image: the golden-image procedure of docs/OPERATIONS.md,
# end to end, without a container engine or VMs.
#
#  1. A golden root: tether-agent_*.deb installed with dpkg --root
#     (check-deb.sh), configured for the site (MP address, pinned MP TLS
#     certificate, pinned site-key fingerprint), never started, with an
#     empty /etc/machine-id as the image rules say.
#  2. Clones: "a" and "b" get new machine-ids (what systemd does at a
#     clone's first boot); each tetherd, started against a real
#     `tether-mp serve` on 127.0.0.1, makes its own identity: two distinct
#     ClientIDs, both known to the MP.
#     Clone a's tetherd is then SIGKILLed and restarted three times: the
#     same device reconnecting, which must not read as a conflict.
#  3. Clone "c" shares machine-id and state with "b" (an image taken from a
#     device that had already run): it comes up as the same ClientID with
#     the same key. The two keep taking each other's channel until the MP
#     calls it a duplicate identity (docs/tether-mp.md) and refuses the
#     newcomer. With --shared-state this is checked to be reported as a
#     "duplicate-identity" conflict by `tether-mp conflicts` and
#     `tether-mp devices`, and by `tetherctl status` on the refused clone.
#  4. Clone "d" has b's machine-id and ClientID but another key: the MP
#     refuses it as a conflict (`tether-mp conflicts`), and `tetherctl
#     status` on "d" says so.
#
# The clones' tetherd run on this host, so their paths are relocated into
# each clone by a test-only drop-in (99-test-relocation.conf: state, runtime
# and cycles directories, machine_id_file) and --single-process (the host has
# no user "tether"; the golden root's passwd is not this host's).
#
# usage: golden-image.sh BUILD_DIR SOURCE_DIR [--shared-state]
#   BUILD_DIR: the packaging release tree (packages and tether-mp built)
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
        # The maintainer scripts chown to the new user; dpkg --root as
        # another user cannot.
        echo "SKIP: needs root (dpkg --root, chown in the root)"
        exit 77
fi

build=$1
src=$2
check_shared=0
[ "${3:-}" = "--shared-state" ] && check_shared=1

mp_bin="$build/mp/tether-mp"
[ -x "$mp_bin" ] || fail "$mp_bin not built (run packaging-build first)"

work=$(mktemp -d /tmp/tether-golden.XXXXXX)
pids=()
cleanup() {
        local p
        for p in "${pids[@]}"; do
                kill -TERM "$p" 2>/dev/null || true
        done
        for p in "${pids[@]}"; do
                # Bounded wait, then SIGKILL: never leave a process behind.
                for _ in $(seq 50); do
                        kill -0 "$p" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
        if [ "${KEEP_WORK:-0}" = 1 ]; then
                echo "work directory kept: $work"
        else
                rm -rf "$work"
        fi
}
trap cleanup EXIT

dump_logs() {
        local f
        for f in "$work"/*.log; do
                [ -e "$f" ] || continue
                echo "----- $(basename "$f")"
                tail -n 40 "$f"
        done
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls the command every 0.2 s.
wait_for() {
        local limit=$1 what=$2 i
        shift 2
        for ((i = 0; i < limit * 5; i++)); do
                if "$@" >/dev/null 2>&1; then
                        return 0
                fi
                sleep 0.2
        done
        dump_logs
        fail "timed out after $limit s waiting for $what"
}

# ---------------------------------------------------------------- the MP --
mp_state="$work/mp"
mkdir -p "$mp_state"
site_fp=$("$mp_bin" site-key --state-dir "$mp_state" | sed -n 's/^fingerprint: \([0-9a-f]\{64\}\)$/\1/p')
[ -n "$site_fp" ] || fail "tether-mp site-key printed no fingerprint"
"$mp_bin" serve --state-dir "$mp_state" --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
        --console-listen off --approval auto >"$work/mp.log" 2>&1 &
pids+=($!)
wait_for 20 "the MP's ports file" test -s "$mp_state/ports"
tcp_port=$(sed -n 's/^tcp=//p' "$mp_state/ports")
https_port=$(sed -n 's/^https=//p' "$mp_state/ports")
[ -n "$tcp_port" ] && [ -n "$https_port" ] || fail "ports file: $(cat "$mp_state/ports")"
note "tether-mp on 127.0.0.1: tcp $tcp_port, https $https_port; site key $site_fp"
mp() { "$mp_bin" "$@" --state-dir "$mp_state"; }

# ------------------------------------------------------- the golden root --
golden="$work/golden"
bash "$(dirname "$0")/check-deb.sh" "$build" "$golden" >"$work/install.log" 2>&1 ||
        { cat "$work/install.log"; fail "installing the .deb into the golden root"; }
# The site's configuration, as an administrator writes it into the image.
cat >"$golden/etc/tether/tether.conf.d/50-site.conf" <<EOF
[mp]
host = 127.0.0.1
tcp_port = $tcp_port
https_port = $https_port
transport = tcp
ca_file = $mp_state/tls.crt
[trust]
site_key_fingerprint = $site_fp
EOF
# Image rules: no machine-id, no identity, nothing at runtime.
: >"$golden/etc/machine-id"
[ -z "$(ls -A "$golden/var/lib/tether")" ] || fail "the golden root has state: $(ls -A "$golden/var/lib/tether")"
[ -z "$(ls -A "$golden/run/tether")" ] || fail "the golden root has runtime files"
echo "ok: golden root installed and configured, never started, no identity"

# ------------------------------------------------------------ the clones --
clone() { # NAME [MACHINE_ID]
        local c="$work/$1"
        cp -a "$golden" "$c"
        if [ -n "${2:-}" ]; then
                printf '%s\n' "$2" >"$c/etc/machine-id"
        fi
        cat >"$c/etc/tether/tether.conf.d/99-test-relocation.conf" <<EOF
# Test only: this clone's tetherd runs on the test host.
[agent]
state_dir = $c/var/lib/tether
runtime_dir = $c/run/tether
machine_id_file = $c/etc/machine-id
boot_start_delay_max_seconds = 0
[cycles]
cycles_dir = $c/etc/tether/cycles.d
EOF
}
new_machine_id() { tr -d '-' </proc/sys/kernel/random/uuid; }

start_agent() { # NAME
        local c="$work/$1"
        "$c/usr/sbin/tetherd" --config "$c/etc/tether/tether.conf" --single-process --foreground \
                >>"$work/agent-$1.log" 2>&1 &
        pids+=($!)
        eval "pid_$1=$!"
}
stop_agent() { # NAME
        local p
        p=$(eval echo "\$pid_$1")
        kill -TERM "$p"
        for _ in $(seq 100); do
                kill -0 "$p" 2>/dev/null || break
                sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && fail "tetherd of clone $1 did not stop on SIGTERM"
        wait "$p" 2>/dev/null || true
}
ctl() { # NAME ARGS...
        local c="$work/$1"
        shift
        "$c/usr/bin/tetherctl" --socket "$c/run/tether/tetherd.sock" "$@"
}
client_id() { cat "$work/$1/var/lib/tether/identity/client-id" 2>/dev/null; }
mp_knows() { mp devices --json | grep_q "$1"; }
signed_in() { grep_q "Signed in to the MP as $(client_id "$1")" "$work/agent-$1.log"; }

clone a "$(new_machine_id)"
clone b "$(new_machine_id)"
# Clone a also keeps a CMTrace-format log, in the packaged /var/log/tether.
printf '[log]\ncmtrace_file = %s\n' "$work/a/var/log/tether/tetherd.log" \
        >"$work/a/etc/tether/tether.conf.d/98-cmtrace.conf"
start_agent a
start_agent b
wait_for 30 "clone a's identity" test -s "$work/a/var/lib/tether/identity/client-id"
wait_for 30 "clone b's identity" test -s "$work/b/var/lib/tether/identity/client-id"
id_a=$(client_id a)
id_b=$(client_id b)
wait_for 30 "clone a to sign in" signed_in a
wait_for 30 "clone b to sign in" signed_in b
[ "$id_a" != "$id_b" ] || fail "clones with new machine-ids got the same ClientID $id_a"
wait_for 10 "the MP to list clone a" mp_knows "$id_a"
wait_for 10 "the MP to list clone b" mp_knows "$id_b"
grep_q "Created the device identity: ClientID $id_a" "$work/agent-a.log" ||
        fail "clone a did not log its first-start identity: $(tail -n 20 "$work/agent-a.log")"
echo "ok: clones a and b (new machine-ids): distinct ClientIDs $id_a and $id_b, both signed in"
ctl a status >"$work/status-a.txt" 2>&1 || fail "tetherctl status on clone a: $(cat "$work/status-a.txt")"
grep_q "$id_a" "$work/status-a.txt" || fail "tetherctl status on a does not name $id_a: $(cat "$work/status-a.txt")"

# A push reaches both and is answered: the clones are whole devices.
push_out=$(mp push --type machine-policy "$id_a" "$id_b") || fail "tether-mp push: $push_out"
push_id=$(printf '%s' "$push_out" | sed -n 's/^PushID: \([0-9]*\) .*/\1/p')
[ -n "$push_id" ] || fail "no PushID in: $push_out"
mp push-status "$push_id" --wait 30 >"$work/push-status.txt" 2>&1 ||
        { cat "$work/push-status.txt"; dump_logs; fail "push $push_id not answered by both clones"; }
grep_q "Receive task from server with pushid=$push_id" "$work/agent-a.log" || fail "clone a logged no task"
grep_q "Send Task response message <BgbResponseMessage" "$work/agent-b.log" || fail "clone b logged no response"
echo "ok: push $push_id answered by both clones"
cm="$work/a/var/log/tether/tetherd.log"
grep_q -E '^<!\[LOG\[Receive task from server with pushid='"$push_id"', .*\]LOG\]!><time="[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\+000" date="[0-9]{2}-[0-9]{2}-[0-9]{4}" component="BgbAgent" context="" type="1" thread="[0-9]+" file="">$' "$cm" ||
        fail "no CMTrace line for the push in $cm: $(tail -n 5 "$cm" 2>&1)"
grep_q -E '^<!\[LOG\[Send Task response message <BgbResponseMessage .*</BgbResponseMessage> successfully\.\]LOG\]!>' "$cm" ||
        fail "no CMTrace line for the response in $cm"
echo "ok: clone a's CMTrace log has the push's two lines"

# Should-fail case for the duplicate-identity guard: a device killed and
# restarted at once, three times over, is the same device reconnecting,
# not a conflict.
for round in 1 2 3; do
        before=$(grep -c "Signed in to the MP as $id_a" "$work/agent-a.log")
        kill -KILL "$pid_a"
        wait "$pid_a" 2>/dev/null || true
        start_agent a
        signed_in_again() { [ "$(grep -c "Signed in to the MP as $id_a" "$work/agent-a.log")" -gt "$before" ]; }
        wait_for 30 "clone a to sign in again after SIGKILL (round $round)" signed_in_again
done
mp conflicts --json | grep_q "$id_a" && fail "clone a's fast restarts were taken for a conflict: $(mp conflicts)"
ctl a status 2>&1 | grep -q -i conflict && fail "tetherctl status on a reports a conflict: $(ctl a status)"
echo "ok: clone a SIGKILLed and restarted three times: no conflict"

# Clone c: the same machine-id and a copy of b's state (b stopped for a
# consistent copy, as an image capture would be).
stop_agent b
clone c "$(cat "$work/b/etc/machine-id")"
rm -rf "$work/c/var/lib/tether"
cp -a "$work/b/var/lib/tether" "$work/c/var/lib/tether"
start_agent b
start_agent c
wait_for 30 "clone c to sign in" grep_q "Signed in to the MP as" "$work/agent-c.log"
id_c=$(client_id c)
[ "$id_c" = "$id_b" ] || fail "clone c (b's machine-id and state) has ClientID $id_c, not b's $id_b"
grep_q "Created a new device identity" "$work/agent-c.log" &&
        fail "clone c made a new identity although its machine-id and state are b's"
echo "ok: clone c (b's machine-id and state) runs as b's ClientID $id_c with b's key"

# Clone d: b's machine-id and ClientID, but another device key (here a's: an
# identity put together from two machines, as a partial restore does). The
# MP has bound b's ClientID to b's key: a conflict, refused and recorded.
clone d "$(cat "$work/b/etc/machine-id")"
rm -rf "$work/d/var/lib/tether"
cp -a "$work/b/var/lib/tether" "$work/d/var/lib/tether"
cp "$work/a/var/lib/tether/identity/device.key" "$work/a/var/lib/tether/identity/device.crt" \
        "$work/d/var/lib/tether/identity/"
start_agent d
conflict_listed_d() { mp conflicts --json | grep_q "$id_b"; }
wait_for 30 "tether-mp conflicts to list ClientID $id_b (clone d)" conflict_listed_d
status_conflict_d() { ctl d status 2>&1 | grep_q -i "conflict"; }
wait_for 30 "tetherctl status on clone d to report the conflict" status_conflict_d
grep_q "The MP reports a ClientID conflict for $id_b" "$work/agent-d.log" ||
        fail "clone d did not log the conflict: $(tail -n 20 "$work/agent-d.log")"
grep_q "Conflict: ClientID '$id_b'" "$work/mp.log" || fail "the MP did not log the conflict"
ctl d status | grep -E 'ClientID|Last error'
echo "ok: clone d (b's ClientID, another key): conflict in tether-mp conflicts and tetherctl status"

if [ "$check_shared" = 1 ]; then
        # Both now hold one identity. The MP must see two devices behind it:
        # a "duplicate-identity" row (clone d's row above is kind "key").
        duplicate_listed() { mp conflicts | grep "$id_b" | grep_q "duplicate-identity"; }
        wait_for 60 "tether-mp conflicts to list $id_b as a duplicate identity" duplicate_listed
        mp conflicts | grep "duplicate-identity"
        mp devices | grep "$id_b" | grep_q "duplicate-identity" ||
                fail "tether-mp devices does not flag $id_b: $(mp devices)"
        # The refused one (whichever came third) says so; the other works.
        refused=""
        status_conflict() {
                local n
                for n in b c; do
                        if ctl "$n" status 2>&1 | grep -q "GOODBYE from the MP: conflict"; then
                                refused=$n
                                return 0
                        fi
                done
                return 1
        }
        wait_for 30 "tetherctl status on c or b to report the conflict" status_conflict
        ctl "$refused" status | grep -E 'ClientID|Last error'
        grep_q "two devices share this identity" "$work/mp.log" || fail "the MP did not log the duplicate identity"
        echo "ok: the shared identity is reported as a conflict by the MP and by tetherctl status on clone $refused"
fi
echo "golden image: all checks passed"
