#!/usr/bin/env bash
# packaging-manpages: the man pages say the version the binaries print, and
# tether-mp(8) documents what tether-mp does: every `serve` option, "off"
# for --https-listen, `responses --limit` and the keepalive default.
#
# usage: manpages.sh SOURCE_DIR TETHERD_BIN TETHER_MP_BIN
. "$(dirname "$0")/lib.sh"

src=$1
tetherd_bin=$2
mp_bin=$3
[ -x "$tetherd_bin" ] && [ -x "$mp_bin" ] || fail "binaries not built: '$tetherd_bin' '$mp_bin'"

version=$("$tetherd_bin" --version | awk '{ print $2 }')
[ -n "$version" ] || fail "tetherd --version printed no version"
[ "$("$mp_bin" --version | awk '{ print $2 }')" = "$version" ] || fail "tetherd and tether-mp disagree on the version"
for page in agent/tetherd.8 agent/tetherctl.8 agent/tether.conf.5 mp/tether-mp.8; do
        th=$(grep -m1 '^\.TH ' "$src/$page") || fail "$page has no .TH line"
        printf '%s' "$th" | grep_q -F "\"tether $version\"" || fail "$page: '$th' does not say tether $version"
done
echo "ok: the man pages say tether $version, as the binaries do"

# tether-mp(8) rendered as text, hyphens plain.
text=$(MANWIDTH=200 man -l "$src/mp/tether-mp.8" 2>/dev/null | sed 's/‐/-/g') || fail "man -l tether-mp.8"
for opt in $("$mp_bin" serve --help | grep -o -E '^  --[a-z-]+' | sort -u); do
        printf '%s' "$text" | grep_q -e "$opt" || fail "tether-mp(8) does not document serve $opt"
done
printf '%s' "$text" | grep_q -E -e '--https-listen.*' && printf '%s' "$text" | grep -A3 -e '--https-listen ADDR' |
        grep_q -w off || fail "tether-mp(8) does not say that --https-listen off disables HTTPS"
printf '%s' "$text" | grep_q -e 'responses \[--limit N\]' || fail "tether-mp(8) lacks responses --limit"
"$mp_bin" responses --help 2>&1 | grep_q -e '--limit' || fail "tether-mp responses has no --limit (the page would lie)"
printf '%s' "$text" | grep -A2 -e '--keepalive' | grep_q 'default 180' || fail "tether-mp(8) lacks the keepalive default"
grep_q -E '^#?KeepAliveSeconds=180$' "$src/conf/tether-mp.conf" || fail "conf/tether-mp.conf disagrees on the keepalive default"
echo "ok: tether-mp(8) documents every serve option, --https-listen off, responses --limit, the keepalive default"
