/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 over one connection, parsed by http-parser; the HTTPS endpoints
 * (the fallback channel and the policies). The admin socket uses the same
 * parsing and hands requests to admin.c.
 *
 * One request at a time per connection: the parser is paused at the end of
 * each message and resumed after its response is queued, so a pipelined
 * request waits its turn.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"
#include "transport/sign.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_frame_decoder *, tether_frame_decoder_free)

#define MAX_URL 2048
#define MAX_HEADER 1024
#define POLICY_MAX (4u * 1024u * 1024u)

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
        bool complete; /* a whole request is parsed and not yet answered */
        bool keep_alive;
        /* bytes that arrived after the current request */
        uint8_t *rest;
        size_t rest_len;

        /* a held fallback poll */
        bool held;
        uint64_t hold_deadline_usec;
        struct mp_buf **acks;
        size_t n_acks;
};

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

static int on_message_begin(http_parser *p) {
        struct mp_conn *c = p->data;
        struct mp_http *h = c->http;

        h->url_len = 0;
        h->url_too_long = false;
        h->body_len = 0;
        h->body_too_large = false;
        h->if_none_match[0] = 0;
        h->expect_continue = false;
        h->hstate = HDR_NONE;
        h->field_len = h->value_len = 0;
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

static int on_headers_complete(http_parser *p) {
        struct mp_conn *c = p->data;
        struct mp_http *h = c->http;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

        if (h->hstate == HDR_VALUE)
                header_done(h);
        h->hstate = HDR_NONE;
        /* libcurl asks before sending a larger POST body; without this it
         * waits a second for nothing. */
        if (h->expect_continue && p->content_length > 0 && (uint64_t)p->content_length <= MP_HTTP_MAX_BODY)
                (void)mp_conn_send_bytes(c, cont, sizeof(cont) - 1);
        return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        if (h->body_too_large || h->body_len + len > MP_HTTP_MAX_BODY) {
                h->body_too_large = true;
                return 0;
        }
        if (h->body_len + len > h->body_cap) {
                size_t cap = h->body_cap ? h->body_cap : 4096;
                uint8_t *t;

                while (cap < h->body_len + len)
                        cap *= 2;
                t = realloc(h->body, cap);
                if (!t)
                        return -1;
                h->body = t;
                h->body_cap = cap;
        }
        memcpy(h->body + h->body_len, at, len);
        h->body_len += len;
        return 0;
}

static int on_message_complete(http_parser *p) {
        struct mp_http *h = ((struct mp_conn *)p->data)->http;

        h->complete = true;
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
        return 0;
}

static void free_acks(struct mp_http *h) {
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
        free(h->body);
        free(h->rest);
        free_acks(h);
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

static int http_resume(struct mp_conn *c);

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
        if (!h->keep_alive) {
                mp_conn_close_after_flush(c);
                return 0;
        }
        return http_resume(c);
}

int mp_http_respond_text(struct mp_conn *c, unsigned status, const char *text) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = mp_buf_new(text, strlen(text));

        if (!b)
                return -ENOMEM;
        return mp_http_respond(c, status, "text/plain; charset=utf-8", NULL, b);
}

/* ---- the fallback channel ---- */

struct poll_body {
        uint8_t *data;
        size_t len, cap;
};

