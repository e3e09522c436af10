/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 over one connection, parsed by http-parser, for both the HTTPS
 * listener (whose endpoints are in https.c) and the admin socket (admin.c).
 *
 * One request at a time per connection: the parser is paused at the end of
 * each message and resumed after its response is queued, so a pipelined
 * request waits its turn. Input not yet parsed waits in a bounded backlog;
 * http_drain parses it in a loop (never by recursion from a response: ten
 * thousand pipelined requests in one read once took one stack frame each),
 * at most MP_HTTP_REQUESTS_PER_ROUND requests a round, and stops while the
 * backlog or the queued output is full: the connection then stops reading
 * its socket until a deferred round (mp_conn_want_input) continues.
 *
 * Before a verified SIGNIN, a fallback poll's body is buffered one frame at
 * a time: the first frame, at most MaxSignInBytes, must be a SIGNIN signed
 * by the TLS client key before anything more of the body is kept.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/http-internal.h"
#include "transport/sign.h"

static void header_done(struct mp_http *h) {
        if (h->hstate == HDR_VALUE && strcasecmp(h->field, "If-None-Match") == 0) {
                h->value[h->value_len] = 0;
                strscpy(h->if_none_match, sizeof(h->if_none_match), h->value);
        }
        if (h->hstate == HDR_VALUE && strcasecmp(h->field, "Expect") == 0 &&
            strcasecmp(h->value, "100-continue") == 0)
                h->expect_continue = true;
        h->field_len = h->value_len = 0;
        h->field[0] = h->value[0] = 0;
}

/* Gives the previous request's body back to the budget; a large buffer is
 * not kept for the next request. */
static void body_release(struct mp_conn *c) {
        struct mp_http *h = c->http;

        if (c->kind == MP_CONN_HTTPS)
                c->srv->body_bytes -= h->body_len;
        h->body_len = 0;
        if (h->body_cap > 64 * 1024) {
                free(h->body);
                h->body = NULL;
                h->body_cap = 0;
        }
}

static int on_message_begin(http_parser *p) {
        struct mp_conn *c = p->data;
        struct mp_http *h = c->http;

        h->url_len = 0;
        h->url_too_long = false;
        body_release(c);
        h->body_too_large = false;
        h->body_over_budget = false;
        h->if_none_match[0] = 0;
        h->expect_continue = false;
        h->hstate = HDR_NONE;
        h->field_len = h->value_len = 0;
        h->body_mode = BODY_NONE;
        h->signin_checked = false;
        h->refused = false;
        h->signin_dec = tether_frame_decoder_free(h->signin_dec);
        h->in_request = true;
        h->request_start_usec = mp_now_usec();
        return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        if (h->url_len + len >= sizeof(h->url)) {
                h->url_too_long = true;
                return 0;
        }
        memcpy(h->url + h->url_len, at, len);
        h->url_len += len;
        h->url[h->url_len] = 0;
        return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        if (h->hstate == HDR_VALUE)
                header_done(h);
        h->hstate = HDR_FIELD;
        if (h->field_len + len < sizeof(h->field)) {
                memcpy(h->field + h->field_len, at, len);
                h->field_len += len;
                h->field[h->field_len] = 0;
        }
        return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        h->hstate = HDR_VALUE;
        if (h->value_len + len < sizeof(h->value)) {
                memcpy(h->value + h->value_len, at, len);
                h->value_len += len;
                h->value[h->value_len] = 0;
        }
        return 0;
}

