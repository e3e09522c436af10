/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTPS fallback of PROTOCOL-v1 section 1 and the policy fetches of
 * section 6, with libcurl multi driven by the channel's sd-event loop:
 * CURLMOPT_SOCKETFUNCTION maps curl's sockets to sd-event I/O sources,
 * CURLMOPT_TIMERFUNCTION to one sd-event timer, and both call
 * curl_multi_socket_action(). No threads, no curl_multi_poll().
 *
 * The channel over HTTPS is a chain of polls: POST /tether/v1/channel with
 * SIGNIN first and then the queued frames. The first poll of a session asks
 * hold=0 so that SIGNIN_CONFIRM comes back at once; the following ones ask
 * the configured hold and are re-issued as soon as one returns. A frame
 * queued while a long poll is held goes out at once in a separate hold=0
 * request (at most one in flight), so PUSH_ACK and RESPONSE never wait for
 * the hold to run out.
 *
 * CURLcode never leaves this file: it becomes a negative errno here.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include <curl/curl.h>

#include "agent/channel-https.h"
#include "agent/channel-internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "transport/frame.h"
#include "transport/tls.h"

static char *mfree_str(char *s) {
        free(s);
        return NULL;
}

/* ---- requests ---- */

static struct https_req *req_free(struct https_req *req) {
        if (!req)
                return NULL;
        if (req->easy) {
                (void)curl_multi_remove_handle(req->hs->multi, req->easy);
                curl_easy_cleanup(req->easy);
        }
        curl_slist_free_all(req->headers);
        free(req->body);
        free(req->resp);
        free(req->etag);
        free(req->signature);
        free(req);
        return NULL;
}

/* Takes req out of the state's lists (it stays allocated). */
static void req_unlink(struct https_state *hs, struct https_req *req) {
        if (req->prev)
                req->prev->next = req->next;
        else if (hs->reqs == req)
                hs->reqs = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
        if (hs->poll == req)
                hs->poll = NULL;
        if (hs->sender == req)
                hs->sender = NULL;
}

static size_t on_curl_write(char *data, size_t size, size_t nmemb, void *userdata) {
        struct https_req *req = userdata;
        size_t n = size * nmemb;

        if (n > req->resp_max - req->resp_len) {
                req->resp_too_large = true;
                return 0; /* CURLE_WRITE_ERROR */
        }
        if (req->resp_len + n + 1 > req->resp_cap) {
                size_t cap = req->resp_cap ? req->resp_cap : 4096;
                while (cap < req->resp_len + n + 1)
                        cap *= 2;
                uint8_t *p = realloc(req->resp, cap);
                if (!p)
                        return 0;
                req->resp = p;
                req->resp_cap = cap;
        }
        memcpy(req->resp + req->resp_len, data, n);
        req->resp_len += n;
        req->resp[req->resp_len] = 0;
        return n;
}

/* Keeps the ETag and Tether-Signature of the final response: a new status
 * line (after a redirect or 1xx) starts over. */
static size_t on_curl_header(char *data, size_t size, size_t nmemb, void *userdata) {
        struct https_req *req = userdata;
        size_t n = size * nmemb;
        char **slot = NULL;
        size_t name_len;

        if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
                req->etag = mfree_str(req->etag);
                req->signature = mfree_str(req->signature);
                return n;
        }
        const char *colon = memchr(data, ':', n);
        if (!colon)
                return n;
        name_len = (size_t)(colon - data);
        if (name_len == 4 && strncasecmp(data, "etag", 4) == 0)
                slot = &req->etag;
        else if (name_len == 16 && strncasecmp(data, "tether-signature", 16) == 0)
                slot = &req->signature;
        if (!slot)
                return n;

        const char *v = colon + 1, *end = data + n;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
        free(*slot);
        *slot = strndup(v, (size_t)(end - v));
        return *slot ? n : 0;
}

/* The options every request shares: client certificate and key from
 * memory, server verification, proxy, time limits. */
