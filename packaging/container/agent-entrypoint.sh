#!/bin/sh
# Entrypoint of the Tether agent image. At every start:
#   1. make the container's machine-id once, in the state volume (the
#      identity binds to it; see Containerfile);
#   2. write the MP settings from the environment into a drop-in:
#        TETHER_MP_HOST                 (required) the MP's host name
#        TETHER_MP_TCP_PORT             the MP's TLS frame port (10123)
#        TETHER_MP_HTTPS_PORT           the MP's HTTPS port (10124)
#        TETHER_SITE_KEY_FINGERPRINT    the site key's SHA-256 (tether-mp site-key)
#        TETHER_SITE_KEY_FILE           or a path to the site public key (PEM)
#        TETHER_CA_FILE                 CA bundle or the MP's self-signed tls.crt
#        TETHER_SERVER_FINGERPRINT      or the MP's TLS key fingerprint
#        TETHER_TRANSPORT               auto (default), tcp or https
#        TETHER_ENROLMENT_TOKEN         for an MP that approves by token
#        TETHER_START_DELAY_MAX         random start delay bound, seconds (0)
#      With TETHER_MP_STATE (a read-only mount of the MP's state directory,
#      for test fleets), site.pub, tls.crt and the ports are taken from there.
#   3. exec the command (tetherd --foreground). The identity is made by
#      tetherd itself, never here.
#
# As root (the default), the drop-in is /etc/tether/tether.conf.d/
# 50-container.conf, and tetherd drops its channel process to "tether".
# With --user tether (rootless), /etc/tether is not writable: the
# configuration is copied to /run/tether/container/ (tether's own runtime
# directory) with the drop-in added there, and tetherd is given --config.
# Root mode never uses that directory: a file the channel process's user
# could write must not configure the root half.
set -eu

state=/var/lib/tether

if [ "$(id -u)" = 0 ]; then
        etc=/etc/tether
        # The channel process (user tether) owns the rest of the volume.
        chown tether:tether "$state"
        chmod 0750 "$state"
else
        etc=/run/tether/container
        rm -rf "$etc"
        mkdir -p "$etc/tether.conf.d"
        cp /etc/tether/tether.conf "$etc/tether.conf"
        for f in /etc/tether/tether.conf.d/*.conf; do
                [ ! -e "$f" ] || cp "$f" "$etc/tether.conf.d/"
        done
fi
main=$etc/tether.conf
conf=$etc/tether.conf.d/50-container.conf

if [ ! -s "$state/machine-id" ]; then
        # 32 lowercase hex digits, as machine-id(5) has them.
        tr -d '-' </proc/sys/kernel/random/uuid >"$state/machine-id.tmp"
        mv "$state/machine-id.tmp" "$state/machine-id"
fi

if [ -n "${TETHER_MP_STATE:-}" ]; then
        # Wait for the MP to have made its keys (first start of a fleet).
        i=0
        while [ ! -s "$TETHER_MP_STATE/site.pub" ] || [ ! -s "$TETHER_MP_STATE/tls.crt" ]; do
                i=$((i + 1))
                if [ "$i" -gt 120 ]; then
                        echo "tether-agent: no site.pub and tls.crt in $TETHER_MP_STATE after 120 s" >&2
                        exit 1
                fi
                sleep 1
        done
        # The MP writes its bound ports there too ("tcp=N", "https=N").
        if [ -s "$TETHER_MP_STATE/ports" ]; then
                : "${TETHER_MP_TCP_PORT:=$(sed -n 's/^tcp=//p' "$TETHER_MP_STATE/ports")}"
                : "${TETHER_MP_HTTPS_PORT:=$(sed -n 's/^https=//p' "$TETHER_MP_STATE/ports")}"
        fi
        cp "$TETHER_MP_STATE/site.pub" "$etc/site.pub"
        cp "$TETHER_MP_STATE/tls.crt" "$etc/mp-tls.crt"
        : "${TETHER_SITE_KEY_FILE:=$etc/site.pub}"
        : "${TETHER_CA_FILE:=$etc/mp-tls.crt}"
fi

if [ -z "${TETHER_MP_HOST:-}" ]; then
        echo "tether-agent: set TETHER_MP_HOST (and the site key: TETHER_SITE_KEY_FINGERPRINT or TETHER_SITE_KEY_FILE)" >&2
        exit 1
fi

{
        echo "# Written by the container entrypoint from the environment at each start."
        echo "[mp]"
        echo "host = $TETHER_MP_HOST"
        [ -z "${TETHER_MP_TCP_PORT:-}" ] || echo "tcp_port = $TETHER_MP_TCP_PORT"
        [ -z "${TETHER_MP_HTTPS_PORT:-}" ] || echo "https_port = $TETHER_MP_HTTPS_PORT"
        echo "transport = ${TETHER_TRANSPORT:-auto}"
        [ -z "${TETHER_CA_FILE:-}" ] || echo "ca_file = $TETHER_CA_FILE"
        [ -z "${TETHER_SERVER_FINGERPRINT:-}" ] || echo "server_fingerprint = $TETHER_SERVER_FINGERPRINT"
        echo "[trust]"
        [ -z "${TETHER_SITE_KEY_FILE:-}" ] || echo "site_key = $TETHER_SITE_KEY_FILE"
        [ -z "${TETHER_SITE_KEY_FINGERPRINT:-}" ] || echo "site_key_fingerprint = $TETHER_SITE_KEY_FINGERPRINT"
        echo "[agent]"
        echo "machine_id_file = $state/machine-id"
        [ -z "${TETHER_ENROLMENT_TOKEN:-}" ] || echo "enrolment_token = $TETHER_ENROLMENT_TOKEN"
        # The host's boot is not this container's: spread fleet starts with
        # TETHER_START_DELAY_MAX instead of the boot-time delay.
        echo "start_delay_max_seconds = ${TETHER_START_DELAY_MAX:-0}"
        echo "boot_start_delay_max_seconds = 0"
} >"$conf"

/usr/sbin/tetherd --config "$main" --check-config >&2 || exit 1
case "${1:-}" in
tetherd | */tetherd)
        cmd=$1
        shift
        exec "$cmd" --config "$main" "$@"
        ;;
esac
exec "$@"
