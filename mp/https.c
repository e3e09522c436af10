/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The endpoints of the HTTPS listener: the fallback channel (a poll: the
 * agent's frames in, SIGNIN_CONFIRM, PUSHes and RESPONSE_ACKs out, held
 * until there is something to say) and the signed policies. The HTTP
 * layer under them is http.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "mp/http-internal.h"
#include "transport/sign.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_frame_decoder *, tether_frame_decoder_free)

#define POLICY_MAX (4u * 1024u * 1024u)

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

        r = mp_channel_confirm(srv, wire_status(s->status), s->feature_1_1, &confirm);
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
        mp_http_free_acks(h);
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
        /* A protocol error ends the connection, as on the channel (7.6). */
        if (reason == TETHER_GOODBYE_PROTOCOL_ERROR)
                c->http->keep_alive = false;
        return mp_http_respond(c, 200, "application/x-tether-frames", NULL, b);
}

/* A connection over the caps (mp_conn_new): a poll gets GOODBYE(overloaded)
 * as the contract's refusal, anything else 503; then it closes. */
int mp_https_overloaded(struct mp_conn *c) {
        char path[MAX_URL], headers[64];
        uint32_t retry = c->srv->cfg->overload_retry_after;

        c->http->keep_alive = false;
        mp_http_url_path(c->http, path, sizeof(path));
        if (c->http->parser.method == HTTP_POST && strcmp(path, "/tether/v1/channel") == 0)
                return respond_goodbye(c, TETHER_GOODBYE_OVERLOADED, retry);
        snprintf(headers, sizeof(headers), "Retry-After: %u\r\n", retry);
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = mp_buf_new("overloaded\n", 11);
        if (!b)
                return -ENOMEM;
        return mp_http_respond(c, 503, "text/plain; charset=utf-8", headers, b);
}

/* The body was refused while it arrived (http.c: its first frame was not a
 * SIGNIN signed by the TLS client key). */
static int respond_refused_body(struct mp_conn *c) {
        struct mp_http *h = c->http;
        _cleanup_(freep) char *why = mp_esc(h->refused_diag.text);

        log_warning("Protocol error in the HTTPS poll from %s: %s (%s)", c->peer, LOGSTR(why),
                    tether_diag_kind_name(h->refused_diag.kind));
        return respond_goodbye(c, h->refused_reason, 0);
}

/* A SIGNIN refused: its GOODBYE, as on the channel. */
static int respond_refused_signin(struct mp_conn *c, enum mp_signin_outcome outcome) {
        switch (outcome) {
        case MP_OUTCOME_UNAUTHORIZED:
                return respond_goodbye(c, TETHER_GOODBYE_UNAUTHORIZED, 0);
        case MP_OUTCOME_CONFLICT:
                return respond_goodbye(c, TETHER_GOODBYE_CONFLICT, 0);
        case MP_OUTCOME_DUPLICATE:
                return respond_goodbye(c, TETHER_GOODBYE_CONFLICT, MP_DUPGUARD_RETRY_AFTER);
        default:
                return respond_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
        }
}

/* After the poll's frames: answer at once when there is more than the
 * SIGNIN_CONFIRM to say, or the device is rejected; otherwise hold the
 * request up to `hold` seconds. */
