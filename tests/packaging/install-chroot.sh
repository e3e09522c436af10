#!/usr/bin/env bash
# packaging-install-chroot: the .deb files installed with the real dpkg
# inside a Debian 12 root made by debootstrap (minbase plus the packages'
# own Depends), so that their dependencies are proven complete: the
# binaries start in a root that has nothing else.
#
# The root is fetched once from the Debian mirror that apt uses here and
# cached in BUILD_DIR (about 50 s and 300 MB); each run installs into a
# copy. Without debootstrap or without the mirror the test is SKIPPED (exit
# 77, shown by ctest) and says why; packaging-install covers the same
# checks offline with dpkg --root.
#
# usage: install-chroot.sh BUILD_DIR
. "$(dirname "$0")/lib.sh"

build=$1
agent_deb=$(ls "$build"/tether-agent_*_*.deb 2>/dev/null | head -n 1)
mp_deb=$(ls "$build"/tether-mp_*_*.deb 2>/dev/null | head -n 1)
[ -n "$agent_deb" ] && [ -n "$mp_deb" ] || fail "no .deb files in $build (run packaging-build first)"

skip() {
        echo "SKIP: $*"
        exit 77
}
[ "$(id -u)" = 0 ] || skip "chroot needs root"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (scripts/install-deps.sh lists it)"

# The mirror apt uses (deb822 sources first, then one-line sources).
mirror=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' |
        grep -v -E 'security|updates' | grep -E '/debian/?$' | head -n 1 || true)
if [ -z "$mirror" ]; then
        mirror=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{ print $2 }' |
                grep -E '/debian/?$' | head -n 1 || true)
fi
[ -n "$mirror" ] || skip "no Debian mirror found in apt's sources"
wget -q -T 15 -t 1 -O /dev/null "$mirror/dists/bookworm/Release" ||
        skip "the Debian mirror $mirror is not reachable from here"

# Depends of both packages, first alternative of each.
includes=$( (dpkg-deb -f "$agent_deb" Depends; echo ","; dpkg-deb -f "$mp_deb" Depends) | tr ',' '\n' |
        sed -e 's/|.*//' -e 's/([^)]*)//g' -e 's/[[:space:]]//g' | grep -v '^$' | sort -u | paste -sd, -)
key=$(printf '%s %s' "$mirror" "$includes" | sha256sum | cut -c1-12)
cache="$build/debootstrap-bookworm-$key"
if [ ! -f "$cache/.complete" ]; then
        rm -rf "$cache"
        note "debootstrap --variant=minbase --include=$includes bookworm ($mirror)"
        start=$(date +%s)
        debootstrap --variant=minbase --include="$includes" bookworm "$cache" "$mirror" \
                >"$cache.log" 2>&1 || { tail -n 30 "$cache.log"; fail "debootstrap"; }
        touch "$cache/.complete"
        note "debootstrap took $(($(date +%s) - start)) s"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