static int poll_append(struct poll_body *b, const uint8_t *data, size_t len) {
        if (b->len + len > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                uint8_t *t;

                while (cap < b->len + len)
                        cap *= 2;
                t = realloc(b->data, cap);
                if (!t)
                        return -ENOMEM;
                b->data = t;
                b->cap = cap;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

struct poll_ctx {
        struct mp_server *srv;
        const char *client_id;
        struct poll_body *body;
        size_t n;
};

static int poll_push_cb(uint64_t push_id, const uint8_t *frame, size_t len, void *userdata) {
        struct poll_ctx *p = userdata;
        int r;

        r = poll_append(p->body, frame, len);
        if (r < 0)
                return r;
        p->n++;
        log_info("Send push task (PushID: %llu) to client '%s' over HTTPS", (unsigned long long)push_id,
                 p->client_id);
        return mp_registry_target_advance(p->srv->reg, push_id, p->client_id, MP_TARGET_DELIVERED,
                                          time(NULL));
}

static enum tether_signin_status wire_status(enum mp_device_status s) {
        return s == MP_DEVICE_APPROVED  ? TETHER_SIGNIN_APPROVED
               : s == MP_DEVICE_PENDING ? TETHER_SIGNIN_PENDING
                                        : TETHER_SIGNIN_REJECTED;
}

/* Builds SIGNIN_CONFIRM + undelivered PUSHes + RESPONSE_ACKs. *ret_n_more
 * counts the frames after the SIGNIN_CONFIRM. */
static int poll_answer(struct mp_conn *c, struct mp_session *s, struct mp_buf **ret, size_t *ret_n_more) {
        struct mp_server *srv = c->srv;
        struct mp_http *h = c->http;
        _cleanup_(mp_buf_unrefp) struct mp_buf *confirm = NULL;
        struct poll_body body = {0};
        struct poll_ctx ctx = {.srv = srv, .client_id = s->client_id, .body = &body};
        int r;

        r = mp_channel_confirm(srv, wire_status(s->status), &confirm);
        if (r < 0)
                return r;
        r = poll_append(&body, confirm->data, confirm->len);
        if (r >= 0 && s->status == MP_DEVICE_APPROVED)
                r = mp_registry_undelivered(srv->reg, s->client_id, time(NULL), poll_push_cb, &ctx);
        for (size_t i = 0; r >= 0 && i < h->n_acks; i++)
                r = poll_append(&body, h->acks[i]->data, h->acks[i]->len);
        if (r < 0) {
                free(body.data);
                return r;
        }
        *ret_n_more = ctx.n + h->n_acks;
        *ret = mp_buf_take(body.data, body.len);
        return *ret ? 0 : -ENOMEM;
}

int mp_https_finish_poll(struct mp_conn *c) {
        struct mp_http *h = c->http;
        struct mp_session *s = c->session;
        _cleanup_(mp_buf_unrefp) struct mp_buf *answer = NULL;
        size_t n_more = 0;
        int r;

        if (!h || !h->complete || !s)
                return -EINVAL;
        r = poll_answer(c, s, &answer, &n_more);
        if (r < 0) {
                log_warning_errno(r, "Failed to answer the poll of '%s': %m", s->client_id);
                return r;
        }
        free_acks(h);
        c->session = NULL;
        if (s->conn == c)
                s->conn = NULL;
        s->last_seen_usec = mp_now_usec();
        return mp_http_respond(c, 200, "application/x-tether-frames", NULL, answer);
}

static unsigned query_hold(const char *query) {
        uint64_t v = MP_HOLD_DEFAULT;

        /* "hold=N" among '&'-separated pairs; anything else is ignored. */
        for (const char *q = query; q && *q;) {
                const char *end = strchrnul(q, '&');

                if (startswith(q, "hold=")) {
                        if (parse_u64_n(q + 5, (size_t)(end - q - 5), 0, UINT64_MAX, &v) < 0)
                                v = MP_HOLD_DEFAULT;
                }
                q = *end ? end + 1 : end;
        }
        return v > MP_HOLD_MAX ? MP_HOLD_MAX : (unsigned)v;
}

/* A refused poll. The contract says the fallback always answers 200: the
 * refusal travels as one GOODBYE frame, which the agent handles exactly as
 * on the TCP channel (conflict, unauthorized, protocol-error). */
static int respond_goodbye(struct mp_conn *c, enum tether_goodbye_reason reason, uint32_t retry_after) {
        struct tether_msg msg = {.type = TETHER_FRAME_GOODBYE};
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = NULL;
        uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        msg.goodbye.reason = reason;
        msg.goodbye.retry_after_seconds = retry_after;
        r = tether_msg_seal(&msg, NULL, c->srv->cfg->max_frame, &frame, &len);
        if (r < 0)
                return mp_http_respond_text(c, 500, "refused\n");
        b = mp_buf_take(frame, len);
        if (!b)
                return -ENOMEM;
        return mp_http_respond(c, 200, "application/x-tether-frames", NULL, b);
}

static int https_channel(struct mp_conn *c, const char *query) {
        struct mp_server *srv = c->srv;
        struct mp_http *h = c->http;
        _cleanup_(tether_frame_decoder_freep) struct tether_frame_decoder *dec = NULL;
        struct tether_diag diag = {0};
        struct mp_session *s = NULL;
        const uint8_t *p = h->body;
        size_t left = h->body_len;
        bool first = true, unstored = false;
        unsigned hold = query_hold(query);
        int r;

        r = tether_frame_decoder_new(srv->cfg->max_frame, &dec);
        if (r < 0)
                return r;
        free_acks(h);
        while (left > 0) {
                struct tether_frame *frame = NULL;
                size_t used = 0;

                r = tether_frame_decoder_feed(dec, p, left, &used, &frame, &diag);
                if (r < 0)
                        break;
                p += used;
                left -= used;
                if (r == 0)
                        continue;
                if (first) {
                        enum mp_signin_outcome outcome;

                        first = false;
                        r = mp_signin(c, frame, hold > 0 ? MP_VIA_LONG_POLL : MP_VIA_QUICK_POLL, &outcome,
                                      &s);
                        tether_frame_free(frame);
                        if (r < 0)
                                return mp_http_respond_text(c, 500, "internal error\n");
                        switch (outcome) {
                        case MP_OUTCOME_PROTOCOL_ERROR:
                                return respond_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
                        case MP_OUTCOME_UNAUTHORIZED:
                                return respond_goodbye(c, TETHER_GOODBYE_UNAUTHORIZED, 0);
                        case MP_OUTCOME_CONFLICT:
                                return respond_goodbye(c, TETHER_GOODBYE_CONFLICT, 0);
                        case MP_OUTCOME_DUPLICATE:
                                return respond_goodbye(c, TETHER_GOODBYE_CONFLICT, MP_DUPGUARD_RETRY_AFTER);
                        default:
                                break;
                        }
                        c->session = s;
                        if (mp_signin_takes_over(s, hold > 0 ? MP_VIA_LONG_POLL : MP_VIA_QUICK_POLL))
                                s->conn = c;
                        continue;
                }
                if (frame->type == TETHER_FRAME_SIGNIN) {
                        r = tether_diag_set(&diag, TETHER_DIAG_BAD_TYPE, "a second SIGNIN in one poll");
                } else {
                        r = mp_session_frame(s, c, frame, &h->acks, &h->n_acks, &diag);
                        if (r == -EAGAIN) {
                                unstored = true;
                                r = 0;
                        } else if (r < 0 && r != -EBADMSG) {
                                log_warning_errno(r, "Failed to handle %s from '%s', ignoring: %m",
                                                  tether_frame_type_name(frame->type), s->client_id);
                                r = 0;
                        }
                }
                tether_frame_free(frame);
                if (r < 0)
                        break;
        }
        if (r >= 0 && tether_frame_decoder_partial(dec))
                r = tether_diag_set(&diag, TETHER_DIAG_TRUNCATED, "the poll body ends inside a frame");
        if (r >= 0 && first)
                r = tether_diag_set(&diag, TETHER_DIAG_MISSING_ELEMENT,
                                    "the poll does not start with SIGNIN");
        if (r < 0) {
                log_warning("Protocol error in the HTTPS poll from %s: %s (%s)", c->peer, diag.text,
                            tether_diag_kind_name(diag.kind));
                if (c->session == s && s) {
                        c->session = NULL;
                        if (s->conn == c)
                                s->conn = NULL;
                }
                return respond_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
        }
        if (unstored) {
                /* A response the store could not take (the database is
                 * away): the agent re-sends its unacknowledged responses
                 * only when it connects again, which GOODBYE(overloaded)
                 * makes it do, at another node if it has one (PROTOCOL-v1
                 * 7.4). The acknowledgements of this poll go with it: the
                 * responses they named come again and are acknowledged as
                 * duplicates. */
                log_warning("A response from '%s' could not be stored: answering the poll with "
                            "GOODBYE(overloaded, RetryAfterSeconds=1) so that it is sent again",
                            s->client_id);
                c->session = NULL;
                if (s->conn == c)
                        s->conn = NULL;
                return respond_goodbye(c, TETHER_GOODBYE_OVERLOADED, 1);
        }

        /* Answer at once when there is more than the SIGNIN_CONFIRM to say,
         * or the device is rejected; otherwise hold the request. */
        if (s->status == MP_DEVICE_REJECTED || h->n_acks > 0 || hold == 0 || srv->shutting_down)
                return mp_https_finish_poll(c);
        if (s->status == MP_DEVICE_APPROVED) {
                _cleanup_(mp_buf_unrefp) struct mp_buf *answer = NULL;
                size_t n_more = 0;

                /* Cheap check for queued pushes: build the answer; if it
                 * carries pushes, send it. */
                r = poll_answer(c, s, &answer, &n_more);
                if (r < 0)
                        return mp_http_respond_text(c, 500, "internal error\n");
                if (n_more > 0) {
                        c->session = NULL;
                        if (s->conn == c)
                                s->conn = NULL;
                        s->last_seen_usec = mp_now_usec();
                        return mp_http_respond(c, 200, "application/x-tether-frames", NULL, answer);
                }
        }
        h->held = true;
        h->hold_deadline_usec = mp_now_usec() + (uint64_t)hold * 1000000ULL;
        return 0;
}

/* ---- policies ---- */

static bool policy_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = name[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '.' || ch == '_' || ch == '-'))
                        return false;
        }
        return true;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -1;
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -ENOENT;
        if ((uint64_t)st.st_size > POLICY_MAX)
                return -EFBIG;
        cap = (size_t)st.st_size + 1;
        buf = malloc(cap);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + len, cap - len);
                if (n < 0) {
                        free(buf);
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len == cap) {
                        free(buf);
                        return -EFBIG; /* grew while reading */
                }
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