static int setup_common(struct https_req *req, const char *url, long timeout_seconds) {
        struct tether_channel *ch = req->hs->ch;
        struct curl_blob cert = {.data = ch->cert_pem, .len = strlen(ch->cert_pem), .flags = CURL_BLOB_COPY};
        struct curl_blob key = {.data = ch->key_pem, .len = ch->key_pem_len, .flags = CURL_BLOB_COPY};
        CURL *e = req->easy;
        CURLcode c = CURLE_OK;

#define SET(opt, val)                                                                                       \
        do {                                                                                                \
                if (c == CURLE_OK)                                                                          \
                        c = curl_easy_setopt(e, opt, val);                                                  \
        } while (0)

        SET(CURLOPT_URL, url);
        SET(CURLOPT_PRIVATE, req);
        SET(CURLOPT_ERRORBUFFER, req->errbuf);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_PROTOCOLS_STR, "https");
        SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
        SET(CURLOPT_FOLLOWLOCATION, 0L);
        SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        SET(CURLOPT_SSL_CIPHER_LIST, TETHER_TLS12_CIPHERS);
        SET(CURLOPT_SSLCERTTYPE, "PEM");
        SET(CURLOPT_SSLCERT_BLOB, &cert);
        SET(CURLOPT_SSLKEYTYPE, "PEM");
        SET(CURLOPT_SSLKEY_BLOB, &key);
        if (ch->pinned_curl) {
                /* The pin replaces the chain, as on TCP; libcurl checks the
                 * pin even with peer verification off. */
                SET(CURLOPT_PINNEDPUBLICKEY, ch->pinned_curl);
                SET(CURLOPT_SSL_VERIFYPEER, 0L);
                SET(CURLOPT_SSL_VERIFYHOST, 0L);
        } else {
                if (ch->ca_file)
                        SET(CURLOPT_CAINFO, ch->ca_file);
                SET(CURLOPT_SSL_VERIFYPEER, 1L);
                SET(CURLOPT_SSL_VERIFYHOST, 2L);
        }
        /* Without an explicit proxy, libcurl reads https_proxy / no_proxy. */
        if (ch->proxy)
                SET(CURLOPT_PROXY, ch->proxy);
        SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
        SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(ch->timing.http_connect_usec / 1000ULL));
        SET(CURLOPT_TIMEOUT, timeout_seconds);
        SET(CURLOPT_WRITEFUNCTION, on_curl_write);
        SET(CURLOPT_WRITEDATA, req);
        SET(CURLOPT_HEADERFUNCTION, on_curl_header);
        SET(CURLOPT_HEADERDATA, req);
        SET(CURLOPT_USERAGENT, "tetherd");
#undef SET
        return curl_to_errno(c);
}

static int req_new(struct https_state *hs, enum req_kind kind, uint16_t port, struct https_req **ret) {
        struct https_req *req = calloc(1, sizeof(*req));

        if (!req)
                return -ENOMEM;
        req->hs = hs;
        req->kind = kind;
        channel_peer_name(hs->ch, port, req->peer, sizeof(req->peer));
        req->easy = curl_easy_init();
        if (!req->easy) {
                free(req);
                return -ENOMEM;
        }
        *ret = req;
        return 0;
}

static int req_submit(struct https_state *hs, struct https_req *req) {
        CURLMcode m = curl_multi_add_handle(hs->multi, req->easy);

        if (m != CURLM_OK)
                return m == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
        req->next = hs->reqs;
        if (hs->reqs)
                hs->reqs->prev = req;
        hs->reqs = req;
        return 0;
}

/* A channel request: SIGNIN, then every queued frame. */
static int start_channel_request(struct https_state *hs, enum req_kind kind, unsigned hold) {
        struct tether_channel *ch = hs->ch;
        _cleanup_(freep) uint8_t *signin = NULL;
        size_t signin_len = 0;
        struct https_req *req = NULL;
        char host[300], url[512];
        int r;

        r = ch->cb.make_signin(ch->userdata, &signin, &signin_len);
        if (r < 0)
                return r;
        r = req_new(hs, kind, ch->https_port, &req);
        if (r < 0)
                return r;

        req->body_len = signin_len + hs->queue_len;
        req->body = malloc(req->body_len);
        if (!req->body) {
                req_free(req);
                return -ENOMEM;
        }
        memcpy(req->body, signin, signin_len);
        if (hs->queue_len > 0)
                memcpy(req->body + signin_len, hs->queue, hs->queue_len);
        req->resp_max =
                POLL_MAX_FRAMES * ((size_t)ch->max_frame + TETHER_FRAME_HEADER_SIZE + TETHER_FRAME_MAX_SIG);

        if (strchr(ch->host, ':'))
                snprintf(host, sizeof(host), "[%s]", ch->host);
        else
                snprintf(host, sizeof(host), "%s", ch->host);
        snprintf(url, sizeof(url), "https://%s:%u/tether/v1/channel?hold=%u", host, (unsigned)ch->https_port,
                 hold);

        r = setup_common(req, url, (long)(hold + POLL_SLACK_SECONDS));
        if (r >= 0) {
                struct curl_slist *h;

                h = curl_slist_append(NULL, "Content-Type: application/x-tether-frames");
                /* No "Expect: 100-continue" round trip. */
                if (h)
                        req->headers = curl_slist_append(h, "Expect:");
                if (!h || !req->headers) {
                        curl_slist_free_all(h);
                        req->headers = NULL;
                        r = -ENOMEM;
                }
        }
        if (r >= 0) {
                CURLcode c = curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);
                if (c == CURLE_OK)
                        c = curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                             (curl_off_t)req->body_len);
                if (c == CURLE_OK)
                        c = curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
                r = curl_to_errno(c);
        }
        if (r >= 0)
                r = req_submit(hs, req);
        if (r < 0) {
                req_free(req);
                return r;
        }

        /* The frames now ride in this request. */
        hs->queue_len = 0;
        if (kind == REQ_POLL)
                hs->poll = req;
        else
                hs->sender = req;
        return 0;
}

