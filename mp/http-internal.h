/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Inside tether-mp's HTTP layer, shared by http.c (HTTP/1.1: parsing,
 * pipelining, bodies, answers, deadlines) and https.c (the endpoints of the
 * HTTPS listener: the fallback channel and the policies). Not for others:
 * they use the mp_http_* and mp_https_* functions of mp/mp.h.
 */

#include "mp/mp.h"

#define MAX_URL 2048
#define MAX_HEADER 1024

/* Parsing stops while this much input waits unparsed (the socket is then
 * left unread), or while this much output waits to be written. */
#define MP_HTTP_BACKLOG_MAX (64u * 1024u)
#define MP_HTTP_REQUESTS_PER_ROUND 64u

/* What a request's body may be, known once its headers are in. */
enum body_mode {
        BODY_NONE,   /* HTTPS requests other than the poll: no body */
        BODY_FRAMES, /* the fallback poll: SIGNIN first, verified before more */
        BODY_ANY,    /* the admin socket: up to MP_HTTP_MAX_BODY */
        BODY_DISCARD /* a refused (overloaded) connection */
};

enum header_state {
        HDR_NONE,
        HDR_FIELD,
        HDR_VALUE,
};

struct mp_http {
        http_parser parser;
        char url[MAX_URL];
        size_t url_len;
        bool url_too_long;
        char field[64];
        size_t field_len;
        char value[MAX_HEADER];
        size_t value_len;
        enum header_state hstate;
        char if_none_match[160];
        bool expect_continue;
        uint8_t *body;
        size_t body_len, body_cap;
        bool body_too_large;
        /* the body would pass MaxBufferedBodyBytes, the budget of all HTTPS
         * bodies together: refused as overloaded */
        bool body_over_budget;
        bool complete; /* a whole request is parsed and not yet answered */
        bool keep_alive;
        enum body_mode body_mode;
        /* The poll's first frame before it is verified (BODY_FRAMES). */
        struct tether_frame_decoder *signin_dec;
        bool signin_checked;
        /* The body was refused before it was kept: answered with this GOODBYE. */
        bool refused;
        enum tether_goodbye_reason refused_reason;
        struct tether_diag refused_diag;

        /* input received and not yet parsed: in[in_off..in_len) */
        uint8_t *in;
        size_t in_len, in_off;
        bool draining;

        /* deadlines: a request must arrive whole within RequestTimeoutSeconds
         * of its first byte; an idle keep-alive connection is closed */
        bool in_request;
        uint64_t request_start_usec;
        uint64_t idle_since_usec;

        /* a held fallback poll */
        bool held;
        uint64_t hold_deadline_usec;
        struct mp_buf **acks;
        size_t n_acks;
};

/* The path of the request's URL into path ("" when it does not parse). */
void mp_http_url_path(const struct mp_http *h, char *path, size_t size);
void mp_http_free_acks(struct mp_http *h);

/* https.c: the endpoints, each answering the request (mp_http_respond). */
int mp_https_channel(struct mp_conn *c, const char *query);
int mp_https_policy(struct mp_conn *c, const char *path);
/* A connection over the caps, or a poll over the body budget. */
int mp_https_overloaded(struct mp_conn *c);