static int https_policy(struct mp_conn *c, const char *path) {
        struct mp_server *srv = c->srv;
        struct mp_http *h = c->http;
        _cleanup_(freep) char *client_id = NULL, *sig_b64 = NULL;
        _cleanup_(freep) uint8_t *body = NULL, *sig = NULL;
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = NULL;
        char fpr[TETHER_FINGERPRINT_LEN], file[4096], etag[80], headers[2048];
        uint8_t digest[32];
        char hex[65];
        size_t body_len = 0, sig_len = 0;
        int r;

        if (!c->peer_key || tether_key_fingerprint(c->peer_key, fpr) < 0 ||
            mp_registry_device_by_fingerprint(srv->reg, fpr, &client_id) < 0) {
                log_info("Policy request %s from %s refused: no approved device has this client key", path,
                         c->peer);
                return mp_http_respond_text(c, 403, "sign in first\n");
        }

        const char *user = NULL;
        if (strcmp(path, "/tether/v1/policy/machine") == 0) {
                /* A per-device override wins over the site-wide policy. */
                snprintf(file, sizeof(file), "%s/devices/%s/machine.xml", srv->cfg->policy_dir, client_id);
                r = read_file(file, &body, &body_len);
                if (r == -ENOENT) {
                        snprintf(file, sizeof(file), "%s/machine.xml", srv->cfg->policy_dir);
                        r = read_file(file, &body, &body_len);
                }
        } else {
                user = path + strlen("/tether/v1/policy/user/");
                if (!policy_name_valid(user))
                        return mp_http_respond_text(c, 404, "no such policy\n");
                snprintf(file, sizeof(file), "%s/devices/%s/users/%s.xml", srv->cfg->policy_dir, client_id,
                         user);
                r = read_file(file, &body, &body_len);
                if (r == -ENOENT) {
                        snprintf(file, sizeof(file), "%s/users/%s.xml", srv->cfg->policy_dir, user);
                        r = read_file(file, &body, &body_len);
                }
        }
        if (r == -ENOENT || r == -ELOOP)
                return mp_http_respond_text(c, 404, "no such policy\n");
        if (r < 0) {
                log_warning_errno(r, "Failed to read policy '%s': %m", file);
                return mp_http_respond_text(c, 500, "policy unreadable\n");
        }

        if (EVP_Digest(body, body_len, digest, NULL, EVP_sha256(), NULL) != 1)
                return mp_http_respond_text(c, 500, "digest failed\n");
        hex_encode(digest, sizeof(digest), hex);
        snprintf(etag, sizeof(etag), "\"%s\"", hex);

        if (h->if_none_match[0] &&
            (strcmp(h->if_none_match, etag) == 0 || strcmp(h->if_none_match, "*") == 0)) {
                snprintf(headers, sizeof(headers), "ETag: %s\r\n", etag);
                log_debug("Policy %s for '%s': not modified", path, client_id);
                return mp_http_respond(c, 304, NULL, headers, NULL);
        }

        r = tether_sign(srv->site_key, TETHER_SIG_TYPE_POLICY, body, body_len, &sig, &sig_len);
        if (r >= 0)
                r = tether_base64_encode(sig, sig_len, &sig_b64);
        if (r < 0)
                return mp_http_respond_text(c, 500, "signing failed\n");
        snprintf(headers, sizeof(headers), "ETag: %s\r\nTether-Signature: %s\r\nCache-Control: no-cache\r\n",
                 etag, sig_b64);
        b = mp_buf_new(body, body_len);
        if (!b)
                return -ENOMEM;
        log_info("Served policy %s (%s) to client '%s' at %s", path, etag, client_id, c->peer);
        return mp_http_respond(c, 200, "application/xml", headers, b);
}