/* Delivers every frame of a poll answer. Returns 0, 1 when a callback tore
 * the channel's link down, or a negative errno with detail set. */
static int deliver_frames(struct https_state *hs, const uint8_t *data, size_t len, const char *peer,
                          char *detail, size_t detail_size) {
        struct tether_channel *ch = hs->ch;
        struct tether_frame_decoder *dec = NULL;
        size_t off = 0;
        int r;

        r = tether_frame_decoder_new(ch->max_frame, &dec);
        if (r < 0) {
                snprintf(detail, detail_size, "Failed to decode the answer of %s: %s", peer, strerror(-r));
                return r;
        }
        while (off < len) {
                struct tether_frame *frame = NULL;
                struct tether_diag diag = {};
                size_t consumed = 0;

                r = tether_frame_decoder_feed(dec, data + off, len - off, &consumed, &frame, &diag);
                if (r < 0) {
                        snprintf(detail, detail_size, "Protocol error from %s: %s", peer,
                                 r == -EBADMSG && diag.text[0] ? diag.text : strerror(-r));
                        r = r == -EBADMSG ? -EPROTO : r;
                        goto done;
                }
                off += consumed;
                if (r == 0)
                        break;
                if (!channel_deliver_frame(ch, frame)) {
                        r = 1;
                        goto done;
                }
        }
        if (tether_frame_decoder_partial(dec)) {
                snprintf(detail, detail_size, "Protocol error from %s: the answer ends inside a frame",
                         peer);
                r = -EPROTO;
                goto done;
        }
        r = 0;
done:
        tether_frame_decoder_free(dec);
        return r;
}

static void finish_policy(struct https_req *req, CURLcode result) {
        long status = 0;

        if (result != CURLE_OK) {
                int error = req->resp_too_large ? -EMSGSIZE : curl_to_errno(result);
                log_warning("Failed to fetch a policy from %s: %s%s%s", req->peer,
                            curl_easy_strerror(result), req->errbuf[0] ? ": " : "", req->errbuf);
                req->done(req->userdata, error, 0, NULL, 0, NULL, NULL);
                return;
        }
        (void)curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
        req->done(req->userdata, 0, status, req->resp ? req->resp : (const uint8_t *)"", req->resp_len,
                  req->signature, req->etag);
}

void finish_request(struct https_state *hs, struct https_req *req, CURLcode result) {
        struct tether_channel *ch = hs->ch;
        enum req_kind kind = req->kind;
        char detail[768];
        long status = 0;
        int r;

        req_unlink(hs, req);
        (void)curl_multi_remove_handle(hs->multi, req->easy);

        if (kind == REQ_POLICY) {
                finish_policy(req, result);
                req_free(req);
                return;
        }

        if (result != CURLE_OK) {
                r = req->resp_too_large ? -EMSGSIZE : curl_to_errno(result);
                snprintf(detail, sizeof(detail), "HTTPS poll to %s failed: %s%s%s", req->peer,
                         curl_easy_strerror(result), req->errbuf[0] ? ": " : "", req->errbuf);
                req_free(req);
                channel_https_failed(ch, r, detail);
                return;
        }
        (void)curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200 && status != 204) {
                snprintf(detail, sizeof(detail), "HTTPS poll to %s answered HTTP %ld", req->peer, status);
                req_free(req);
                channel_https_failed(ch, status == 401 || status == 403 ? -EACCES : -EPROTO, detail);
                return;
        }

        /* Keep the answer, drop the transfer: callbacks may start or cancel
         * requests from here on. */
        _cleanup_(freep) uint8_t *resp = TAKE_PTR(req->resp);
        size_t resp_len = req->resp_len;
        char peer[300];
        snprintf(peer, sizeof(peer), "%s", req->peer);
        req_free(req);

        uint64_t generation = ch->generation;
        hs->session_up = true;
        channel_https_up(ch); /* first answer: CONNECTED (before SIGNIN_CONFIRM is handled) */
        if (generation != ch->generation)
                return;

        if (status == 200 && resp_len > 0) {
                r = deliver_frames(hs, resp, resp_len, peer, detail, sizeof(detail));
                if (r > 0)
                        return;
                if (r < 0) {
                        channel_https_failed(ch, r, detail);
                        return;
                }
        }

        /* The chain goes on: the next long poll at once, and frames queued
         * meanwhile in their own request. */
        if (kind == REQ_POLL && !hs->poll) {
                r = start_channel_request(hs, REQ_POLL, ch->https_hold_seconds);
                if (r < 0) {
                        snprintf(detail, sizeof(detail), "Failed to start the next poll to %s: %s", peer,
                                 strerror(-r));
                        channel_https_failed(ch, r, detail);
                        return;
                }
        }
        if (hs->queue_len > 0 && !hs->sender) {
                r = start_channel_request(hs, REQ_SEND, 0);
                if (r < 0) {
                        snprintf(detail, sizeof(detail), "Failed to send queued frames to %s: %s", peer,
                                 strerror(-r));
                        channel_https_failed(ch, r, detail);
                }
        }
}

