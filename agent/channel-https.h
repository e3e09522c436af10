/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Private to channel-https.c (the requests, the link) and channel-curl.c
 * (libcurl multi on the sd-event loop, CURLcode to errno). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <systemd/sd-event.h>

#include "agent/channel-internal.h"

#define USEC_PER_SEC 1000000ULL
/* A policy document larger than this is refused (-EMSGSIZE). */
#define POLICY_MAX_BYTES (16u * 1024u * 1024u)
/* A poll answer carries SIGNIN_CONFIRM, PUSHes and RESPONSE_ACKs: this many
 * maximal frames is far beyond any sane answer. */
#define POLL_MAX_FRAMES 16u
/* Time on top of the hold for the MP to answer and the bytes to arrive. */
#define POLL_SLACK_SECONDS 30u
#define POLICY_TIMEOUT_SECONDS 60u
#define QUEUE_MAX_BYTES (32u * 1024u * 1024u)

enum req_kind {
        REQ_POLL,   /* the long poll chain */
        REQ_SEND,   /* hold=0, carries frames queued during a long poll */
        REQ_POLICY, /* GET /tether/v1/policy/... */
};

struct https_req {
        struct https_state *hs;
        struct https_req *prev, *next;
        enum req_kind kind;
        CURL *easy;
        struct curl_slist *headers;
        char peer[300];

        uint8_t *body; /* request body, owned (POSTFIELDS points here) */
        size_t body_len;

        uint8_t *resp;
        size_t resp_len;
        size_t resp_cap;
        size_t resp_max;
        bool resp_too_large;

        char *etag;
        char *signature;
        char errbuf[CURL_ERROR_SIZE];

        tether_policy_fetched_fn done;
        void *userdata;
};

struct https_state {
        struct tether_channel *ch;
        CURLM *multi;
        sd_event_source *timer;

        /* Every I/O source made for curl, so that none outlives the multi
         * handle even if curl closes a cached connection without telling. */
        sd_event_source **sources;
        size_t n_sources;
        size_t cap_sources;

        struct https_req *reqs;
        struct https_req *poll;
        struct https_req *sender;
        bool session_up; /* a poll of this session has returned */

        /* Frames for the next request, concatenated (frames delimit
         * themselves through their header). */
        uint8_t *queue;
        size_t queue_len;
        size_t queue_cap;
};

void finish_request(struct https_state *hs, struct https_req *req, CURLcode result);
int curl_to_errno(CURLcode c);
int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp);
int on_curl_timer_change(CURLM *multi, long timeout_ms, void *userp);
