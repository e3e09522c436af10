/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The agent's link to the MP (channel process only): the TCP channel (TLS to
 * port 10123) and the HTTPS fallback (POST /tether/v1/channel with libcurl
 * multi), behind one interface, on the channel process's sd-event loop.
 *
 * The link layer owns: connecting, TLS, reconnection with full-jitter
 * backoff (base 1 s, cap 300 s, reset after 30 s healthy), the random start
 * delay, switching between TCP and HTTPS in auto mode, frame deadlines,
 * write deadlines, KEEPALIVE timing and the "two missed answers" rule, and
 * policy fetches over HTTPS.
 *
 * The session layer (agent/session.c) owns what the frames mean: it makes
 * the signed SIGNIN on request, verifies and handles every received frame,
 * and tells the link what SIGNIN_CONFIRM and GOODBYE said.
 *
 * Behaviour notes (agent/channel*.c):
 * - The channel logs each link failure once, at warning level, naming the
 *   peer ("Failed to connect to mp:10123: Connection refused"); on_state's
 *   detail carries the same text, so the caller need not log it again.
 * - Callbacks may call send/confirmed/reconnect/stop/fetch_policy, but must
 *   not free the channel.
 * - Frames queued with tether_channel_send() but not yet written when the
 *   link drops are dropped with it: the spool re-sends responses.
 * - Over HTTPS, CONNECTED comes with the first poll's answer (before its
 *   SIGNIN_CONFIRM reaches on_frame); every later poll also starts with
 *   SIGNIN and brings a SIGNIN_CONFIRM.
 * - Auto mode moving back from HTTPS to TCP reports DISCONNECTED ("https",
 *   "moving the channel back to TCP") and then CONNECTED ("tcp").
 * - tether_channel_stop() and tether_channel_free() call no callback; free
 *   cancels policy fetches in flight without calling their callback.
 * - Host names are resolved with getaddrinfo(), which blocks the loop while
 *   it runs: immediate for literals and localhost.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "transport/frame.h"

struct tether_key;
struct tether_channel;

enum tether_channel_mode {
        TETHER_CHANNEL_AUTO = 0, /* TCP, falling back to HTTPS, retrying TCP every tcp_retry_usec */
        TETHER_CHANNEL_TCP,
        TETHER_CHANNEL_HTTPS,
};

enum tether_channel_state {
        TETHER_CHANNEL_IDLE = 0, /* waiting out a backoff or start delay */
        TETHER_CHANNEL_CONNECTING,
        TETHER_CHANNEL_CONNECTED,    /* transport up and SIGNIN sent */
        TETHER_CHANNEL_DISCONNECTED, /* just lost; a reconnect is scheduled */
};

/* Further ports where the MP serves the same HTTPS endpoints, tried in
 * order after https_port (e.g. 443, the one port a stock squid lets CONNECT
 * through to). */
#define TETHER_CHANNEL_MAX_ALT_PORTS 4
struct tether_port_list {
        uint16_t port[TETHER_CHANNEL_MAX_ALT_PORTS];
        uint16_t n; /* no padding: compared with memcmp() on reload */
};

struct tether_channel_config {
        const char *host;       /* MP host name or address, or a list (agent/mp-addresses.h) */
        const char *order_seed; /* stable per device (machine ID): the order of the list */
        uint16_t tcp_port;      /* 10123 */
        uint16_t https_port;    /* tether-mp serves HTTPS on 10124 */
        struct tether_port_list https_alt_ports; /* tried after https_port when it fails */
        uint64_t tcp_retry_usec; /* auto mode on HTTPS: try TCP this often (+/- 25 %); 0: 60 s */
        enum tether_channel_mode mode;
        const char *ca_file;            /* PEM bundle to verify the MP; NULL: system store */
        const char *pinned_fingerprint; /* SHA-256 hex of the MP's TLS key, or NULL */
        const char *proxy;              /* "http://proxy:3128", or NULL (libcurl also honours https_proxy) */
        const char *cert_pem;           /* device certificate, PEM text */
        const struct tether_key *device_key; /* borrowed for the channel's life */
        uint32_t max_frame;                  /* max body bytes */
        uint32_t keepalive_seconds;          /* until SIGNIN_CONFIRM says otherwise; 180 */
        uint32_t start_delay_max_seconds;    /* spread of the first connection; 0: none */
        uint32_t https_hold_seconds;         /* the "hold" query parameter; 50 */
};

