#!/usr/bin/env bash
# packaging-build: configures a release tree with the /usr prefix and
# Debian's hardening flags, builds the three programs, and runs cpack for
# DEB and RPM. The tree is kept (BUILD_DIR) so that a re-run only rebuilds
# what changed; the packages land in BUILD_DIR.
#
# usage: build-packages.sh SOURCE_DIR BUILD_DIR
. "$(dirname "$0")/lib.sh"

src=$1
build=$2

command -v cpack >/dev/null || fail "cpack not found"
command -v rpmbuild >/dev/null ||
        fail "rpmbuild not found: the RPM cannot be built (apt-get install rpm; scripts/install-deps.sh lists it)"

# Debian's hardening flags (fortify, stack protector, relro, now), as a
# Debian build would pass them; lintian checks for them in the binaries.
flags=()
if command -v dpkg-buildflags >/dev/null; then
        flags=(-DCMAKE_C_FLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
                -DCMAKE_EXE_LINKER_FLAGS="$(dpkg-buildflags --get LDFLAGS)")
fi

note "configure $build"
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTETHER_TESTS=OFF \
        -DTETHER_SANITIZE=OFF -DCMAKE_INSTALL_PREFIX=/usr "${flags[@]}" >"$build.configure.log" 2>&1 ||
        { cat "$build.configure.log"; fail "configure"; }

missing=()
targets=$(ninja -C "$build" -t targets all 2>/dev/null)
for t in tetherd tetherctl tether-mp; do
        if ! printf '%s\n' "$targets" | grep_q "^$t:"; then
                missing+=("$t")
        fi
done
[ ${#missing[@]} -eq 0 ] || fail "targets not defined in this source tree yet: ${missing[*]} (nothing to package)"

note "build (release, -j2)"
cmake --build "$build" -j 2 --target tetherd tetherctl tether-mp tether_man tether_pkgdoc ||
        fail "release build"

note "cpack DEB RPM"
rm -f "$build"/*.deb "$build"/*.rpm
(cd "$build" && cpack -G "DEB;RPM" >"$build/cpack.log" 2>&1) || { cat "$build/cpack.log"; fail "cpack"; }

for f in tether-agent_*_*.deb tether-mp_*_*.deb tether-agent-*.rpm tether-mp-*.rpm; do
        # shellcheck disable=SC2086
        ls "$build"/$f >/dev/null 2>&1 || fail "cpack did not produce $f"
done
ls -l "$build"/*.deb "$build"/*.rpm

# The RPM carries the same files and marks the configuration.
rpm_agent=$(ls "$build"/tether-agent-*.rpm)
rpm -qlp "$rpm_agent" 2>/dev/null | grep_q '^/usr/sbin/tetherd$' || fail "RPM lacks /usr/sbin/tetherd"
rpm -qp --configfiles "$rpm_agent" 2>/dev/null | grep_q '^/etc/tether/tether.conf$' ||
        fail "RPM does not mark /etc/tether/tether.conf as %config"
rpm -qp --scripts "$rpm_agent" 2>/dev/null | grep_q 'systemd-sysusers' || fail "RPM %post lacks systemd-sysusers"
if rpm -qp --scripts "$rpm_agent" 2>/dev/null | grep -E 'systemctl (enable|start)|--now tetherd' | grep -v disable; then
        fail "the RPM enables or starts tetherd"
fi
# rpmlint standard-dir-owned-by-package: the packages own their files, never
# the directories of the file-system layout.
for rpm_file in "$build"/tether-agent-*.rpm "$build"/tether-mp-*.rpm; do
        owned=$(rpm -qlp "$rpm_file" 2>/dev/null | grep -x -E '/usr|/usr/(s?bin|lib|lib64|share|share/doc|share/man|share/man/man[0-9])|/etc|/lib|/lib/systemd|/lib/systemd/system|/usr/lib/(systemd|systemd/system|sysusers\.d|tmpfiles\.d)' || true)
        [ -z "$owned" ] || fail "$(basename "$rpm_file") owns standard directories: $owned"
done
# The .deb descriptions send the administrator to a drop-in, not to the
# conffile (whose edits then need merging on upgrade).
dpkg-deb -f "$(ls "$build"/tether-agent_*_*.deb)" Description | grep_q 'tether.conf.d/' ||
        fail "the tether-agent description does not name a drop-in in /etc/tether/tether.conf.d/"
echo "ok: packages built"

# Should fail: without rpmbuild on PATH the RPM generator stops with a clear
# message (never a silent skip).
norpm=$(mktemp -d)
trap 'rm -rf "$norpm"' EXIT
for tool in cmake cpack dpkg dpkg-deb fakeroot gzip file strip objdump; do
        p=$(command -v "$tool" 2>/dev/null) && ln -s "$p" "$norpm/$tool"
done
if (cd "$build" && /usr/bin/env PATH="$norpm" cpack -G RPM >"$norpm/out" 2>&1); then
        fail "cpack -G RPM succeeded without rpmbuild on PATH"
fi
grep_q "the RPM generator needs rpmbuild, which is not installed" "$norpm/out" ||
        fail "cpack -G RPM without rpmbuild failed without the message: $(cat "$norpm/out")"
echo "ok: without rpmbuild, cpack -G RPM fails loudly"