void mp_http_url_path(const struct mp_http *h, char *path, size_t size) {
        struct http_parser_url u;

        path[0] = 0;
        if (h->url_too_long)
                return;
        http_parser_url_init(&u);
        if (http_parser_parse_url(h->url, h->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
                return;
        snprintf(path, size, "%.*s", (int)u.field_data[UF_PATH].len, h->url + u.field_data[UF_PATH].off);
}

/* Whether the client certificate's key is an approved device's (as for a
 * policy request): such a connection counts as authenticated. */
static bool peer_is_device(struct mp_conn *c) {
        _cleanup_(freep) char *client_id = NULL;
        char fpr[TETHER_FINGERPRINT_LEN];

        if (c->authenticated)
                return true;
        if (!c->peer_key || tether_key_fingerprint(c->peer_key, fpr) < 0 ||
            mp_registry_device_by_fingerprint(c->srv->reg, fpr, &client_id) < 0)
                return false;
        mp_conn_authenticated(c);
        return true;
}

static enum body_mode body_mode_of(struct mp_conn *c, const http_parser *p) {
        char path[MAX_URL];

        if (c->overloaded)
                return BODY_DISCARD;
        if (c->kind == MP_CONN_ADMIN)
                return BODY_ANY;
        mp_http_url_path(c->http, path, sizeof(path));
        if (p->method == HTTP_POST && strcmp(path, "/tether/v1/channel") == 0)
                return BODY_FRAMES;
        /* Other endpoints take a body (a signed upload) only from an
         * approved device's key: a stranger's body is never kept. */
        if (((p->content_length > 0 && p->content_length != ULLONG_MAX) || (p->flags & F_CHUNKED)) &&
            peer_is_device(c))
                return BODY_ANY;
        return BODY_NONE;
}

static int on_headers_complete(http_parser *p) {
        struct mp_conn *c = p->data;
        struct mp_http *h = c->http;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

        if (h->hstate == HDR_VALUE)
                header_done(h);
        h->hstate = HDR_NONE;
        h->body_mode = body_mode_of(c, p);
        if (h->body_mode == BODY_FRAMES) {
                /* the first frame may be no larger than a SIGNIN may be */
                if (tether_frame_decoder_new(c->srv->cfg->max_signin, &h->signin_dec) < 0)
                        return -1;
        }
        /* libcurl asks before sending a larger POST body; without this it
         * waits a second for nothing. */
        if (h->expect_continue && p->content_length > 0 && (uint64_t)p->content_length <= MP_HTTP_MAX_BODY &&
            (h->body_mode == BODY_FRAMES || h->body_mode == BODY_ANY))
                (void)mp_conn_send_bytes(c, cont, sizeof(cont) - 1);
        return 0;
}

static int body_append(struct mp_conn *c, const char *at, size_t len) {
        struct mp_http *h = c->http;

        if (h->body_too_large || h->body_over_budget || h->body_len + len > MP_HTTP_MAX_BODY) {
                h->body_too_large = !h->body_over_budget;
                return 0;
        }
        if (c->kind == MP_CONN_HTTPS) {
                if (c->srv->body_bytes + len > c->srv->cfg->max_body_total) {
                        h->body_over_budget = true;
                        return 0;
                }
                c->srv->body_bytes += len;
        }
        if (h->body_len + len > h->body_cap) {
                size_t cap = h->body_cap ? h->body_cap : 4096;
                uint8_t *t;

                while (cap < h->body_len + len)
                        cap *= 2;
                t = realloc(h->body, cap);
                if (!t)
                        return -ENOMEM;
                h->body = t;
                h->body_cap = cap;
        }
        memcpy(h->body + h->body_len, at, len);
        h->body_len += len;
        return 0;
}

static void body_refuse(struct mp_http *h, enum tether_goodbye_reason reason,
                        const struct tether_diag *diag) {
        h->refused = true;
        h->refused_reason = reason;
        h->refused_diag = *diag;
        h->signin_dec = tether_frame_decoder_free(h->signin_dec);
}

/* The poll's first frame, complete: a SIGNIN signed by the key of the TLS
 * client certificate (mp_signin checks the rest once the body is whole). */
static void signin_check(struct mp_conn *c, const struct tether_frame *frame) {
        struct mp_http *h = c->http;
        struct tether_diag diag = {0};
        int r;

        if (frame->type != TETHER_FRAME_SIGNIN) {
                (void)tether_diag_set(&diag, TETHER_DIAG_BAD_TYPE, "the poll starts with %s, not SIGNIN",
                                      tether_frame_type_name(frame->type));
                body_refuse(h, TETHER_GOODBYE_PROTOCOL_ERROR, &diag);
                return;
        }
        if (!c->peer_key) {
                (void)tether_diag_set(&diag, TETHER_DIAG_BAD_SIGNATURE, "no client certificate");
                body_refuse(h, TETHER_GOODBYE_UNAUTHORIZED, &diag);
                return;
        }
        r = tether_msg_verify(frame, c->peer_key, &diag);
        if (r < 0) {
                if (r != -EBADMSG)
                        (void)tether_diag_set(&diag, TETHER_DIAG_BAD_SIGNATURE, "cannot verify: %s",
                                              strerror(-r));
                body_refuse(h,
                            diag.kind == TETHER_DIAG_BAD_SIGNATURE && r == -EBADMSG
                                    ? TETHER_GOODBYE_UNAUTHORIZED
                                    : TETHER_GOODBYE_PROTOCOL_ERROR,
                            &diag);
                return;
        }
        h->signin_checked = true;
        h->signin_dec = tether_frame_decoder_free(h->signin_dec);
        mp_conn_authenticated(c);
}

/* BODY_FRAMES before the SIGNIN is verified: keeps at most that one frame. */
static int body_signin(struct mp_conn *c, const char *at, size_t len, size_t *ret_used) {
        struct mp_http *h = c->http;
        struct tether_frame *frame = NULL;
        struct tether_diag diag = {0};
        size_t used = 0;
        int r;

        r = tether_frame_decoder_feed(h->signin_dec, (const uint8_t *)at, len, &used, &frame, &diag);
        *ret_used = used;
        if (r == -EBADMSG) {
                body_refuse(h, TETHER_GOODBYE_PROTOCOL_ERROR, &diag);
                return 0;
        }
        if (r < 0)
                return r;
        r = body_append(c, at, used);
        if (r >= 0 && frame)
                signin_check(c, frame);
        tether_frame_free(frame);
        return r;
}

static int on_body(http_parser *p, const char *at, size_t len) {
        struct mp_conn *c = p->data;
        struct mp_http *h = c->http;

        switch (h->body_mode) {
        case BODY_DISCARD:
                return 0;
        case BODY_NONE:
                h->body_too_large = true;
                return 0;
        case BODY_ANY:
                return body_append(c, at, len) < 0 ? -1 : 0;
        case BODY_FRAMES:
                break;
        }
        while (len > 0 && !h->refused && !h->signin_checked) {
                size_t used = 0;

                if (body_signin(c, at, len, &used) < 0)
                        return -1;
                at += used;
                len -= used;
        }
        if (h->refused || len == 0)
                return 0;
        return body_append(c, at, len) < 0 ? -1 : 0;
}

static int on_message_complete(http_parser *p) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        h->complete = true;
        h->in_request = false;
        h->keep_alive = http_should_keep_alive(p);
        http_parser_pause(p, 1);
        return 0;
}

static const http_parser_settings parser_settings = {
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
};

int mp_http_attach(struct mp_conn *c) {
        c->http = calloc(1, sizeof(*c->http));
        if (!c->http)
                return -ENOMEM;
        http_parser_init(&c->http->parser, HTTP_REQUEST);
        c->http->parser.data = c;
        c->http->idle_since_usec = mp_now_usec();
        return 0;
}

void mp_http_free_acks(struct mp_http *h) {
        for (size_t i = 0; i < h->n_acks; i++)
                mp_buf_unref(h->acks[i]);
        free(h->acks);
        h->acks = NULL;
        h->n_acks = 0;
}

void mp_http_free(struct mp_conn *c) {
        struct mp_http *h = c->http;

        if (!h)
                return;
        body_release(c);
        free(h->body);
        free(h->in);
        tether_frame_decoder_free(h->signin_dec);
        mp_http_free_acks(h);
        free(h);
        c->http = NULL;
}

bool mp_http_held(const struct mp_conn *c) {
        return c->http && c->http->held;
}

uint64_t mp_http_hold_deadline(const struct mp_conn *c) {
        return c->http ? c->http->hold_deadline_usec : 0;
}

static const char *status_text(unsigned status) {
        switch (status) {
        case 200:
                return "OK";
        case 204:
                return "No Content";
        case 304:
                return "Not Modified";
        case 400:
                return "Bad Request";
        case 403:
                return "Forbidden";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 409:
                return "Conflict";
        case 413:
                return "Payload Too Large";
        case 500:
                return "Internal Server Error";
        case 503:
                return "Service Unavailable";
        }
        return "Status";
}

int mp_http_respond(struct mp_conn *c, unsigned status, const char *content_type, const char *extra_headers,
                    struct mp_buf *body) {
        struct mp_http *h = c->http;
        char head[1024];
        int n, r;

        if (!h || !h->complete)
                return -EINVAL;
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %u %s\r\nServer: tether-mp\r\nContent-Length: %zu\r\n%s%s%s%s%s\r\n", status,
                     status_text(status), body ? body->len : 0, content_type ? "Content-Type: " : "",
                     content_type ? content_type : "", content_type ? "\r\n" : "",
                     extra_headers ? extra_headers : "", h->keep_alive ? "" : "Connection: close\r\n");
        if (n < 0 || (size_t)n >= sizeof(head))
                return -ENOBUFS;
        r = mp_conn_send_bytes(c, head, (size_t)n);
        if (r >= 0 && body && body->len > 0)
                r = mp_conn_send(c, body);
        if (r < 0)
                return r;
        h->complete = false;
        h->held = false;
        h->idle_since_usec = mp_now_usec();
        if (!h->keep_alive) {
                mp_conn_close_after_flush(c);
                return 0;
        }
        http_parser_pause(&h->parser, 0);
        /* Inside http_drain its loop goes on; otherwise (a held poll
         * answered, an admin waiter) a deferred round parses what waits. */
        if (!h->draining)
                mp_conn_want_input(c);
        return 0;
}

