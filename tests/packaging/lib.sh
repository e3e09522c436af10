# Shared helpers for the packaging tests (sourced, not run).
set -euo pipefail

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

note() {
        echo "-- $*"
}

# check DESCRIPTION COMMAND...: runs the command, fails the test with the
# description when it fails.
check() {
        local what=$1
        shift
        if ! "$@"; then
                fail "$what"
        fi
        echo "ok: $what"
}

# grep -q stops reading at the first match, and under pipefail the writer's
# SIGPIPE then fails the pipeline; this reads everything.
grep_q() {
        grep "$@" >/dev/null
}
