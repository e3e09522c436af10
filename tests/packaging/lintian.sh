#!/usr/bin/env bash
# packaging-lintian: lintian on both .deb files. Every tag it may still
# report is listed in lintian-allowed.txt with its justification, which
# docs/OPERATIONS.md repeats; any other tag fails the test.
#
# usage: lintian.sh BUILD_DIR
. "$(dirname "$0")/lib.sh"

build=$1
command -v lintian >/dev/null || fail "lintian is not installed (scripts/install-deps.sh lists it)"
allowed="$(dirname "$0")/lintian-allowed.txt"
debs=$(ls "$build"/tether-agent_*_*.deb "$build"/tether-mp_*_*.deb 2>/dev/null) || true
[ -n "$debs" ] || fail "no .deb in $build (run packaging-build first)"

# shellcheck disable=SC2086
out=$(lintian --pedantic --tag-display-limit 0 $debs 2>&1 | grep -E '^[EWIPXO]: ' || true)
printf '%s\n' "$out"
bad=0
while IFS= read -r line; do
        [ -n "$line" ] || continue
        tag=$(printf '%s' "$line" | awk '{ print $3 }')
        pkg=$(printf '%s' "$line" | awk '{ print $2 }' | tr -d ':')
        if ! grep -q -E "^$pkg $tag( |$)" "$allowed"; then
                echo "not justified: $line" >&2
                bad=1
        fi
done <<<"$out"
[ "$bad" = 0 ] || fail "lintian tags without a justification in $allowed and docs/OPERATIONS.md"
echo "ok: lintian: every remaining tag is justified"
