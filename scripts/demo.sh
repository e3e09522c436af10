#!/usr/bin/env bash
# The README's first command: the main job on an embedded default.
#   1. install what is missing and build (release build, build/release);
#   2. start a local tether-mp with a fresh site key and auto-approval, in a
#      temporary directory, on free loopback ports;
#   3. start a tetherd pointed at it, pinned to that site key;
#   4. push Sync Machine Policy, Sync User Policy and App Evaluation Cycle;
#   5. print each signed BgbResponseMessage as the MP recorded it, and the
#      seed-style log lines of both sides;
#   6. print the web console's address and a one-time administrator
#      password;
#   7. leave nothing running, or with --keep-running keep the MP, the agent
#      and the console up until Ctrl-C.
# Needs no root beyond installing packages: run as a normal user, tetherd
# keeps both halves in one process and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
keep_running=
for arg in "$@"; do
  case $arg in
    --keep-running) keep_running=1 ;;
    -h|--help) echo "Usage: scripts/demo.sh [--keep-running]"; exit 0 ;;
    *) echo "demo: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
echo "== build (release)"
cmake --preset release >/dev/null
cmake --build --preset release >/dev/null
bin=$top/build/release
mp_bin=$bin/mp/tether-mp
agent_bin=$bin/agent/tetherd
ctl_bin=$bin/agent/tetherctl

work=$(mktemp -d /tmp/tether-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -z "${TETHER_DEMO_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for SECONDS description command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}

echo "== start tether-mp in $work/mp"
mkdir -p "$work/mp/policies" "$work/agent/state" "$work/agent/run" "$work/agent/cycles.d"/{machine-policy,user-policy}
"$mp_bin" serve --state-dir "$work/mp" --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
  --console-listen 127.0.0.1:0 --console-webroot "$top/mp/webui" \
  --approval auto --keepalive 60 >"$work/mp.log" 2>&1 &
pids+=($!)
wait_for 20 "tether-mp to listen" test -s "$work/mp/ports"
tcp_port=$(sed -n 's/^tcp=//p' "$work/mp/ports")
https_port=$(sed -n 's/^https=//p' "$work/mp/ports")
"$mp_bin" site-key --state-dir "$work/mp" >"$work/site-key.txt"
fingerprint=$(sed -n 's/^fingerprint: //p' "$work/site-key.txt")
echo "tether-mp listens on 127.0.0.1:$tcp_port (tcp) and :$https_port (https); site key $fingerprint"

# A machine policy with one application whose detection really checks a
# file, so the app evaluation installs it on the first run.
cat >"$work/mp/policies/machine.xml" <<XML
<Policy Version="1" Scope="machine" TimeStamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)" PolicyID="$(cat /proc/sys/kernel/random/uuid | tr a-f A-F)">
  <Applications>
    <Application ID="demo-app" Version="1.0">
      <Intent>Required</Intent>
      <Detect>test -f $work/agent/demo-app.installed</Detect>
      <Install>echo installing demo-app; touch $work/agent/demo-app.installed</Install>
      <TimeoutSeconds>30</TimeoutSeconds>
    </Application>
  </Applications>
</Policy>
XML
cat >"$work/agent/cycles.d/machine-policy/10-show-policy" <<'HOOK'
#!/bin/sh
echo "machine policy hook: policy at ${TETHER_POLICY:-<none>}"
HOOK
chmod 0755 "$work/agent/cycles.d/machine-policy/10-show-policy"
echo "$(cat /proc/sys/kernel/random/uuid | tr -d -)" >"$work/agent/machine-id"

# As root, tetherd runs its real privilege split: the channel process drops
# to an unprivileged user. The packages create "tether"; the demo borrows
# "nobody" instead of adding a user to this machine.
agent_user=
if [ "$(id -u)" -eq 0 ]; then
  agent_user=nobody
  chmod 0755 "$work"
  chown -R nobody "$work/agent/state" "$work/agent/run"
fi

cat >"$work/agent/tether.conf" <<CONF
[mp]
host = 127.0.0.1
tcp_port = $tcp_port
https_port = $https_port
transport = auto
ca_file = $work/mp/tls.crt

[trust]
site_key = $work/mp/site.pub

[agent]
state_dir = $work/agent/state
runtime_dir = $work/agent/run
machine_id_file = $work/agent/machine-id
start_delay_max_seconds = 0
boot_start_delay_max_seconds = 0
${agent_user:+user = $agent_user}

[cycles]
cycles_dir = $work/agent/cycles.d
CONF
"$agent_bin" --check-config --config "$work/agent/tether.conf"

echo "== start tetherd"
"$agent_bin" --config "$work/agent/tether.conf" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
online() { "$mp_bin" devices --state-dir "$work/mp" | grep -q online; }
wait_for 30 "the agent to sign in" online
"$mp_bin" devices --state-dir "$work/mp"

status=0
for type in machine-policy user-policy app-evaluation; do
  echo
  echo "== push $type"
  out=$("$mp_bin" push --state-dir "$work/mp" --type "$type" --all)
  echo "$out"
  push_id=$(sed -n 's/^PushID: \([0-9]*\).*/\1/p' <<<"$out")
  if ! "$mp_bin" push-status --state-dir "$work/mp" "$push_id" --wait 60; then
    echo "demo: push $push_id ($type) was not answered in time" >&2
    status=1
  fi
done

echo
echo "== tether-mp log (seed-style lines)"
grep -E 'Starting to send push task|Received|response' "$work/mp.log" || true
echo
echo "== tetherd log (seed-style lines)"
grep -E 'Receive task from server|Send Task response message' "$work/agent.log" || true
echo
"$ctl_bin" --socket "$work/agent/run/tetherd.sock" status || true

echo
echo "== the web console"
console_port=$(sed -n 's/^console=//p' "$work/mp/ports")
"$mp_bin" user add admin --role full-administrator --state-dir "$work/mp"
echo "Console: https://127.0.0.1:$console_port/  (user admin; self-signed certificate:"
echo "         fingerprint $("$mp_bin" tls-fingerprint --state-dir "$work/mp"))"
if [ -n "$keep_running" ]; then
  echo "Running until Ctrl-C (the MP, the agent and the console)."
  wait "${pids[0]}" || true
fi
exit $status
