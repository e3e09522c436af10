/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The channel core: one state machine over two transports.
 *
 *   start -> (random start delay) -> attempt
 *   attempt: TCP (modes auto, tcp) or HTTPS (mode https)
 *   TCP could not be made (refused, unreachable, time-out), mode auto
 *       -> HTTPS at once, in the same attempt
 *   HTTPS: the port that last answered first; while no poll on it has been
 *       answered, a failure moves to the next port of https_ports[] (e.g.
 *       443 after 10124, for a proxy that lets CONNECT through to 443 only)
 *       until each was tried once in this attempt
 *   any other failure -> DISCONNECTED, backoff, attempt again
 *   on HTTPS in mode auto: a TCP try every tcp_probe_usec (60 s by default,
 *       +/- 25 %); when one completes its handshake the channel moves to it
 *
 * Every failure is logged here once, with the peer, at warning level; the
 * same text goes to on_state() as detail.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "agent/channel-internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "transport/message.h"
#include "transport/sign.h"
#include "transport/tls.h"

#define USEC_PER_SEC 1000000ULL
#define DEFAULT_KEEPALIVE_SECONDS 180u
#define DEFAULT_HOLD_SECONDS 50u
#define DEFAULT_TCP_RETRY_USEC (60 * USEC_PER_SEC)
#define MAX_HOLD_SECONDS 300u

/* Every kind of link, for closing them all. */
static const struct link_ops *const links[] = {&tcp_link_ops, &https_link_ops};

static const char *link_name(const struct link_ops *ops) {
        return ops ? ops->name : "";
}

void channel_peer_name(const struct tether_channel *ch, uint16_t port, char *buf, size_t size) {
        if (strchr(ch->host, ':'))
                snprintf(buf, size, "[%s]:%u", ch->host, (unsigned)port);
        else
                snprintf(buf, size, "%s:%u", ch->host, (unsigned)port);
}

uint64_t channel_random_u64(void) {
        uint64_t v = 0;

        /* Jitter is not a secret: if the kernel's pool is not ready yet at
         * early boot, a mix of the clock and the PID still spreads a fleet. */
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                v = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^
                    ((uint64_t)getpid() * 0x9E3779B97F4A7C15ULL);
        }
        return v;
}