/* ---- dispatch ---- */

static int http_request(struct mp_conn *c) {
        struct mp_http *h = c->http;
        struct http_parser_url u;
        char path[MAX_URL], query[MAX_URL];
        int method = h->parser.method;

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
                return https_channel(c, query);
        }
        if (strcmp(path, "/tether/v1/policy/machine") == 0 || startswith(path, "/tether/v1/policy/user/")) {
                if (method != HTTP_GET)
                        return mp_http_respond_text(c, 405, "GET only\n");
                return https_policy(c, path);
        }
        return mp_http_respond_text(c, 404, "not found\n");
}

static int http_feed(struct mp_conn *c, const uint8_t *data, size_t len) {
        struct mp_http *h = c->http;
        size_t n;
        int r;

        n = http_parser_execute(&h->parser, &parser_settings, (const char *)data, len);
        if (HTTP_PARSER_ERRNO(&h->parser) == HPE_PAUSED) {
                /* A whole request: keep what follows for later. */
                if (n < len) {
                        uint8_t *t = realloc(h->rest, h->rest_len + len - n);
                        if (!t)
                                return -ENOMEM;
                        memcpy(t + h->rest_len, data + n, len - n);
                        h->rest = t;
                        h->rest_len += len - n;
                }
                r = http_request(c);
                if (r < 0 && !c->dead)
                        mp_conn_close(c, NULL);
                return r;
        }
        if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) {
                log_info("Bad HTTP request from %s: %s", c->peer,
                         http_errno_description(HTTP_PARSER_ERRNO(&h->parser)));
                mp_conn_close(c, NULL);
                return -EBADMSG;
        }
        return 0;
}

/* After a response: parse whatever was already received. */
static int http_resume(struct mp_conn *c) {
        struct mp_http *h = c->http;
        uint8_t *rest;
        size_t len;

        http_parser_pause(&h->parser, 0);
        if (h->rest_len == 0)
                return 0;
        rest = TAKE_PTR(h->rest);
        len = h->rest_len;
        h->rest_len = 0;
        int r = http_feed(c, rest, len);
        free(rest);
        return r;
}

int mp_http_input(struct mp_conn *c, const uint8_t *data, size_t len) {
        struct mp_http *h = c->http;

        if (h->complete) {
                /* Still answering (or holding) the previous request. */
                uint8_t *t;

                if (h->rest_len + len > MP_HTTP_MAX_BODY) {
                        mp_conn_close(c, "too much pipelined input");
                        return -ENOBUFS;
                }
                t = realloc(h->rest, h->rest_len + len);
                if (!t)
                        return -ENOMEM;
                memcpy(t + h->rest_len, data, len);
                h->rest = t;
                h->rest_len += len;
                return 0;
        }
        return http_feed(c, data, len);
}
