#!/bin/sh
# Entrypoint of the Tether agent image. At every start:
#   1. make the container's machine-id once, in the state volume (the
#      identity binds to it; see agent.Containerfile);
#   2. write the MP settings from the environment into a drop-in:
#        TETHER_MP_HOST                 (required) the MP's host name
#        TETHER_SITE_KEY_FINGERPRINT    the site key's SHA-256 (tether-mp site-key)
#        TETHER_SITE_KEY_FILE           or a path to the site public key (PEM)
#        TETHER_CA_FILE                 CA bundle or the MP's self-signed tls.crt
#        TETHER_SERVER_FINGERPRINT      or the MP's TLS key fingerprint
#        TETHER_TRANSPORT               auto (default), tcp or https
#        TETHER_ENROLMENT_TOKEN         for an MP that approves by token
#        TETHER_START_DELAY_MAX         random start delay bound, seconds
#      With TETHER_MP_STATE (a read-only mount of the MP's state directory,
#      for test fleets), site.pub and tls.crt are taken from there.
#   3. exec tetherd. The identity is made by tetherd itself, never here.
set -eu

state=/var/lib/tether
conf=/etc/tether/tether.conf.d/50-container.conf

if [ ! -s "$state/machine-id" ]; then
        # 32 lowercase hex digits, as machine-id(5) has them.
        tr -d '-' </proc/sys/kernel/random/uuid >"$state/machine-id.tmp"
        mv "$state/machine-id.tmp" "$state/machine-id"
fi
# The channel process (user tether) owns the rest of the volume.
if [ "$(id -u)" = 0 ]; then
        chown tether:tether "$state"
        chmod 0750 "$state"
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
        cp "$TETHER_MP_STATE/site.pub" /etc/tether/site.pub
        cp "$TETHER_MP_STATE/tls.crt" /etc/tether/mp-tls.crt
        : "${TETHER_SITE_KEY_FILE:=/etc/tether/site.pub}"
        : "${TETHER_CA_FILE:=/etc/tether/mp-tls.crt}"
fi

if [ -z "${TETHER_MP_HOST:-}" ]; then
        echo "tether-agent: set TETHER_MP_HOST (and the site key: TETHER_SITE_KEY_FINGERPRINT or TETHER_SITE_KEY_FILE)" >&2
        exit 1
fi

{
        echo "# Written by the container entrypoint from the environment at each start."
        echo "[mp]"
        echo "host = $TETHER_MP_HOST"
        echo "transport = ${TETHER_TRANSPORT:-auto}"
        [ -z "${TETHER_CA_FILE:-}" ] || echo "ca_file = $TETHER_CA_FILE"
        [ -z "${TETHER_SERVER_FINGERPRINT:-}" ] || echo "server_fingerprint = $TETHER_SERVER_FINGERPRINT"
        echo "[trust]"
        [ -z "${TETHER_SITE_KEY_FILE:-}" ] || echo "site_key = $TETHER_SITE_KEY_FILE"
        [ -z "${TETHER_SITE_KEY_FINGERPRINT:-}" ] || echo "site_key_fingerprint = $TETHER_SITE_KEY_FINGERPRINT"
        echo "[agent]"
        echo "machine_id_file = $state/machine-id"
        [ -z "${TETHER_ENROLMENT_TOKEN:-}" ] || echo "enrolment_token = $TETHER_ENROLMENT_TOKEN"
        [ -z "${TETHER_START_DELAY_MAX:-}" ] || echo "start_delay_max_seconds = $TETHER_START_DELAY_MAX"
} >"$conf"

/usr/sbin/tetherd --check-config >&2 || exit 1
exec "$@"
