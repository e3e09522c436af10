/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcurl multi driven by the channel's sd-event loop: CURLMOPT_SOCKETFUNCTION
 * maps curl's sockets to sd-event I/O sources, CURLMOPT_TIMERFUNCTION to one
 * sd-event timer, and both call curl_multi_socket_action(). CURLcode becomes
 * a negative errno here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include <curl/curl.h>

#include "agent/channel-internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "transport/frame.h"
#include "transport/tls.h"
#include "agent/channel-https.h"

/* ---- errors ---- */

int curl_to_errno(CURLcode c) {
        switch (c) {
        case CURLE_OK:
                return 0;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
                return -EPERM;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
                return -EPROTO;
        case CURLE_WRITE_ERROR:
                return -EMSGSIZE; /* only our size cap refuses data */
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        default:
                return -EIO;
        }
}

/* ---- sd-event glue ---- */

/* Hands every finished transfer to finish_request(), one at a time:
 * curl_multi_remove_handle() drops a removed handle's pending message, so a
 * completion that cancels other requests is safe. */
static void process_done(struct https_state *hs) {
        CURLMsg *msg;
        int left = 0;

        for (;;) {
                struct https_req *req = NULL;

                msg = curl_multi_info_read(hs->multi, &left);
                if (!msg)
                        break;
                if (msg->msg != CURLMSG_DONE)
                        continue;
                CURLcode result = msg->data.result;
                (void)curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
                if (!req)
                        continue;
                finish_request(hs, req, result);
        }
}

static int on_curl_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct https_state *hs = userdata;
        int action = 0, running = 0;

        if (revents & EPOLLIN)
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                action |= CURL_CSELECT_ERR;
        (void)curl_multi_socket_action(hs->multi, fd, action, &running);
        process_done(hs);
        return 0;
}

static void forget_source(struct https_state *hs, sd_event_source *s) {
        for (size_t i = 0; i < hs->n_sources; i++)
                if (hs->sources[i] == s) {
                        hs->sources[i] = hs->sources[--hs->n_sources];
                        break;
                }
        sd_event_source_disable_unref(s);
}

int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        struct https_state *hs = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        forget_source(hs, s);
                        (void)curl_multi_assign(hs->multi, fd, NULL);
                }
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (s) {
                r = sd_event_source_set_io_events(s, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s, SD_EVENT_ON);
                return r < 0 ? -1 : 0;
        }

        if (hs->n_sources == hs->cap_sources) {
                size_t cap = hs->cap_sources ? hs->cap_sources * 2 : 8;
                sd_event_source **n = reallocarray(hs->sources, cap, sizeof(*n));
                if (!n)
                        return -1;
                hs->sources = n;
                hs->cap_sources = cap;
        }
        r = sd_event_add_io(hs->ch->event, &s, fd, events, on_curl_io, hs);
        if (r < 0)
                return -1;
        hs->sources[hs->n_sources++] = s;
        (void)curl_multi_assign(hs->multi, fd, s);
        return 0;
}

static int on_curl_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct https_state *hs = userdata;
        int running = 0;

        (void)curl_multi_socket_action(hs->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        process_done(hs);
        return 0;
}

int on_curl_timer_change(CURLM *multi, long timeout_ms, void *userp) {
        struct https_state *hs = userp;
        int r;

        if (timeout_ms < 0)
                return hs->timer && sd_event_source_set_enabled(hs->timer, SD_EVENT_OFF) < 0 ? -1 : 0;

        /* 0 means "now": it still goes through the loop, since curl must not
         * be re-entered from its own callback. */
        r = channel_arm_timer(hs->ch, &hs->timer, (uint64_t)timeout_ms * 1000ULL, on_curl_timeout, hs);
        return r < 0 ? -1 : 0;
}