static int poll_reply(struct mp_conn *c, struct mp_session *s, unsigned hold) {
        struct mp_http *h = c->http;
        int r;

        if (s->status == MP_DEVICE_REJECTED || h->n_acks > 0 || hold == 0 || c->srv->shutting_down)
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

/* A response the store could not take (the database is away): the agent
 * re-sends its unacknowledged responses only when it connects again, which
 * GOODBYE(overloaded) makes it do, at another node if it has one
 * (PROTOCOL-v1 7.4). The acknowledgements of this poll go with it: the
 * responses they named come again and are acknowledged as duplicates. */
static int respond_unstored(struct mp_conn *c, struct mp_session *s) {
        log_warning("A response from '%s' could not be stored: answering the poll with "
                    "GOODBYE(overloaded, RetryAfterSeconds=1) so that it is sent again",
                    s->client_id);
        c->session = NULL;
        if (s->conn == c)
                s->conn = NULL;
        return respond_goodbye(c, TETHER_GOODBYE_OVERLOADED, 1);
}

int mp_https_channel(struct mp_conn *c, const char *query) {
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

        if (h->refused)
                return respond_refused_body(c);
        r = tether_frame_decoder_new(srv->cfg->max_frame, &dec);
        if (r < 0)
                return r;
        mp_http_free_acks(h);
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
                        if (outcome != MP_OUTCOME_APPROVED && outcome != MP_OUTCOME_PENDING &&
                            outcome != MP_OUTCOME_REJECTED)
                                return respond_refused_signin(c, outcome);
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
                _cleanup_(freep) char *why = mp_esc(diag.text);

                log_warning("Protocol error in the HTTPS poll from %s: %s (%s)", c->peer, LOGSTR(why),
                            tether_diag_kind_name(diag.kind));
                if (c->session == s && s) {
                        c->session = NULL;
                        if (s->conn == c)
                                s->conn = NULL;
                }
                return respond_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
        }
        if (unstored)
                return respond_unstored(c, s);
        return poll_reply(c, s, hold);
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

/* A policy file, read whole (common/fsutil.h); anything but a regular
 * file counts as no policy. */
static int read_policy_file(const char *path, uint8_t **ret, size_t *ret_len) {
        int r = read_file_at(AT_FDCWD, path, POLICY_MAX, ret, ret_len);

        return r == -EBADF ? -ENOENT : r;
}

int mp_https_policy(struct mp_conn *c, const char *path) {
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
                _cleanup_(freep) char *what = mp_esc(path);

                log_info("Policy request %s from %s refused: no approved device has this client key",
                         LOGSTR(what), c->peer);
                return mp_http_respond_text(c, 403, "sign in first\n");
        }
        mp_conn_authenticated(c);

        const char *user = NULL;
        if (strcmp(path, "/tether/v1/policy/machine") == 0) {
                /* A per-device override wins over the site-wide policy. */
                snprintf(file, sizeof(file), "%s/devices/%s/machine.xml", srv->cfg->policy_dir, client_id);
                r = read_policy_file(file, &body, &body_len);
                if (r == -ENOENT) {
                        snprintf(file, sizeof(file), "%s/machine.xml", srv->cfg->policy_dir);
                        r = read_policy_file(file, &body, &body_len);
                }
        } else {
                user = path + strlen("/tether/v1/policy/user/");
                if (!policy_name_valid(user))
                        return mp_http_respond_text(c, 404, "no such policy\n");
                snprintf(file, sizeof(file), "%s/devices/%s/users/%s.xml", srv->cfg->policy_dir, client_id,
                         user);
                r = read_policy_file(file, &body, &body_len);
                if (r == -ENOENT) {
                        snprintf(file, sizeof(file), "%s/users/%s.xml", srv->cfg->policy_dir, user);
                        r = read_policy_file(file, &body, &body_len);
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
        /* The signing key's serial is part of the tag: after a site key
         * rotation the agent fetches the policy signed by the new key (serial 1
         * keeps the plain tag of older versions). */
        if (mp_site_serial(srv) > 1)
                snprintf(etag, sizeof(etag), "\"%s-%" PRIu32 "\"", hex, mp_site_serial(srv));
        else
                snprintf(etag, sizeof(etag), "\"%s\"", hex);

        if (h->if_none_match[0] &&
            (strcmp(h->if_none_match, etag) == 0 || strcmp(h->if_none_match, "*") == 0)) {
                snprintf(headers, sizeof(headers), "ETag: %s\r\n", etag);
                log_debug("Policy %s for '%s': not modified", path, client_id);
                return mp_http_respond(c, 304, NULL, headers, NULL);
        }

        r = tether_sign(mp_site_signer(srv), TETHER_SIG_TYPE_POLICY, body, body_len, &sig, &sig_len);
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