int mp_http_respond_text(struct mp_conn *c, unsigned status, const char *text) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = mp_buf_new(text, strlen(text));

        if (!b)
                return -ENOMEM;
        return mp_http_respond(c, status, "text/plain; charset=utf-8", NULL, b);
}

/* ---- deadlines ---- */

void mp_http_sweep(struct mp_conn *c, uint64_t now) {
        struct mp_http *h = c->http;
        const struct mp_config *cfg = c->srv->cfg;
        uint64_t request_usec = (uint64_t)cfg->request_timeout * 1000000ULL;
        uint64_t idle_usec =
                c->authenticated ? 2ULL * cfg->keepalive * 1000000ULL + 60000000ULL : request_usec;

        if (!h || h->complete)
                return; /* being answered, or a held poll (its own deadline) */
        if (h->in_request && now - h->request_start_usec > request_usec)
                mp_conn_close(c, "request not complete within RequestTimeoutSeconds");
        else if (!h->in_request && c->kind == MP_CONN_HTTPS && now - h->idle_since_usec > idle_usec)
                mp_conn_close(c, c->authenticated ? NULL : "idle without a request");
}

/* ---- dispatch ---- */

static int http_request(struct mp_conn *c) {
        struct mp_http *h = c->http;
        struct http_parser_url u;
        char path[MAX_URL], query[MAX_URL];
        int method = h->parser.method;

        if (c->overloaded || h->body_over_budget)
                return mp_https_overloaded(c);
        if (h->url_too_long)
                return mp_http_respond_text(c, 400, "URL too long\n");
        if (h->body_too_large)
                return mp_http_respond_text(c, 413, "body too large\n");
        http_parser_url_init(&u);
        if (http_parser_parse_url(h->url, h->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
                return mp_http_respond_text(c, 400, "bad URL\n");
        snprintf(path, sizeof(path), "%.*s", (int)u.field_data[UF_PATH].len,
                 h->url + u.field_data[UF_PATH].off);
        query[0] = 0;
        if (u.field_set & (1 << UF_QUERY))
                snprintf(query, sizeof(query), "%.*s", (int)u.field_data[UF_QUERY].len,
                         h->url + u.field_data[UF_QUERY].off);

        if (c->kind == MP_CONN_ADMIN)
                return mp_admin_request(c, method, path, query, h->body, h->body_len);

        if (strcmp(path, "/tether/v1/channel") == 0) {
                if (method != HTTP_POST)
                        return mp_http_respond_text(c, 405, "POST only\n");
                return mp_https_channel(c, query);
        }
        if (strcmp(path, "/tether/v1/policy/machine") == 0 || startswith(path, "/tether/v1/policy/user/")) {
                if (method != HTTP_GET)
                        return mp_http_respond_text(c, 405, "GET only\n");
                return mp_https_policy(c, path);
        }
        return mp_http_respond_text(c, 404, "not found\n");
}

/* Parses what waits in the backlog, one request after another, in a loop:
 * until a request is held (a fallback poll), the connection closes, the
 * input runs out, or this round's share is used up (then a deferred round
 * goes on, so that one connection cannot starve the others). */
static int http_drain(struct mp_conn *c) {
        struct mp_http *h = c->http;
        unsigned served = 0;
        int r = 0;

        h->draining = true;
        while (!c->dead && !c->close_after_flush && !h->complete && h->in_off < h->in_len) {
                size_t n;

                if (served >= MP_HTTP_REQUESTS_PER_ROUND) {
                        mp_conn_want_input(c);
                        break;
                }
                if (c->out_bytes >= MP_CONN_OUT_MAX)
                        break; /* mp_conn_flush resumes once the peer reads */
                n = http_parser_execute(&h->parser, &parser_settings, (const char *)h->in + h->in_off,
                                        h->in_len - h->in_off);
                h->in_off += n;
                if (HTTP_PARSER_ERRNO(&h->parser) == HPE_PAUSED) {
                        served++;
                        r = http_request(c);
                        if (r < 0) {
                                if (!c->dead)
                                        mp_conn_close(c, NULL);
                                break;
                        }
                        continue;
                }
                if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) {
                        log_info("Bad HTTP request from %s: %s", c->peer,
                                 http_errno_description(HTTP_PARSER_ERRNO(&h->parser)));
                        mp_conn_close(c, NULL);
                        r = -EBADMSG;
                        break;
                }
        }
        if (c->http == h) {
                h->draining = false;
                if (h->in_off == h->in_len) {
                        h->in_off = h->in_len = 0;
                } else if (h->in_off > 0) {
                        memmove(h->in, h->in + h->in_off, h->in_len - h->in_off);
                        h->in_len -= h->in_off;
                        h->in_off = 0;
                }
        }
        return r;
}

bool mp_http_input_full(const struct mp_conn *c) {
        const struct mp_http *h = c->http;

        return h && (h->in_len - h->in_off >= MP_HTTP_BACKLOG_MAX || c->out_bytes >= MP_CONN_OUT_MAX);
}

int mp_http_input(struct mp_conn *c, const uint8_t *data, size_t len) {
        struct mp_http *h = c->http;

        if (len > 0) {
                /* the caller stops reading while the backlog is full, so it
                 * holds at most MP_HTTP_BACKLOG_MAX and one read more */
                uint8_t *t = realloc(h->in, h->in_len + len);

                if (!t) {
                        mp_conn_close(c, "out of memory");
                        return -ENOMEM;
                }
                memcpy(t + h->in_len, data, len);
                h->in = t;
                h->in_len += len;
        }
        if (h->draining)
                return 0;
        return http_drain(c);
}
