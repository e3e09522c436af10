#!/usr/bin/env bash
# packaging-units: the unit files pass `systemd-analyze verify`, their
# sandbox keeps the exposure recorded in docs/OPERATIONS.md, and a broken
# copy is caught (so that the check can fail).
#
# usage: units.sh UNIT_DIR TETHERD_BIN TETHER_MP_BIN
#   UNIT_DIR: packaging/ (the units as packaged, with /usr paths)
#   *_BIN:    built binaries, or "" when that target does not exist yet
. "$(dirname "$0")/lib.sh"

unit_dir=$1
tetherd_bin=${2:-}
mp_bin=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# systemd-analyze verify checks that ExecStart= is executable. The packaged
# units name /usr/sbin/tetherd and /usr/bin/tether-mp, which this machine
# does not have; the copies under test name the built binaries instead.
# When a binary is not built, the copy keeps the packaged path and the only
# message allowed is that one "is not executable".
prepare() {
        local unit=$1 packaged=$2 built=$3
        if [ -n "$built" ]; then
                [ -x "$built" ] || fail "$built is not an executable"
                sed "s|$packaged|$built|g" "$unit_dir/$unit" >"$work/$unit"
        else
                note "$unit: $packaged is not built in this tree; its missing-binary message is expected"
                cp "$unit_dir/$unit" "$work/$unit"
        fi
}
prepare tetherd.service /usr/sbin/tetherd "$tetherd_bin"
prepare tether-mp.service /usr/bin/tether-mp "$mp_bin"

verify() {
        # --man=no: man pages are checked elsewhere (the package test).
        systemd-analyze verify --man=no "$@" >"$work/verify.out" 2>&1 || true
        cat "$work/verify.out"
}

out=$(cd "$work" && verify ./tetherd.service ./tether-mp.service)
unexpected=$(printf '%s\n' "$out" | grep -v -E '^$' |
        grep -v -E "^tetherd\.service: Command /usr/sbin/tetherd is not executable: No such file or directory$" |
        grep -v -E "^tether-mp\.service: Command /usr/bin/tether-mp is not executable: No such file or directory$" || true)
[ -z "$unexpected" ] || fail "systemd-analyze verify reported: $unexpected"
if [ -n "$tetherd_bin" ] && printf '%s' "$out" | grep_q tetherd; then
        fail "tetherd.service: $out"
fi
if [ -n "$mp_bin" ] && printf '%s' "$out" | grep_q tether-mp; then
        fail "tether-mp.service: $out"
fi
echo "ok: systemd-analyze verify tetherd.service tether-mp.service"

# The directives that matter are present (a regression here is silent
# otherwise: systemd ignores nothing it understands).
for d in Type=notify NotifyAccess=main WatchdogSec= Restart=on-failure StartLimitIntervalSec=0 RestartPreventExitStatus=78 \
        'ExecReload=/bin/kill -HUP $MAINPID' KillMode=mixed ConfigurationDirectory=tether \
        PrivateTmp=yes ProtectKernelLogs=yes ProtectControlGroups=yes RestrictRealtime=yes \
        LockPersonality=yes SystemCallArchitectures=native \
        'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK'; do
        grep -q -F -e "$d" "$work/tetherd.service" ||
                fail "tetherd.service lacks '$d'"
done
# ...and the ones that would break installing software are absent.
for d in RestrictSUIDSGID=yes NoNewPrivileges=yes MemoryDenyWriteExecute=yes ProtectSystem= \
        StateDirectory= RuntimeDirectory=; do
        if grep -q -E "^$d" "$work/tetherd.service"; then
                fail "tetherd.service sets '$d', which breaks cycles or the channel process (see the unit's comments)"
        fi
done
echo "ok: tetherd.service directives"

# Exposure, as recorded in docs/OPERATIONS.md: tetherd 8.0 (an installing
# root agent), tether-mp 1.2. --threshold fails above the given 0-100 value.
check "tetherd.service exposure <= 8.0" \
        systemd-analyze security --offline=yes --threshold=80 "$work/tetherd.service" >/dev/null
check "tether-mp.service exposure <= 1.2" \
        systemd-analyze security --offline=yes --threshold=12 "$work/tether-mp.service" >/dev/null
systemd-analyze security --offline=yes "$work/tetherd.service" 2>/dev/null | tail -n 1
systemd-analyze security --offline=yes "$work/tether-mp.service" 2>/dev/null | tail -n 1