cp -a "$cache" "$root"
cp "$agent_deb" "$mp_deb" "$root/tmp/"
# Each command runs in its own mount and PID namespace with /proc mounted
# (systemd-tmpfiles needs it), so nothing stays mounted whatever happens.
in_root() {
        unshare --mount --pid --fork --mount-proc="$root/proc" \
                chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

note "chroot dpkg -i $(basename "$agent_deb") $(basename "$mp_deb")"
in_root dpkg -i "/tmp/$(basename "$agent_deb")" "/tmp/$(basename "$mp_deb")" || fail "dpkg -i in the chroot"
[ -z "$(in_root dpkg --audit)" ] || fail "dpkg --audit: $(in_root dpkg --audit)"
echo "ok: both packages installed with their dependencies satisfied"

in_root getent passwd tether | grep_q ':/var/lib/tether:/usr/sbin/nologin$' || fail "no user tether in the chroot"
uid=$(in_root getent passwd tether | cut -d: -f3)
[ "$(stat -c '%a %u' "$root/var/lib/tether")" = "750 $uid" ] || fail "/var/lib/tether: $(stat -c '%a %u' "$root/var/lib/tether")"
[ -z "$(ls -A "$root/var/lib/tether")" ] || fail "install made state: $(ls -A "$root/var/lib/tether")"
echo "ok: user tether, /var/lib/tether 0750 and empty (no identity)"

in_root dpkg-query -W -f='${Conffiles}\n' tether-agent | grep_q '^ /etc/tether/tether.conf ' ||
        fail "tether.conf is not a conffile: $(in_root dpkg-query -W -f='${Conffiles}' tether-agent)"
if [ -e "$root/etc/tether/tether-mp.conf" ]; then
        in_root dpkg-query -W -f='${Conffiles}\n' tether-mp | grep_q '^ /etc/tether/tether-mp.conf ' ||
                fail "tether-mp.conf is not a conffile of tether-mp"
        in_root /usr/bin/tether-mp serve --config /etc/tether/tether-mp.conf --state-dir /var/lib/tether-mp --check |
                grep_q "configuration OK" || fail "the packaged tether-mp.conf does not pass --check"
fi
echo "ok: /etc/tether/tether.conf (and tether-mp.conf) are conffiles"

state=$(in_root systemctl is-enabled tetherd.service 2>&1 || true)
[ "$state" = disabled ] || fail "tetherd.service is '$state' after install, not disabled"
state=$(in_root systemctl is-enabled tether-mp.service 2>&1 || true)
[ "$state" = disabled ] || fail "tether-mp.service is '$state' after install, not disabled"
echo "ok: neither service enabled"

# The binaries run in a root that has only their declared dependencies.
in_root /usr/sbin/tetherd --help >/dev/null || fail "tetherd --help in the chroot"
in_root /usr/bin/tetherctl --help >/dev/null || fail "tetherctl --help in the chroot"
in_root /usr/bin/tether-mp site-key --state-dir /tmp/mp-state | grep_q '^fingerprint: [0-9a-f]\{64\}$' ||
        fail "tether-mp site-key in the chroot"
# The default configuration names no MP: tetherd refuses it, and says so.
if out=$(in_root /usr/sbin/tetherd --check-config 2>&1); then
        fail "tetherd accepted the unconfigured default configuration: $out"
fi
printf '%s' "$out" | grep_q -i 'host' || fail "tetherd --check-config did not name the missing host: $out"
echo "ok: tetherd, tetherctl and tether-mp run in the chroot; the default configuration is refused"

# The packaged layout with the real privilege split: tether-mp and tetherd
# from the packages, in the root (sharing this host's loopback), tetherd
# started as root so that its channel process drops to the packaged user
# "tether" and must live with /var/lib/tether and /run/tether as tmpfiles.d
# made them. No --single-process here.
pids=()
stop_all() {
        local p
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${pids[@]}"; do
                for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
        pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
run_in_root_bg() { # LOG COMMAND...: no PID namespace, so $! is the program itself
        local log=$1
        shift
        unshare --mount --mount-proc="$root/proc" \
                chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@" >"$log" 2>&1 &
        pids+=($!)
}
wait_file() { # SECONDS FILE
        for _ in $(seq $(($1 * 5))); do [ -s "$2" ] && return 0; sleep 0.2; done
        return 1
}
run_in_root_bg "$work/mp.log" /usr/bin/tether-mp serve --state-dir /tmp/mp-state --listen 127.0.0.1:0 \
        --https-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --approval auto
wait_file 20 "$root/tmp/mp-state/ports" || { cat "$work/mp.log"; fail "tether-mp did not start in the root"; }
tcp_port=$(sed -n 's/^tcp=//p' "$root/tmp/mp-state/ports")
https_port=$(sed -n 's/^https=//p' "$root/tmp/mp-state/ports")
site_fp=$(in_root /usr/bin/tether-mp site-key --state-dir /tmp/mp-state | sed -n 's/^fingerprint: //p')
# The MP's self-signed certificate as the agent's CA, readable by the
# channel process (the MP's state directory is not).
install -m 0644 "$root/tmp/mp-state/tls.crt" "$root/etc/tether/mp-ca.pem"
cat >"$root/etc/tether/tether.conf.d/50-site.conf" <<EOF2
[mp]
host = 127.0.0.1
tcp_port = $tcp_port
https_port = $https_port
ca_file = /etc/tether/mp-ca.pem
[trust]
site_key_fingerprint = $site_fp
[agent]
# A CI machine may have just booted: no boot-time spread in the test.
boot_start_delay_max_seconds = 0
EOF2
echo "0123456789abcdef0123456789abcdef" >"$root/etc/machine-id"
in_root /usr/sbin/tetherd --check-config | grep_q "configuration OK" || fail "configured tetherd --check-config"
run_in_root_bg "$work/tetherd.log" /usr/sbin/tetherd --foreground
signed_in() { grep_q "Signed in to the MP as" "$work/tetherd.log"; }
for _ in $(seq 100); do signed_in && break; sleep 0.2; done
signed_in || { cat "$work/tetherd.log" "$work/mp.log"; fail "packaged tetherd did not sign in"; }
grep_q "^channel: " "$work/tetherd.log" || fail "no channel process in the log (no privilege split?): $(cat "$work/tetherd.log")"
owner=$(stat -c '%u' "$root/var/lib/tether/identity/client-id")
[ "$owner" = "$uid" ] || fail "the identity is owned by uid $owner, not tether ($uid)"
[ -S "$root/run/tether/tetherd.sock" ] || fail "no control socket in /run/tether"
in_root /usr/bin/tetherctl status >"$work/status.txt" 2>&1 || fail "tetherctl status: $(cat "$work/status.txt")"
grep_q "signed-in" "$work/status.txt" || fail "tetherctl status: $(cat "$work/status.txt")"
client=$(cat "$root/var/lib/tether/identity/client-id")
push=$(in_root /usr/bin/tether-mp push --type app-evaluation "$client" --state-dir /tmp/mp-state) ||
        fail "tether-mp push: $push"
push_id=$(printf '%s' "$push" | sed -n 's/^PushID: \([0-9]*\) .*/\1/p')
in_root /usr/bin/tether-mp push-status "$push_id" --wait 30 --state-dir /tmp/mp-state >"$work/push.txt" 2>&1 ||
        { cat "$work/push.txt" "$work/tetherd.log"; fail "push $push_id not answered"; }
grep_q "answered  ReturnCode: 1 (Success)" "$work/push.txt" || fail "push $push_id: $(cat "$work/push.txt")"
# the packaged web console's files are served (no CDN: from the package)
console_port=$(sed -n 's/^console=//p' "$root/tmp/mp-state/ports")
curl -sk "https://127.0.0.1:$console_port/app.js" >"$work/app.js" || fail "the packaged console did not answer"
grep -q "The Tether web console" "$work/app.js" || fail "the packaged console served no app.js: $(head -c 300 "$work/app.js")"
stop_all
echo "ok: packaged tetherd with the privilege split: identity owned by tether, control socket, push answered (ReturnCode 1)"

# Remove, then reinstall, as administrators do (issue 11, item 1): the
# remove masks both units (so nothing starts a unit whose binary is gone);
# the reinstall must lift the mask, or `systemctl enable` fails with "Unit
# file ... is masked" and the device never comes back. The identity
# survives the remove: the same ClientID signs in again.
in_root systemctl enable tetherd.service tether-mp.service >/dev/null 2>&1 ||
        fail "systemctl enable before the remove: $(in_root systemctl enable tetherd.service tether-mp.service 2>&1)"
in_root dpkg -r tether-agent tether-mp >/dev/null || fail "dpkg -r in the chroot"
[ "$(readlink "$root/etc/systemd/system/tetherd.service")" = /dev/null ] ||
        fail "the remove did not mask tetherd.service (the test no longer reproduces the reinstall case)"
in_root dpkg -i "/tmp/$(basename "$agent_deb")" "/tmp/$(basename "$mp_deb")" >/dev/null || fail "dpkg -i again after the remove"
for unit in tetherd.service tether-mp.service; do
        [ ! -L "$root/etc/systemd/system/$unit" ] || fail "$unit is still masked after the reinstall"
        out=$(in_root systemctl enable "$unit" 2>&1) || fail "systemctl enable $unit after the reinstall: $out"
        state=$(in_root systemctl is-enabled "$unit" 2>&1 || true)
        [ "$state" = enabled ] || fail "$unit is '$state' after remove, reinstall and enable"
done
echo "ok: remove, reinstall: both units unmasked and enabled again"
rm -f "$root/tmp/mp-state/ports"
run_in_root_bg "$work/mp2.log" /usr/bin/tether-mp serve --state-dir /tmp/mp-state --listen "127.0.0.1:$tcp_port" \
        --https-listen "127.0.0.1:$https_port" --approval auto
wait_file 20 "$root/tmp/mp-state/ports" || { cat "$work/mp2.log"; fail "tether-mp did not start again in the root"; }
run_in_root_bg "$work/tetherd2.log" /usr/sbin/tetherd --foreground
signed_in2() { grep_q "Signed in to the MP as" "$work/tetherd2.log"; }
for _ in $(seq 150); do signed_in2 && break; sleep 0.2; done
signed_in2 || { cat "$work/tetherd2.log" "$work/mp2.log"; fail "the reinstalled tetherd did not sign in"; }
[ "$(cat "$root/var/lib/tether/identity/client-id")" = "$client" ] || fail "the reinstall made a new ClientID"
grep_q "Signed in to the MP as $client" "$work/tetherd2.log" ||
        fail "the reinstalled tetherd signed in as another device: $(grep 'Signed in' "$work/tetherd2.log")"
stop_all
echo "ok: the reinstalled tetherd starts and signs in with the same ClientID ($client)"

in_root dpkg -P tether-agent tether-mp >/dev/null || fail "dpkg -P in the chroot"
[ ! -e "$root/var/lib/tether" ] || fail "purge left /var/lib/tether"
[ ! -e "$root/etc/tether/tether.conf" ] || fail "purge left the conffile"
# docs/OPERATIONS.md says purge deletes /etc/tether, drop-ins included (this
# test put 50-site.conf and mp-ca.pem there, as an administrator does).
[ ! -e "$root/etc/tether" ] || fail "purge left /etc/tether: $(find "$root/etc/tether" | sed "s|$root||")"
[ ! -L "$root/etc/systemd/system/tetherd.service" ] || fail "purge left tetherd.service masked"
echo "ok: purge in the chroot deletes /etc/tether and the state"

# The RPM in the same root, with this host's rpm (--root: the scriptlets
# run chrooted there). --nodeps: the root's rpm database is empty, its
# libraries are dpkg's. Files, %config, and what %post makes.
rpm_agent=$(ls "$build"/tether-agent-*.rpm 2>/dev/null | head -n 1)
[ -n "$rpm_agent" ] || fail "no tether-agent RPM in $build"
rm -rf "$root/var/lib/tether" "$root/run/tether" "$root/var/log/tether"
rpm_root() { unshare --mount --mount-proc="$root/proc" rpm --root="$root" --dbpath=/var/lib/rpm "$@"; }
rpm_root --initdb || fail "rpm --initdb"
rpm_root -i --nodeps "$rpm_agent" || fail "rpm -i $(basename "$rpm_agent")"
for f in usr/sbin/tetherd usr/bin/tetherctl lib/systemd/system/tetherd.service etc/tether/tether.conf; do
        [ -e "$root/$f" ] || fail "the RPM did not install /$f"
done
rpm_root -qc tether-agent | grep_q -x /etc/tether/tether.conf || fail "the RPM's %config list: $(rpm_root -qc tether-agent)"
[ "$(stat -c '%a %u' "$root/var/lib/tether")" = "750 $uid" ] || fail "the RPM's %post did not make /var/lib/tether"
[ -z "$(ls -A "$root/var/lib/tether")" ] || fail "the RPM's install made state"
echo "# local" >>"$root/etc/tether/tether.conf"
rpm_root -e tether-agent || fail "rpm -e"
[ ! -e "$root/usr/sbin/tetherd" ] || fail "rpm -e left tetherd"
[ -e "$root/etc/tether/tether.conf.rpmsave" ] || fail "rpm -e did not keep the modified configuration as .rpmsave"
echo "ok: the RPM installs, marks its configuration, makes the directories, and erases (keeping .rpmsave)"
