#!/usr/bin/env bash
# packaging-install: installs tether-agent_*.deb into an empty root with
# dpkg --root and runs its real maintainer scripts (chrootless, with
# DPKG_ROOT set, which they honour), then checks the files, the user
# "tether", the directories, the conffiles, that no identity was made and
# that the service was not enabled; then a reinstall over a modified
# conffile, a remove and a purge.
#
# Why not debootstrap: see docs/OPERATIONS.md ("How the packages are
# tested"). In short, a minbase root with the agent's libraries and systemd
# takes minutes to fetch on every run, and what it would add (the
# dependencies resolving) is checked here against this Debian 12 system's
# own package database.
#
# usage: check-deb.sh BUILD_DIR [ROOT_DIR]
#   ROOT_DIR: where to make the root (kept for the golden-image test);
#             a temporary directory, removed at the end, by default.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
        # The maintainer scripts chown to the new user; dpkg --root as
        # another user cannot.
        echo "SKIP: needs root (dpkg --root, chown in the root)"
        exit 77
fi

build=$1
deb=$(ls "$build"/tether-agent_*_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no tether-agent .deb in $build (run packaging-build first)"

if [ -n "${2:-}" ]; then
        root=$2
        rm -rf "$root"
        mkdir -p "$root"
        keep=1
else
        root=$(mktemp -d)
        keep=0
fi
cleanup() { [ "$keep" = 1 ] || rm -rf "$root"; }
trap cleanup EXIT

# An empty root whose dpkg database holds this system's records of the
# packages that tether-agent depends on, so that Depends: is checked for
# real (nothing is forced) against what Debian 12 installed here.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" "$root/etc"
deps=$(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed -e 's/([^)]*)//g' -e 's/:any//' -e 's/[[:space:]]//g' |
        grep -v '^$' | sort -u | tr '\n' ' ')
note "Depends: $(dpkg-deb -f "$deb" Depends)"
awk -v names=" $deps " 'BEGIN { RS = ""; ORS = "\n\n" }
        { if (match($0, /(^|\n)Package: [^\n]+/)) {
                  p = substr($0, RSTART, RLENGTH); sub(/^\n?Package: /, "", p)
                  if (index(names, " " p " ") && $0 ~ /\nStatus: install ok installed/) print } }' \
        /var/lib/dpkg/status >"$root/var/lib/dpkg/status"
# Their (empty) file lists: none of their files are in this root.
for p in $(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${binary:Package}\n'); do
        : >"$root/var/lib/dpkg/info/$p.list"
done
: >"$root/var/lib/dpkg/available"

dpkg_root() {
        dpkg --root="$root" --force-script-chrootless --force-not-root --log=/dev/null "$@"
}

note "dpkg --root $root -i $(basename "$deb")"
dpkg_root -i "$deb" || fail "dpkg -i"

# Files.
for f in usr/sbin/tetherd usr/bin/tetherctl lib/systemd/system/tetherd.service etc/tether/tether.conf \
        usr/lib/sysusers.d/tether.conf usr/lib/tmpfiles.d/tether.conf usr/share/man/man8/tetherd.8.gz \
        usr/share/man/man8/tetherctl.8.gz usr/share/man/man5/tether.conf.5.gz \
        usr/share/doc/tether-agent/copyright; do
        [ -e "$root/$f" ] || fail "missing /$f"
done
for d in etc/tether/tether.conf.d etc/tether/cycles.d/machine-policy etc/tether/cycles.d/user-policy \
        etc/tether/cycles.d/app-evaluation; do
        [ -d "$root/$d" ] || fail "missing directory /$d"
done
[ -x "$root/usr/sbin/tetherd" ] || fail "tetherd not executable"
echo "ok: files installed"

# The user, made by postinst through systemd-sysusers.
grep -q '^tether:x:[0-9]*:[0-9]*:.*:/var/lib/tether:/usr/sbin/nologin$' "$root/etc/passwd" ||
        fail "no system user tether in $root/etc/passwd: $(cat "$root/etc/passwd" 2>/dev/null)"
uid=$(awk -F: '$1 == "tether" { print $3 }' "$root/etc/passwd")
[ "$uid" -lt 1000 ] || fail "tether is not a system user (uid $uid)"
grep -q '^tether:x:' "$root/etc/group" || fail "no group tether"
echo "ok: user tether (uid $uid)"

# The directories, made by postinst through systemd-tmpfiles.
[ "$(stat -c '%a %u' "$root/var/lib/tether")" = "750 $uid" ] ||
        fail "/var/lib/tether: $(stat -c '%a %u:%g' "$root/var/lib/tether")"
[ "$(stat -c '%a %u' "$root/run/tether")" = "750 $uid" ] || fail "/run/tether: $(stat -c '%a %u:%g' "$root/run/tether")"
[ "$(stat -c '%a %u' "$root/var/log/tether")" = "750 $uid" ] ||
        fail "/var/log/tether: $(stat -c '%a %u:%g' "$root/var/log/tether")"
[ "$(stat -c '%a %u' "$root/var/lib/tether-root")" = "700 0" ] ||
        fail "/var/lib/tether-root: $(stat -c '%a %u:%g' "$root/var/lib/tether-root")"
echo "ok: /var/lib/tether, /run/tether and /var/log/tether 0750 tether; /var/lib/tether-root 0700 root"

# No identity at install time, and the service is not enabled.
[ -z "$(ls -A "$root/var/lib/tether")" ] || fail "install made state: $(ls -A "$root/var/lib/tether")"
if find "$root/etc/systemd" -name 'tetherd.service' 2>/dev/null | grep_q .; then
        fail "the package enabled tetherd.service"
fi
echo "ok: no identity, service not enabled"

# Conffiles: in the package's control archive and in dpkg's database.
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep_q -x '/etc/tether/tether.conf' ||
        fail "conffiles in the .deb: $(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>&1)"
dpkg_root -s tether-agent | grep_q '^ /etc/tether/tether.conf [0-9a-f]\{32\}$' ||
        fail "dpkg does not track /etc/tether/tether.conf as a conffile: $(dpkg_root -s tether-agent)"
echo "ok: /etc/tether/tether.conf is a conffile"

# A reinstall (as an upgrade would) keeps a locally modified conffile.
echo "# local change" >>"$root/etc/tether/tether.conf"
dpkg_root --force-confold -i "$deb" >/dev/null || fail "reinstall"
grep -q '^# local change$' "$root/etc/tether/tether.conf" || fail "the reinstall replaced the modified conffile"
echo "ok: a modified conffile survives a reinstall"

# Remove keeps configuration and state; purge removes both.
touch "$root/var/lib/tether/client-id"
dpkg_root -r tether-agent >/dev/null || fail "dpkg -r"
[ ! -e "$root/usr/sbin/tetherd" ] || fail "remove left tetherd"
[ -e "$root/etc/tether/tether.conf" ] || fail "remove deleted the conffile"
[ -e "$root/var/lib/tether/client-id" ] || fail "remove deleted the state"
dpkg_root -P tether-agent >/dev/null || fail "dpkg -P"
[ ! -e "$root/etc/tether/tether.conf" ] || fail "purge left the conffile"
[ ! -e "$root/var/lib/tether" ] || fail "purge left /var/lib/tether"
[ ! -e "$root/var/lib/tether-root" ] || fail "purge left /var/lib/tether-root"
[ ! -e "$root/var/log/tether" ] || fail "purge left /var/log/tether"
echo "ok: remove keeps configuration and identity, purge deletes them"

# Leave an installed root behind for the golden-image test when asked.
if [ "$keep" = 1 ]; then
        dpkg_root -i "$deb" >/dev/null || fail "final install"
        echo "root with tether-agent installed: $root"
fi