# Should fail: a misspelt directive and a bad value are reported.
mkdir "$work/broken"
sed 's/^WatchdogSec=60s/WatchdogSecs=60s/; s/^Restart=on-failure/Restart=sometimes/' \
        "$work/tetherd.service" >"$work/broken/tetherd.service"
broken=$(cd "$work/broken" && verify ./tetherd.service)
printf '%s' "$broken" | grep_q "WatchdogSecs" || fail "verify did not catch an unknown directive: $broken"
printf '%s' "$broken" | grep_q -i "restart" || fail "verify did not catch a bad Restart= value: $broken"
echo "ok: a broken unit is caught"
# Should fail: a weaker sandbox crosses the threshold.
grep -v -E '^(PrivateTmp|ProtectKernelLogs|ProtectControlGroups|RestrictAddressFamilies|SystemCallFilter)=' \
        "$work/tetherd.service" >"$work/broken/weak.service"
if systemd-analyze security --offline=yes --threshold=80 "$work/broken/weak.service" >/dev/null 2>&1; then
        fail "a weaker tetherd.service passed the exposure threshold"
fi
echo "ok: a weaker sandbox is caught"

# sysusers.d and tmpfiles.d parse, in a scratch root.
root="$work/root"
mkdir -p "$root/etc"
check "sysusers.d/tether.conf creates user tether" \
        systemd-sysusers --root="$root" "$(dirname "$0")/../../packaging/sysusers.d/tether.conf"
grep -q '^tether:x:[0-9]*:[0-9]*:Tether agent channel process:/var/lib/tether:/usr/sbin/nologin$' "$root/etc/passwd" ||
        fail "tether user entry: $(cat "$root/etc/passwd")"
check "tmpfiles.d/tether.conf creates the directories" \
        systemd-tmpfiles --root="$root" --create "$(dirname "$0")/../../packaging/tmpfiles.d/tether.conf"
uid=$(awk -F: '$1 == "tether" { print $3 }' "$root/etc/passwd")
for d in var/lib/tether run/tether var/log/tether; do
        [ "$(stat -c '%a %u' "$root/$d")" = "750 $uid" ] || fail "$d: $(stat -c '%a %u:%g' "$root/$d")"
done
echo "ok: /var/lib/tether, /run/tether and /var/log/tether are 0750 tether"

# Secrets (issue 11, item 5): the MP runs as a dynamic user, so a token in
# a 0600 tether-mp.conf is out of its reach. The unit passes the token as
# the credential "enrolment-token" (LoadCredential=, with an empty-line
# SetCredential= fallback when the file is absent); the MP reads it from
# $CREDENTIALS_DIRECTORY as systemd sets it.
grep_q -x 'LoadCredential=enrolment-token:/etc/credstore/tether-mp.enrolment-token' "$work/tether-mp.service" ||
        fail "tether-mp.service does not load the enrolment-token credential"
grep_q -x 'SetCredential=enrolment-token:\\n' "$work/tether-mp.service" ||
        fail "tether-mp.service has no fallback for a missing enrolment-token file (the unit would not start)"
if [ -n "$mp_bin" ]; then
        creds="$work/credentials"
        mkdir -m 0700 "$creds"
        printf 's3cret\n' >"$creds/enrolment-token"
        chmod 0400 "$creds/enrolment-token"
        conf="$work/tether-mp.conf"
        printf '[MP]\nApproval=token\n' >"$conf"
        out=$(CREDENTIALS_DIRECTORY=$creds "$mp_bin" serve --config "$conf" --state-dir "$work/mp" --check 2>&1) ||
                fail "tether-mp with the enrolment-token credential: $out"
        printf '%s' "$out" | grep_q "configuration OK" || fail "tether-mp --check: $out"
        # Should fail: the unit's fallback (an empty line) is no token.
        printf '\n' >"$creds/fallback"
        mkdir "$creds/empty" && mv "$creds/fallback" "$creds/empty/enrolment-token"
        if out=$(CREDENTIALS_DIRECTORY=$creds/empty "$mp_bin" serve --config "$conf" --state-dir "$work/mp" --check 2>&1); then
                fail "tether-mp took the empty fallback credential as a token: $out"
        fi
        printf '%s' "$out" | grep_q "enrolment-token" || fail "the error does not name the credential: $out"
        echo "ok: the MP reads its enrolment token from the systemd credential, and the empty fallback is none"
fi
