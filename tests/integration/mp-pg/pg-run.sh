#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL: initdb and pg_ctl (Debian's
# postgresql package) in a temporary directory, listening only on a unix
# socket in that directory, stopped and removed at the end. The command gets
# TETHER_TEST_PG, a libpq URL for that server (superuser "tether", trust).
#
# PostgreSQL refuses to run as root, so as root the server runs as the
# unprivileged user "nobody". Exit 77 (skip) only when not root and the
# binaries are missing; as root (CI, after install-deps.sh) a missing
# server is a failure.
set -euo pipefail

bindir=
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/initdb" ] && bindir=$d
done
if [ -z "$bindir" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "pg-run: SKIP: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); install the postgresql package" >&2
    exit 77
  fi
  echo "pg-run: no /usr/lib/postgresql/*/bin/initdb: run scripts/install-deps.sh" >&2
  exit 1
fi

tmp=$(mktemp -d /tmp/tether-mp-pg.XXXXXX)
as_db=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$tmp"
  as_db=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi

# The server's commands run in $tmp: "nobody" may not read the caller's cwd.
as_db_in_tmp() { (cd "$tmp" && "${as_db[@]}" "$@"); }

stop() {
  as_db_in_tmp "$bindir/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap stop EXIT

as_db_in_tmp "$bindir/initdb" -D "$tmp/data" -U tether --auth=trust -E UTF8 --no-sync >"$tmp/initdb.log" 2>&1 ||
  { cat "$tmp/initdb.log" >&2; exit 1; }
as_db_in_tmp "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 \
  -o "-k $tmp -c listen_addresses= -c fsync=off -c max_connections=200" start >/dev/null ||
  { cat "$tmp/server.log" >&2; exit 1; }

export TETHER_TEST_PG="postgresql:///postgres?host=$tmp&user=tether"
export TETHER_TEST_PG_DIR="$tmp"
export TETHER_TEST_PG_BIN="$bindir"
set +e
"$@"
rc=$?
set -e
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
  echo "pg-run: command failed ($rc); the server's log:" >&2
  tail -n 30 "$tmp/server.log" >&2 || true
fi
exit $rc