/* ---- interface to the channel core ---- */

int https_state_new(struct tether_channel *ch, struct https_state **ret) {
        struct https_state *hs = calloc(1, sizeof(*hs));
        CURLMcode m = CURLM_OK;

        if (!hs)
                return -ENOMEM;
        hs->ch = ch;
        hs->multi = curl_multi_init();
        if (!hs->multi) {
                free(hs);
                return -ENOMEM;
        }
        m = curl_multi_setopt(hs->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        if (m == CURLM_OK)
                m = curl_multi_setopt(hs->multi, CURLMOPT_SOCKETDATA, hs);
        if (m == CURLM_OK)
                m = curl_multi_setopt(hs->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer_change);
        if (m == CURLM_OK)
                m = curl_multi_setopt(hs->multi, CURLMOPT_TIMERDATA, hs);
        if (m != CURLM_OK) {
                https_state_free(hs);
                return -EIO;
        }
        *ret = hs;
        return 0;
}

struct https_state *https_state_free(struct https_state *hs) {
        if (!hs)
                return NULL;
        while (hs->reqs) {
                struct https_req *req = hs->reqs;
                req_unlink(hs, req);
                req_free(req);
        }
        if (hs->multi)
                curl_multi_cleanup(hs->multi);
        for (size_t i = 0; i < hs->n_sources; i++)
                sd_event_source_disable_unref(hs->sources[i]);
        free(hs->sources);
        sd_event_source_disable_unref(hs->timer);
        free(hs->queue);
        free(hs);
        return NULL;
}

int https_channel_start(struct tether_channel *ch) {
        struct https_state *hs = ch->https;

        https_channel_stop(ch, false);
        /* hold=0: SIGNIN_CONFIRM at once, so the session knows where it
         * stands; the long polls follow. */
        return start_channel_request(hs, REQ_POLL, 0);
}

void https_channel_stop(struct tether_channel *ch, bool keep_queue) {
        struct https_state *hs = ch->https;

        for (struct https_req *req = hs->reqs, *next; req; req = next) {
                next = req->next;
                if (req->kind == REQ_POLICY)
                        continue;
                req_unlink(hs, req);
                req_free(req);
        }
        hs->session_up = false;
        if (!keep_queue)
                hs->queue_len = 0;
}

int https_channel_send(struct tether_channel *ch, const uint8_t *frame, size_t len) {
        struct https_state *hs = ch->https;
        int r;

        if (!hs->session_up)
                return -ENOTCONN;
        if (hs->queue_len + len > QUEUE_MAX_BYTES)
                return -ENOBUFS;
        if (hs->queue_len + len > hs->queue_cap) {
                size_t cap = hs->queue_cap ? hs->queue_cap : 4096;
                while (cap < hs->queue_len + len)
                        cap *= 2;
                uint8_t *q = realloc(hs->queue, cap);
                if (!q)
                        return -ENOMEM;
                hs->queue = q;
                hs->queue_cap = cap;
        }
        memcpy(hs->queue + hs->queue_len, frame, len);
        hs->queue_len += len;

        if (hs->sender)
                return 0; /* it goes with the next one */
        r = start_channel_request(hs, REQ_SEND, 0);
        if (r < 0) {
                /* Not sent, and not kept either: the caller keeps it. */
                hs->queue_len -= len;
                return r;
        }
        return 0;
}

void https_channel_drain_queue(struct tether_channel *ch,
                               void (*fn)(void *userdata, const uint8_t *frame, size_t len),
                               void *userdata) {
        struct https_state *hs = ch->https;
        size_t off = 0;

        /* The queue holds whole frames that were encoded by the session. */
        while (hs->queue_len - off >= TETHER_FRAME_HEADER_SIZE) {
                const uint8_t *h = hs->queue + off;
                size_t body, sig, n;

                tether_frame_header_lengths(h, &body, &sig);
                n = TETHER_FRAME_HEADER_SIZE + body + sig;

                if (n > hs->queue_len - off)
                        break;
                fn(userdata, h, n);
                off += n;
        }
        hs->queue_len = 0;
}

int https_fetch_policy(struct tether_channel *ch, const char *user, const char *etag,
                       tether_policy_fetched_fn done, void *userdata) {
        struct https_state *hs = ch->https;
        struct https_req *req = NULL;
        char host[300];
        _cleanup_(freep) char *url = NULL;
        /* The port that last answered a poll, not one being tried. */
        unsigned port = ch->https_ports[ch->https_good];
        int r;

        if (etag && strpbrk(etag, "\r\n"))
                return -EINVAL;
        if (user && !*user)
                return -EINVAL;

        r = req_new(hs, REQ_POLICY, (uint16_t)port, &req);
        if (r < 0)
                return r;
        req->done = done;
        req->userdata = userdata;
        req->resp_max = POLICY_MAX_BYTES;

        if (strchr(ch->host, ':'))
                snprintf(host, sizeof(host), "[%s]", ch->host);
        else
                snprintf(host, sizeof(host), "%s", ch->host);
        if (user) {
                char *escaped = curl_easy_escape(req->easy, user, 0);
                if (!escaped) {
                        req_free(req);
                        return -ENOMEM;
                }
                r = asprintf(&url, "https://%s:%u/tether/v1/policy/user/%s", host, port, escaped);
                curl_free(escaped);
        } else
                r = asprintf(&url, "https://%s:%u/tether/v1/policy/machine", host, port);
        if (r < 0) {
                url = NULL;
                req_free(req);
                return -ENOMEM;
        }

        r = setup_common(req, url, POLICY_TIMEOUT_SECONDS);
        if (r >= 0 && etag) {
                _cleanup_(freep) char *h = NULL;
                if (asprintf(&h, "If-None-Match: %s", etag) < 0) {
                        h = NULL;
                        r = -ENOMEM;
                } else {
                        req->headers = curl_slist_append(NULL, h);
                        if (!req->headers)
                                r = -ENOMEM;
                        else
                                r = curl_to_errno(
                                        curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers));
                }
        }
        if (r >= 0)
                r = curl_to_errno(curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L));
        if (r >= 0)
                r = req_submit(hs, req);
        if (r < 0) {
                req_free(req);
                return r;
        }
        return 0;
}