struct tether_channel_callbacks {
        /* Makes a fresh signed SIGNIN frame (owned by the caller of the
         * callback afterwards). Called at every connection and every HTTPS
         * poll. */
        int (*make_signin)(void *userdata, uint8_t **ret_frame, size_t *ret_len);
        /* Every received frame, unverified; ownership passes to the callee.
         * KEEPALIVE frames are handled by the link and also passed on. */
        void (*on_frame)(void *userdata, struct tether_frame *frame);
        /* State changes, with "tcp" or "https" and the peer or error text. */
        void (*on_state)(void *userdata, enum tether_channel_state state, const char *transport,
                         const char *detail);
};

int tether_channel_new(sd_event *event, const struct tether_channel_config *config,
                       const struct tether_channel_callbacks *callbacks, void *userdata,
                       struct tether_channel **ret);
struct tether_channel *tether_channel_free(struct tether_channel *ch); /* accepts NULL */

/* Starts connecting, after the random start delay if configured; that delay
 * applies to the first start of the channel only. */
int tether_channel_start(struct tether_channel *ch);

/* Queues one encoded frame (copied). Over TCP it is written with a
 * deadline; over HTTPS it rides in the next poll's body. -ENOTCONN when no
 * transport is up: the caller keeps it (the spool re-sends on reconnect). */
int tether_channel_send(struct tether_channel *ch, const uint8_t *frame, size_t len);

/* SIGNIN_CONFIRM said Approved with this keepalive: the connection counts
 * as healthy from now (backoff resets after 30 s of it). */
void tether_channel_confirmed(struct tether_channel *ch, uint32_t keepalive_seconds);

/* Closes the transport and reconnects no sooner than min_delay_seconds
 * (with jitter on top): GOODBYE's RetryAfterSeconds, Rejected's 15 min, a
 * protocol error. reason is logged. */
void tether_channel_reconnect(struct tether_channel *ch, uint32_t min_delay_seconds, const char *reason);

/* GOODBYE(overloaded): closes the transport and tries the next MP address
 * no sooner than min_delay_seconds (PROTOCOL-v1 7.4); when that completes a
 * round of failed addresses, the backoff applies on top, as after any round. */
void tether_channel_move(struct tether_channel *ch, uint32_t min_delay_seconds, const char *reason);

/* The address tried or connected now ("host:port"), for status. */
void tether_channel_peer(const struct tether_channel *ch, char *buf, size_t size);

/* Sends GOODBYE(shutdown) best effort and closes. */
void tether_channel_stop(struct tether_channel *ch);

enum tether_channel_state tether_channel_get_state(const struct tether_channel *ch);
const char *tether_channel_transport_name(const struct tether_channel *ch); /* "tcp", "https", "" */
/* The HTTPS port in use or being tried by the channel. Policy fetches go
 * to the one that last answered a poll (https_port until one has). */
uint16_t tether_channel_https_port(const struct tether_channel *ch);

/* Fetches a policy over HTTPS with the device certificate:
 * GET /tether/v1/policy/machine or /tether/v1/policy/user/<user>.
 * etag may be NULL. The callback gets the HTTP status (200, 304, 404, ...)
 * or a negative errno in error, the body, the raw Tether-Signature header
 * value (base64, or NULL) and the new ETag (or NULL). All borrowed for the
 * call. */
typedef void (*tether_policy_fetched_fn)(void *userdata, int error, long http_status, const uint8_t *body,
                                         size_t len, const char *signature_b64, const char *etag);
int tether_channel_fetch_policy(struct tether_channel *ch, const char *user, const char *etag,
                                tether_policy_fetched_fn done, void *userdata);