uint64_t channel_now(const struct tether_channel *ch) {
        uint64_t t = 0;

        if (sd_event_now(ch->event, CLOCK_MONOTONIC, &t) < 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                t = (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000ULL;
        }
        return t;
}

/* Calls on_state. Returns false when the callback tore the channel's
 * current link down or stopped it: the caller then stops what it was doing. */
static bool notify(struct tether_channel *ch, enum tether_channel_state state, const struct link_ops *link,
                   const char *detail) {
        uint64_t generation = ch->generation;

        if (ch->cb.on_state)
                ch->cb.on_state(ch->userdata, state, link_name(link), detail ? detail : "");
        return generation == ch->generation;
}

bool channel_deliver_frame(struct tether_channel *ch, struct tether_frame *frame) {
        uint64_t generation = ch->generation;

        ch->cb.on_frame(ch->userdata, frame);
        return generation == ch->generation;
}

/* Closes every link of the channel (not policy fetches). */
static void teardown_links(struct tether_channel *ch) {
        for (size_t i = 0; i < ELEMENTSOF(links); i++)
                links[i]->stop(ch, false);
        if (ch->probe_timer)
                (void)sd_event_source_set_enabled(ch->probe_timer, SD_EVENT_OFF);
        ch->generation++;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);
static int on_probe(sd_event_source *s, uint64_t usec, void *userdata);

int channel_arm_timer(struct tether_channel *ch, sd_event_source **s, uint64_t delay_usec,
                      sd_event_time_handler_t handler, void *userdata) {
        uint64_t when = channel_now(ch) + delay_usec;
        int r;

        if (*s) {
                r = sd_event_source_set_time(*s, when);
                if (r < 0)
                        return r;
                return sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
        }
        return sd_event_add_time(ch->event, s, CLOCK_MONOTONIC, when, 1000, handler, userdata);
}

/* Schedules the next attempt after a failure or on request, and reports
 * DISCONNECTED. */
static void schedule_reconnect(struct tether_channel *ch, const struct link_ops *was, uint64_t floor_usec,
                               const char *detail) {
        uint64_t wait;
        int r;

        tether_backoff_disconnected(&ch->backoff, channel_now(ch));
        wait = tether_backoff_next(&ch->backoff, floor_usec, channel_random_u64());
        ch->link = NULL;
        ch->state = TETHER_CHANNEL_DISCONNECTED;

        r = channel_arm_timer(ch, &ch->retry_timer, wait, on_retry, ch);
        if (r < 0)
                /* Without a timer the channel would stay down for good: say
                 * so loudly. It cannot happen short of memory exhaustion. */
                log_error_errno(r, "Failed to schedule the reconnection to the MP, the channel "
                                   "stays down: %m");
        else
                log_info("Next connection attempt to the MP in %llu.%01llu s",
                         (unsigned long long)(wait / USEC_PER_SEC),
                         (unsigned long long)(wait % USEC_PER_SEC / 100000ULL));
        (void)notify(ch, TETHER_CHANNEL_DISCONNECTED, was, detail);
}

/* Sets host and tcp_port to the address the rotation points at. */
static void select_address(struct tether_channel *ch) {
        const struct mp_address *a = mp_addresses_current(&ch->addrs);

        ch->host = a->host;
        ch->tcp_port = a->tcp_port ? a->tcp_port : ch->tcp_port_config;
}

/*
 * The current address failed (or sent the agent away): the rotation moves
 * on. Within a round the next address is tried after delay_usec, without
 * the backoff (PROTOCOL-v1 7.4); a failure that completes the round gets
 * the backoff, with floor_usec as its floor.
 */
static void next_address(struct tether_channel *ch, const struct link_ops *was, uint64_t delay_usec,
                         uint64_t floor_usec, const char *detail) {
        char peer[300];
        int r;

        tether_backoff_disconnected(&ch->backoff, channel_now(ch));
        if (mp_addresses_failed(&ch->addrs)) {
                select_address(ch);
                schedule_reconnect(ch, was, floor_usec, detail);
                return;
        }
        select_address(ch);
        ch->link = NULL;
        ch->state = TETHER_CHANNEL_DISCONNECTED;
        channel_peer_name(ch, ch->tcp_port, peer, sizeof(peer));
        r = channel_arm_timer(ch, &ch->retry_timer, delay_usec, on_retry, ch);
        if (r < 0)
                log_error_errno(r, "Failed to schedule the connection to the next MP address, the "
                                   "channel stays down: %m");
        else
                log_info("Trying the next MP address, %s, in %llu.%01llu s", peer,
                         (unsigned long long)(delay_usec / USEC_PER_SEC),
                         (unsigned long long)(delay_usec % USEC_PER_SEC / 100000ULL));
        (void)notify(ch, TETHER_CHANNEL_DISCONNECTED, was, detail);
}

/* The one place a link failure lands. */
static void handle_failure(struct tether_channel *ch, int error, bool connect_failure,
                           const char *link_detail) {
        const struct link_ops *was = ch->link;
        bool was_up = ch->state == TETHER_CHANNEL_CONNECTED;
        char detail[1024];

        /* The text may live in the link that is about to go. */
        snprintf(detail, sizeof(detail), "%s", link_detail);
        teardown_links(ch);
        if (was && was->fail_over(ch, connect_failure, detail))
                return;
        log_warning("%s", detail);
        /* A node that dies drops all its devices at once: those moving on
         * from a live link spread over a second, as the backoff's first
         * step would; a refused connection moves on at once. */
        next_address(ch, was, was_up ? channel_random_u64() % (USEC_PER_SEC + 1) : 0, 0, detail);
}

void channel_start_link(struct tether_channel *ch, const struct link_ops *ops) {
        char peer[300], err[1024] = "";
        bool connect_failure = false;
        int r;

        ch->link = ops;
        ch->state = TETHER_CHANNEL_CONNECTING;
        channel_peer_name(ch, ops->begin(ch), peer, sizeof(peer));
        if (!notify(ch, TETHER_CHANNEL_CONNECTING, ops, peer))
                return;
        r = ops->start(ch, peer, err, sizeof(err), &connect_failure);
        if (r < 0)
                handle_failure(ch, r, connect_failure, err);
}

/* The channel chooses the link here, and only here. */
static void attempt(struct tether_channel *ch) {
        ch->https_tried = false;
        select_address(ch);
        ch->https_ports_left = ch->n_https_ports;
        ch->https_index = ch->https_good;
        channel_start_link(ch, ch->mode == TETHER_CHANNEL_HTTPS ? &https_link_ops : &tcp_link_ops);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tether_channel *ch = userdata;

        if (ch->started)
                attempt(ch);
        return 0;
}

/* Auto mode on HTTPS: the next TCP try, spread over +/- 25 % so that a
 * fleet that fell back together does not come back together. */
static void arm_probe(struct tether_channel *ch) {
        uint64_t base = ch->timing.tcp_probe_usec;
        uint64_t delay = base - base / 4 + channel_random_u64() % (base / 2 + 1);
        int r;

        r = channel_arm_timer(ch, &ch->probe_timer, delay, on_probe, ch);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule a TCP retry, staying on HTTPS: %m");
}

static int on_probe(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tether_channel *ch = userdata;
        char err[1024] = "";
        int r;

        /* Auto mode only: TCP again while the fallback carries the channel. */
        if (ch->mode != TETHER_CHANNEL_AUTO || ch->link != &https_link_ops ||
            ch->state != TETHER_CHANNEL_CONNECTED || ch->probe)
                return 0;
        r = tcp_link_new(ch, true, err, sizeof(err), &ch->probe);
        if (r < 0) {
                ch->probe = NULL;
                log_debug("TCP still unavailable, staying on HTTPS: %s", err);
                arm_probe(ch);
        }
        return 0;
}

static void send_signin(struct tether_channel *ch, char *err, size_t errsize, int *ret) {
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        r = ch->cb.make_signin(ch->userdata, &frame, &len);
        if (r < 0) {
                snprintf(err, errsize, "Failed to make the SIGNIN frame: %s", strerror(-r));
                *ret = r;
                return;
        }
        r = tcp_link_send(ch->tcp, frame, len);
        if (r < 0)
                snprintf(err, errsize, "Failed to queue SIGNIN: %s", strerror(-r));
        *ret = r;
}

static void requeue_on_tcp(void *userdata, const uint8_t *frame, size_t len) {
        struct tether_channel *ch = userdata;
        int r;

        r = tcp_link_send(ch->tcp, frame, len);
        if (r < 0)
                log_warning_errno(r, "Failed to move a queued frame to TCP, dropping it (the "
                                     "spool re-sends it): %m");
}

void channel_tcp_up(struct tether_channel *ch, struct tcp_link *link) {
        char peer[300], err[1024] = "";
        bool moved = false;
        int r;

        channel_peer_name(ch, ch->tcp_port, peer, sizeof(peer));

        if (link == ch->probe) {
                /* TCP works again: the channel moves back to it. Frames that
                 * were waiting for the next poll go over TCP after SIGNIN;
                 * those inside a cancelled poll are the spool's to re-send. */
                log_info("TCP to %s works again: moving the channel back from HTTPS", peer);
                https_channel_stop(ch, true);
                ch->generation++;
                ch->tcp = ch->probe;
                ch->probe = NULL;
                ch->link = &tcp_link_ops;
                moved = true;
        } else if (link != ch->tcp)
                return;

        r = tcp_link_start_session(ch->tcp);
        if (r < 0)
                snprintf(err, sizeof(err), "Failed to start the session with %s: %s", peer, strerror(-r));
        else
                send_signin(ch, err, sizeof(err), &r);
        if (r < 0) {
                handle_failure(ch, r, false, err);
                return;
        }
        ch->state = TETHER_CHANNEL_CONNECTED;
        if (moved) {
                https_channel_drain_queue(ch, requeue_on_tcp, ch);
                /* The HTTPS session is over: the session layer forgets what
                 * it knew of it (a new SIGNIN_CONFIRM comes over TCP). */
                if (!notify(ch, TETHER_CHANNEL_DISCONNECTED, &https_link_ops,
                            "moving the channel back to TCP"))
                        return;
        }
        log_info("Connected to %s (tcp)", peer);
        (void)notify(ch, TETHER_CHANNEL_CONNECTED, &tcp_link_ops, peer);
}

void channel_tcp_failed(struct tether_channel *ch, struct tcp_link *link, int error, bool connect_failure,
                        const char *detail) {
        if (link == ch->probe) {
                log_debug("TCP retry failed, staying on HTTPS: %s", detail);
                ch->probe = tcp_link_free(ch->probe);
                arm_probe(ch);
                return;
        }
        if (link != ch->tcp)
                return;
        handle_failure(ch, error, connect_failure, detail);
}

void channel_https_up(struct tether_channel *ch) {
        char peer[300];

        if (ch->state == TETHER_CHANNEL_CONNECTED)
                return;
        ch->state = TETHER_CHANNEL_CONNECTED;
        ch->https_good = ch->https_index;
        channel_peer_name(ch, ch->https_port, peer, sizeof(peer));
        if (ch->mode == TETHER_CHANNEL_AUTO)
                arm_probe(ch);
        log_info("Connected to %s (https)", peer);
        (void)notify(ch, TETHER_CHANNEL_CONNECTED, &https_link_ops, peer);
}

void channel_https_failed(struct tether_channel *ch, int error, const char *detail) {
        if (ch->link != &https_link_ops)
                return;
        handle_failure(ch, error, false, detail);
}

/* ---- configuration ---- */

/* One fingerprint of len bytes at hex (64 hex digits, colons allowed
 * between bytes) as base64 of the digest into b64 (45 bytes with NUL). */
static int pin_to_base64(const char *hex, size_t len, unsigned char b64[64]) {
        uint8_t digest[32];
        size_t n = 0;

        for (size_t i = 0; i < len;) {
                if (hex[i] == ':' || hex[i] == ' ') {
                        i++;
                        continue;
                }
                int hi = hex_digit_value(hex[i]);
                int lo = hi < 0 || i + 1 >= len ? -1 : hex_digit_value(hex[i + 1]);
                if (hi < 0 || lo < 0 || n >= sizeof(digest))
                        return -EINVAL;
                digest[n++] = (uint8_t)(hi << 4 | lo);
                i += 2;
        }
        if (n != sizeof(digest))
                return -EINVAL;
        EVP_EncodeBlock(b64, digest, (int)sizeof(digest));
        return 0;
}

/* "ab12...,cd34..." (64 hex digits each, comma-separated: one per MP node)
 * into libcurl's "sha256//<base64>;sha256//<base64>". */
static int pin_to_curl(const char *hex, char **ret) {
        _cleanup_(freep) char *s = NULL;
        size_t used = 0, size = 1;

        for (const char *p = hex; *p; p++)
                size += *p == ',' ? 64 : 0;
        size += 64;
        s = calloc(1, size);
        if (!s)
                return -ENOMEM;
        for (const char *p = hex;;) {
                size_t len = strcspn(p, ",");
                unsigned char b64[64];

                if (pin_to_base64(p, len, b64) < 0)
                        return -EINVAL;
                used += (size_t)snprintf(s + used, size - used, "%ssha256//%s", used ? ";" : "",
                                         (const char *)b64);
                if (!p[len])
                        break;
                p += len + 1;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

/* The device key as PEM for libcurl's CURLOPT_SSLKEY_BLOB. The memory BIO is
 * the secure heap's, and the copy is wiped at free. */
static int key_to_pem(const struct tether_key *key, char **ret, size_t *ret_len) {
        EVP_PKEY *pkey = tether_key_evp(key);
        BIO *bio;
        char *data = NULL;
        long len;
        char *copy;

        if (!pkey)
                return -EINVAL;
        bio = BIO_new(BIO_s_secmem());
        if (!bio)
                return -ENOMEM;
        if (PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
                BIO_free(bio);
                return -EINVAL;
        }
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0) {
                BIO_free(bio);
                return -EINVAL;
        }
        copy = malloc((size_t)len + 1);
        if (!copy) {
                BIO_free(bio);
                return -ENOMEM;
        }
        memcpy(copy, data, (size_t)len);
        copy[len] = 0;
        BIO_free(bio);
        *ret = copy;
        *ret_len = (size_t)len;
        return 0;
}

static int dup_opt(const char *s, char **ret) {
        if (!s || !*s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

struct tether_channel *tether_channel_free(struct tether_channel *ch) {
        if (!ch)
                return NULL;
        teardown_links(ch);
        /* In-flight policy fetches are cancelled without their callback:
         * the owner is going away. */
        ch->https = https_state_free(ch->https);
        sd_event_source_disable_unref(ch->retry_timer);
        sd_event_source_disable_unref(ch->probe_timer);
        tether_tls_ctx_free(ch->tls);
        if (ch->key_pem) {
                OPENSSL_cleanse(ch->key_pem, ch->key_pem_len);
                free(ch->key_pem);
        }
        mp_addresses_done(&ch->addrs);
        free(ch->ca_file);
        free(ch->pinned_fingerprint);
        free(ch->pinned_curl);
        free(ch->proxy);
        free(ch->cert_pem);
        sd_event_unref(ch->event);
        free(ch);
        curl_global_cleanup();
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_channel *, tether_channel_free);

/* The HTTPS port, then the alternatives not already listed. */
static void set_https_ports(struct tether_channel *ch, const struct tether_channel_config *config) {
        ch->https_ports[ch->n_https_ports++] = config->https_port;
        for (unsigned i = 0; i < config->https_alt_ports.n && i < TETHER_CHANNEL_MAX_ALT_PORTS; i++) {
                uint16_t p = config->https_alt_ports.port[i];
                bool dup = p == 0;

                for (unsigned k = 0; k < ch->n_https_ports; k++)
                        dup = dup || ch->https_ports[k] == p;
                if (!dup)
                        ch->https_ports[ch->n_https_ports++] = p;
        }
}

/* The channel's own copies of the configuration's strings. */
static int copy_strings(struct tether_channel *ch, const struct tether_channel_config *config) {
        int r;
        const struct {
                const char *from;
                char **to;
        } strings[] = {
                {config->ca_file, &ch->ca_file},
                {config->pinned_fingerprint, &ch->pinned_fingerprint},
                {config->proxy, &ch->proxy},
                {config->cert_pem, &ch->cert_pem},
        };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                r = dup_opt(strings[i].from, strings[i].to);
                if (r < 0)
                        return r;
        }
        if (ch->pinned_fingerprint) {
                r = pin_to_curl(ch->pinned_fingerprint, &ch->pinned_curl);
                if (r < 0)
                        return r;
        }
        return 0;
}

int tether_channel_new(sd_event *event, const struct tether_channel_config *config,
                       const struct tether_channel_callbacks *callbacks, void *userdata,
                       struct tether_channel **ret) {
        _cleanup_(tether_channel_freep) struct tether_channel *ch = NULL;
        const char *reason = NULL;
        int r;

        if (!event || !config || !callbacks || !ret)
                return -EINVAL;
        if (!config->host || !*config->host || !config->cert_pem || !config->device_key ||
            !callbacks->make_signin || !callbacks->on_frame)
                return -EINVAL;
        if (config->mode != TETHER_CHANNEL_HTTPS && config->tcp_port == 0)
                return -EINVAL;
        if (config->mode != TETHER_CHANNEL_TCP && config->https_port == 0)
                return -EINVAL;
        if (config->mode > TETHER_CHANNEL_HTTPS)
                return -EINVAL;

        /* Counted: every channel pairs it with curl_global_cleanup(). */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;
        ch = calloc(1, sizeof(*ch));
        if (!ch) {
                curl_global_cleanup();
                return -ENOMEM;
        }
        ch->event = sd_event_ref(event);
        ch->cb = *callbacks;
        ch->userdata = userdata;
        ch->mode = config->mode;
        ch->tcp_port_config = config->tcp_port;
        ch->https_port = config->https_port;
        set_https_ports(ch, config);
        ch->device_key = config->device_key;
        ch->max_frame = config->max_frame > 0 ? config->max_frame : TETHER_FRAME_DEFAULT_MAX_BODY;
        ch->keepalive_seconds_config =
                config->keepalive_seconds > 0 ? config->keepalive_seconds : DEFAULT_KEEPALIVE_SECONDS;
        ch->keepalive_seconds = ch->keepalive_seconds_config;
        ch->start_delay_max_seconds = config->start_delay_max_seconds;
        ch->https_hold_seconds =
                config->https_hold_seconds > 0 ? config->https_hold_seconds : DEFAULT_HOLD_SECONDS;
        if (ch->https_hold_seconds > MAX_HOLD_SECONDS)
                ch->https_hold_seconds = MAX_HOLD_SECONDS;
        ch->timing = (struct channel_timing){
                .connect_usec = 10 * USEC_PER_SEC,
                .handshake_usec = 10 * USEC_PER_SEC,
                .frame_usec = TETHER_FRAME_DEADLINE_USEC,
                .write_usec = 30 * USEC_PER_SEC,
                .tcp_probe_usec = config->tcp_retry_usec ? config->tcp_retry_usec : DEFAULT_TCP_RETRY_USEC,
                .http_connect_usec = 10 * USEC_PER_SEC,
        };
        tether_backoff_init(&ch->backoff);

        r = copy_strings(ch, config);
        if (r < 0)
                return r;
        r = mp_addresses_parse(config->host, &ch->addrs, &reason);
        if (r < 0) {
                if (r == -EINVAL)
                        log_error("[mp] host: %s: '%s'", reason, config->host);
                return r;
        }
        mp_addresses_order(&ch->addrs, config->order_seed);
        select_address(ch);
        r = key_to_pem(ch->device_key, &ch->key_pem, &ch->key_pem_len);
        if (r < 0)
                return r;
        r = tether_tls_client_new(ch->cert_pem, ch->device_key, ch->ca_file, ch->pinned_fingerprint,
                                  &ch->tls);
        if (r < 0)
                return r;
        r = https_state_new(ch, &ch->https);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(ch);
        return 0;
}

/* ---- the public operations ---- */

int tether_channel_start(struct tether_channel *ch) {
        uint64_t delay = 0;
        int r;

        if (!ch)
                return -EINVAL;
        if (ch->started)
                return -EALREADY;
        if (ch->start_delay_max_seconds > 0)
                delay = channel_random_u64() % ((uint64_t)ch->start_delay_max_seconds * USEC_PER_SEC + 1);
        /* Only the first connection is spread this way: a later start (after
         * GOODBYE(shutdown), which has its own spread) must not add it again. */
        ch->start_delay_max_seconds = 0;
        /* Even without a delay the first attempt runs from the loop, so that
         * no callback fires inside start(). */
        r = channel_arm_timer(ch, &ch->retry_timer, delay, on_retry, ch);
        if (r < 0)
                return r;
        ch->started = true;
        ch->state = TETHER_CHANNEL_IDLE;
        ch->link = NULL;
        if (delay > 0)
                log_info("Connecting to the MP in %llu s (random start delay)",
                         (unsigned long long)(delay / USEC_PER_SEC));
        return 0;
}

int tether_channel_send(struct tether_channel *ch, const uint8_t *frame, size_t len) {
        if (!ch || !frame || len == 0)
                return -EINVAL;
        if (ch->state != TETHER_CHANNEL_CONNECTED)
                return -ENOTCONN;
        return ch->link ? ch->link->send(ch, frame, len) : -ENOTCONN;
}

void tether_channel_confirmed(struct tether_channel *ch, uint32_t keepalive_seconds) {
        if (!ch || ch->state != TETHER_CHANNEL_CONNECTED)
                return;
        if (keepalive_seconds > 0) {
                ch->keepalive_seconds = keepalive_seconds;
                if (ch->tcp)
                        tcp_link_set_keepalive(ch->tcp, keepalive_seconds);
        }
        /* Over HTTPS every poll brings a SIGNIN_CONFIRM: the healthy stretch
         * starts at the first one, not the latest. */
        if (ch->backoff.connected_at == 0)
                tether_backoff_connected(&ch->backoff, channel_now(ch));
        mp_addresses_succeeded(&ch->addrs);
}

void tether_channel_reconnect(struct tether_channel *ch, uint32_t min_delay_seconds, const char *reason) {
        const struct link_ops *was;

        if (!ch || !ch->started)
                return;
        was = ch->link;
        log_info("Reconnecting to the MP (%s), not before %u s", reason ? reason : "on request",
                 min_delay_seconds);
        teardown_links(ch);
        if (ch->retry_timer)
                (void)sd_event_source_set_enabled(ch->retry_timer, SD_EVENT_OFF);
        schedule_reconnect(ch, was, (uint64_t)min_delay_seconds * USEC_PER_SEC,
                           reason ? reason : "reconnect requested");
}

void tether_channel_move(struct tether_channel *ch, uint32_t min_delay_seconds, const char *reason) {
        const struct link_ops *was;
        uint64_t floor = (uint64_t)min_delay_seconds * USEC_PER_SEC;

        if (!ch || !ch->started)
                return;
        was = ch->link;
        log_info("Moving to another MP address (%s), not before %u s", reason ? reason : "on request",
                 min_delay_seconds);
        teardown_links(ch);
        if (ch->retry_timer)
                (void)sd_event_source_set_enabled(ch->retry_timer, SD_EVENT_OFF);
        /* Up to a second on top, so that the devices a node sent away
         * together do not all arrive at the next one together. */
        next_address(ch, was, floor + channel_random_u64() % (USEC_PER_SEC + 1), floor,
                     reason ? reason : "moving to another MP address");
}

void tether_channel_peer(const struct tether_channel *ch, char *buf, size_t size) {
        bool https = ch->link == &https_link_ops || ch->mode == TETHER_CHANNEL_HTTPS;

        channel_peer_name(ch, https ? ch->https_port : ch->tcp_port, buf, size);
}

void tether_channel_stop(struct tether_channel *ch) {
        if (!ch)
                return;
        if (ch->link && ch->state == TETHER_CHANNEL_CONNECTED)
                ch->link->stop(ch, true);
        teardown_links(ch);
        if (ch->retry_timer)
                (void)sd_event_source_set_enabled(ch->retry_timer, SD_EVENT_OFF);
        ch->started = false;
        ch->state = TETHER_CHANNEL_IDLE;
        ch->link = NULL;
}

enum tether_channel_state tether_channel_get_state(const struct tether_channel *ch) {
        return ch ? ch->state : TETHER_CHANNEL_IDLE;
}

const char *tether_channel_transport_name(const struct tether_channel *ch) {
        if (!ch || (ch->state != TETHER_CHANNEL_CONNECTING && ch->state != TETHER_CHANNEL_CONNECTED))
                return "";
        return link_name(ch->link);
}

uint16_t tether_channel_https_port(const struct tether_channel *ch) {
        return ch ? ch->https_port : 0;
}

int tether_channel_fetch_policy(struct tether_channel *ch, const char *user, const char *etag,
                                tether_policy_fetched_fn done, void *userdata) {
        if (!ch || !done)
                return -EINVAL;
        return https_fetch_policy(ch, user, etag, done, userdata);
}

void tether_channel_set_timing_for_test(struct tether_channel *ch, const struct channel_timing *t) {
        if (t->connect_usec)
                ch->timing.connect_usec = t->connect_usec;
        if (t->handshake_usec)
                ch->timing.handshake_usec = t->handshake_usec;
        if (t->frame_usec)
                ch->timing.frame_usec = t->frame_usec;
        if (t->write_usec)
                ch->timing.write_usec = t->write_usec;
        if (t->tcp_probe_usec)
                ch->timing.tcp_probe_usec = t->tcp_probe_usec;
        if (t->http_connect_usec)
                ch->timing.http_connect_usec = t->http_connect_usec;
}