/* ---- the link's operations (channel-internal.h) ---- */

static uint16_t https_begin(struct tether_channel *ch) {
        ch->https_tried = true;
        ch->https_port = ch->https_ports[ch->https_index];
        if (ch->https_ports_left > 0)
                ch->https_ports_left--;
        return ch->https_port;
}

static int https_start(struct tether_channel *ch, const char *peer, char *err, size_t errsize,
                       bool *connect_failure) {
        int r = https_channel_start(ch);

        if (r < 0)
                snprintf(err, errsize, "Failed to start polling %s over HTTPS: %s", peer, strerror(-r));
        *connect_failure = false;
        return r;
}

static int https_send(struct tether_channel *ch, const uint8_t *frame, size_t len) {
        return https_channel_send(ch, frame, len);
}

static void https_stop(struct tether_channel *ch, bool planned) {
        if (ch->https)
                https_channel_stop(ch, false);
}

/* No answer on this HTTPS port yet: the next one may pass where this one is
 * filtered or refused by a proxy. */
static bool https_fail_over(struct tether_channel *ch, bool connect_failure, const char *detail) {
        char next[300];

        if (ch->state != TETHER_CHANNEL_CONNECTING || ch->https_ports_left == 0)
                return false;
        ch->https_index = (ch->https_index + 1) % ch->n_https_ports;
        channel_peer_name(ch, ch->https_ports[ch->https_index], next, sizeof(next));
        log_warning("%s; trying HTTPS on %s", detail, next);
        channel_start_link(ch, &https_link_ops);
        return true;
}

const struct link_ops https_link_ops = {
        .name = "https",
        .begin = https_begin,
        .start = https_start,
        .send = https_send,
        .stop = https_stop,
        .fail_over = https_fail_over,
};
