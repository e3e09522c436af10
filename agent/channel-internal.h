/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Private to agent/channel*.c (and the channel's unit test). The channel
 * core (channel.c) owns the state machine, backoff and the choice of
 * transport; channel-tcp.c drives one TLS-over-TCP link; channel-https.c
 * drives libcurl multi on the same sd-event loop for the HTTPS fallback and
 * policy fetches.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "agent/channel.h"
#include "agent/mp-addresses.h"
#include "transport/backoff.h"

struct tether_tls_ctx;
struct tcp_link;
struct https_state;

/*
 * One way of carrying the channel. The channel core chooses one
 * (channel.c: the mode, auto's fallback and its TCP retry) and then talks
 * to it only through these operations.
 */
struct link_ops {
        const char *name; /* "tcp", "https": the transport of on_state */
        /* Readies an attempt; returns the port it goes to. */
        uint16_t (*begin)(struct tether_channel *ch);
        /* Starts connecting to peer ("host:port"); the link then reports
         * through channel_*_up() / channel_*_failed(). A synchronous failure
         * returns a negative errno with the text in err, and whether the
         * connection itself could not be made. */
        int (*start)(struct tether_channel *ch, const char *peer, char *err, size_t errsize,
                     bool *connect_failure);
        int (*send)(struct tether_channel *ch, const uint8_t *frame, size_t len);
        /* Closes the link (never a policy fetch); planned: a shutdown, with
         * the link's last words. Safe when the link is not up. */
        void (*stop)(struct tether_channel *ch, bool planned);
        /* After this link failed (it is closed): starts the next way to try
         * (auto mode's HTTPS fallback, the next HTTPS port) and returns
         * true, or false to back off. */
        bool (*fail_over)(struct tether_channel *ch, bool connect_failure, const char *detail);
};

extern const struct link_ops tcp_link_ops;   /* channel-tcp.c */
extern const struct link_ops https_link_ops; /* channel-https.c */

/* Starts an attempt over ops (channel.c). */
void channel_start_link(struct tether_channel *ch, const struct link_ops *ops);

/* Timing of the contract, kept in the object so that tests can shorten it. */
struct channel_timing {
        uint64_t connect_usec;      /* TCP connect, per address: 10 s */
        uint64_t handshake_usec;    /* TLS handshake: 10 s */
        uint64_t frame_usec;        /* a frame whole within this of its first byte: 30 s */
        uint64_t write_usec;        /* a queued write must make progress within: 30 s */
        uint64_t tcp_probe_usec;    /* auto mode on HTTPS: retry TCP about this often: 60 s */
        uint64_t http_connect_usec; /* libcurl connect + TLS: 10 s */
};

struct tether_channel {
        sd_event *event; /* a reference */

        /* Configuration: owned copies. */
        struct mp_addresses addrs; /* [mp] host, in this device's order (7.4) */
        /* The address tried now: host borrowed from addrs, the TCP port its
         * own or tcp_port_config. Set by each attempt. */
        const char *host;
        uint16_t tcp_port;
        uint16_t tcp_port_config; /* [mp] tcp_port: for addresses without their own */
        uint16_t https_port;      /* the current one of https_ports[] */
        /* https_port of the configuration, then its alternatives */
        uint16_t https_ports[1 + TETHER_CHANNEL_MAX_ALT_PORTS];
        unsigned n_https_ports;
        unsigned https_index;      /* https_ports[] index of https_port */
        unsigned https_good;       /* index of the port that last answered a poll; 0 at first */
        unsigned https_ports_left; /* ports this attempt may still try */
        enum tether_channel_mode mode;
        char *ca_file;
        char *pinned_fingerprint;
        char *pinned_curl; /* "sha256//<base64>" for libcurl, or NULL */
        char *proxy;
        char *cert_pem;
        char *key_pem; /* the device key as PEM, for libcurl; wiped at free */
        size_t key_pem_len;
        const struct tether_key *device_key; /* borrowed */
        uint32_t max_frame;
        uint32_t keepalive_seconds_config;
        uint32_t start_delay_max_seconds;
        uint32_t https_hold_seconds;

        struct tether_channel_callbacks cb;
        void *userdata;

        enum tether_channel_state state;
        const struct link_ops *link; /* the one up or being tried; NULL: none */
        bool started;
        /* Bumped whenever the current link is torn down: code that called out
         * to a callback compares it afterwards to know whether its link is
         * still alive. */
        uint64_t generation;
        /* auto mode: the HTTPS fallback was already tried in this attempt */
        bool https_tried;

        uint32_t keepalive_seconds; /* current: config, then what SIGNIN_CONFIRM said */

        struct tether_backoff backoff;
        sd_event_source *retry_timer; /* start delay and backoff */
        sd_event_source *probe_timer; /* auto mode on HTTPS: next TCP try */

        struct tether_tls_ctx *tls;
        struct tcp_link *tcp;   /* the TCP channel link, or NULL */
        struct tcp_link *probe; /* auto mode: a TCP try while HTTPS carries the channel */
        struct https_state *https;

        struct channel_timing timing;
};

/* "host:port" for logs; IPv6 literals in brackets. */
void channel_peer_name(const struct tether_channel *ch, uint16_t port, char *buf, size_t size);

/* 64 random bits from getrandom(). */
uint64_t channel_random_u64(void);

/* The loop's CLOCK_MONOTONIC time (the clock itself before the loop has run
 * once), in microseconds. */
uint64_t channel_now(const struct tether_channel *ch);

/* (Re)arms the one-shot monotonic timer *s at now + delay_usec, creating it
 * on first use with handler and userdata. Accuracy 1 ms: the deadlines are
 * short in tests and the keepalive arithmetic compares whole intervals. */
int channel_arm_timer(struct tether_channel *ch, sd_event_source **s, uint64_t delay_usec,
                      sd_event_time_handler_t handler, void *userdata);

/* Called by the links (channel.c). */
void channel_tcp_up(struct tether_channel *ch, struct tcp_link *link);
/* connect_failure: the TCP connection itself could not be made (refused,
 * unreachable, time-out, no address): auto mode then tries HTTPS. */
void channel_tcp_failed(struct tether_channel *ch, struct tcp_link *link, int error, bool connect_failure,
                        const char *detail);
void channel_https_up(struct tether_channel *ch);
void channel_https_failed(struct tether_channel *ch, int error, const char *detail);
/* Passes a frame to on_frame. Returns false when the callback tore the
 * current link down (the caller must then not touch its link). */
bool channel_deliver_frame(struct tether_channel *ch, struct tether_frame *frame);

/* channel-tcp.c: one TLS-over-TCP link. Connecting starts at once; the
 * link reports through channel_tcp_up() / channel_tcp_failed(). After a
 * failure report the channel frees the link. A synchronous failure (no
 * address, every address refused at once) returns the error with the text
 * in errbuf. */
int tcp_link_new(struct tether_channel *ch, bool probe, char *errbuf, size_t errsize, struct tcp_link **ret);
struct tcp_link *tcp_link_free(struct tcp_link *link);
/* Turns a link that is up (handshake done) into the channel link: reading,
 * keepalive timer. */
int tcp_link_start_session(struct tcp_link *link);
/* Queues one frame (copied) for writing with the write deadline. */
int tcp_link_send(struct tcp_link *link, const uint8_t *frame, size_t len);
void tcp_link_set_keepalive(struct tcp_link *link, uint32_t seconds);
/* Writes what it can of the queue plus this frame without waiting, then
 * sends close_notify. For GOODBYE at stop. */
void tcp_link_flush_and_close(struct tcp_link *link, const uint8_t *frame, size_t len);

/* channel-https.c */
int https_state_new(struct tether_channel *ch, struct https_state **ret);
struct https_state *https_state_free(struct https_state *hs);
/* Starts the HTTPS channel: a first poll without hold, then long polls. */
int https_channel_start(struct tether_channel *ch);
/* Cancels the channel's polls (not policy fetches). Frames not yet sent
 * stay queued when keep_queue, else they are dropped. */
void https_channel_stop(struct tether_channel *ch, bool keep_queue);
int https_channel_send(struct tether_channel *ch, const uint8_t *frame, size_t len);
/* Hands the frames queued for the next poll to fn, in order, and empties
 * the queue (used when the channel moves back to TCP). */
void https_channel_drain_queue(struct tether_channel *ch,
                               void (*fn)(void *userdata, const uint8_t *frame, size_t len), void *userdata);
int https_fetch_policy(struct tether_channel *ch, const char *user, const char *etag,
                       tether_policy_fetched_fn done, void *userdata);

/* For tests: shorten the contract's deadlines. Any 0 keeps the value. */
void tether_channel_set_timing_for_test(struct tether_channel *ch, const struct channel_timing *t);
