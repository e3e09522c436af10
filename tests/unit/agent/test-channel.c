/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent channel against fake MPs on 127.0.0.1, all in the test's one
 * sd-event loop: a TLS frame server (transport/tls.h, server side) with
 * sabotage switches (no keepalive answers, hang up after SIGNIN, a frame
 * that never completes), and a small HTTPS server that answers
 * POST /tether/v1/channel (holding long polls like the MP) and the policy
 * GETs. Nothing sleeps: the loop runs until a condition holds or a
 * deadline passes.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "agent/channel-internal.h"
#include "agent/channel.h"
#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/frame.h"
#include "transport/message.h"
#include "transport/sign.h"
#include "transport/tls.h"

#define MSEC 1000ULL
#define SEC 1000000ULL
#define MAX_RECORDS 256

/* ------------------------------------------------------------------ */
/* Fake MP                                                             */
/* ------------------------------------------------------------------ */

struct server;

struct sconn {
        struct server *srv;
        struct sconn *next;
        int fd;
        struct tether_tls_conn *tls;
        sd_event_source *io;
        bool up;
        struct tether_frame_decoder *dec;
        uint8_t *out;
        size_t out_len;
        /* http */
        char *in;
        size_t in_len;
        bool held; /* a long poll waiting for something to send */
};

struct server {
        sd_event *event;
        bool http;
        int lfd;
        uint16_t port;
        sd_event_source *lio;
        struct tether_tls_ctx *ctx;
        struct sconn *conns;

        /* sabotage and behaviour */
        bool answer_keepalive;
        bool close_after_signin;
        bool partial_after_signin;
        bool push_after_signin;
        bool pending_push; /* http: the next answer carries a PUSH */
        bool mute;         /* accepts TCP, never speaks TLS */
        int poll_status;   /* http: answer polls with this status instead */

        /* what happened */
        unsigned accepted;
        unsigned handshakes;
        uint8_t types[MAX_RECORDS]; /* frame types received, in order */
        unsigned n_types;
        unsigned first_types[MAX_RECORDS]; /* http: first frame type of each POST */
        unsigned n_posts;
        unsigned holds[MAX_RECORDS];
        unsigned goodbye_reasons[8];
        char last_path[512];
        unsigned n_gets;
};

static uint8_t *make_frame(uint8_t type, const char *body, size_t *ret_len) {
        static const uint8_t dummy_sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        uint8_t *buf = NULL;
        bool sig = tether_frame_type_signed(type);

        assert_int_equal(tether_frame_encode(type, (const uint8_t *)body, strlen(body),
                                             sig ? dummy_sig : NULL, sig ? sizeof(dummy_sig) : 0,
                                             TETHER_FRAME_DEFAULT_MAX_BODY, &buf, ret_len),
                         0);
        return buf;
}

static void sconn_free(struct sconn *c) {
        struct server *s = c->srv;

        for (struct sconn **p = &s->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        sd_event_source_disable_unref(c->io);
        tether_tls_conn_free(c->tls);
        close(c->fd);
        tether_frame_decoder_free(c->dec);
        free(c->out);
        free(c->in);
        free(c);
}

static void sconn_update(struct sconn *c) {
        assert_true(sd_event_source_set_io_events(c->io, EPOLLIN | (c->out_len ? EPOLLOUT : 0)) >= 0);
}

static int sconn_flush(struct sconn *c) {
        while (c->out_len > 0) {
                enum tether_tls_want want;
                ssize_t n = tether_tls_write(c->tls, c->out, c->out_len, &want);
                if (n == -EAGAIN)
                        break;
                if (n < 0)
                        return (int)n;
                memmove(c->out, c->out + n, c->out_len - (size_t)n);
                c->out_len -= (size_t)n;
        }
        sconn_update(c);
        return 0;
}

static void sconn_write(struct sconn *c, const void *data, size_t len) {
        c->out = realloc(c->out, c->out_len + len);
        assert_non_null(c->out);
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        (void)sconn_flush(c);
}

static void sconn_send_frame(struct sconn *c, uint8_t type, const char *body) {
        size_t len;
        uint8_t *f = make_frame(type, body, &len);
        sconn_write(c, f, len);
        free(f);
}

static void record_type(struct server *s, uint8_t type) {
        if (s->n_types < MAX_RECORDS)
                s->types[s->n_types++] = type;
}

/* Frame server: returns false when the connection was closed. */
static bool frames_on_frame(struct sconn *c, struct tether_frame *frame) {
        struct server *s = c->srv;

        record_type(s, frame->type);
        if (frame->type == TETHER_FRAME_GOODBYE) {
                struct tether_msg *msg = NULL;
                if (tether_msg_open(frame, NULL, &msg, NULL) == 0) {
                        if ((size_t)msg->goodbye.reason < ELEMENTSOF(s->goodbye_reasons))
                                s->goodbye_reasons[msg->goodbye.reason]++;
                        tether_msg_free(msg);
                }
        }
        if (frame->type == TETHER_FRAME_SIGNIN) {
                if (s->close_after_signin) {
                        tether_frame_free(frame);
                        sconn_free(c);
                        return false;
                }
                if (s->partial_after_signin)
                        sconn_write(c, "TH\x01\x03\x00", 5); /* half a header, never more */
                if (s->push_after_signin)
                        sconn_send_frame(c, TETHER_FRAME_PUSH, "<BgbRequestMessage/>");
        }
        if (frame->type == TETHER_FRAME_KEEPALIVE) {
                /* A real, unsigned KEEPALIVE message. */
                struct tether_msg *msg = NULL;
                assert_int_equal(tether_msg_open(frame, NULL, &msg, NULL), 0);
                assert_int_equal(frame->sig_len, 0);
                assert_true(msg->keepalive.timestamp > 0);
                tether_msg_free(msg);
        }
        if (frame->type == TETHER_FRAME_KEEPALIVE && s->answer_keepalive)
                sconn_send_frame(c, TETHER_FRAME_KEEPALIVE,
                                 "<BgbKeepAliveMessage TimeStamp=\"2026-01-01T00:00:00Z\"/>");
        tether_frame_free(frame);
        return true;
}

/* The HTTPS side: one request at a time per connection. */
static void http_respond(struct sconn *c, int status, const char *extra_headers, const uint8_t *body,
                         size_t len) {
        char head[1024];
        const char *reason = status == 200 ? "OK" : status == 304 ? "Not Modified" : "Not Found";
        int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                         reason, len, extra_headers ? extra_headers : "");
        sconn_write(c, head, (size_t)n);
        if (len > 0)
                sconn_write(c, body, len);
}

static void http_answer_poll(struct sconn *c) {
        struct server *s = c->srv;
        size_t a_len, b_len = 0;
        uint8_t *a = make_frame(TETHER_FRAME_SIGNIN_CONFIRM, "<BgbSignInConfirmMessage/>", &a_len);
        uint8_t *b = NULL;
        uint8_t *body;

        if (s->pending_push) {
                b = make_frame(TETHER_FRAME_PUSH, "<BgbRequestMessage/>", &b_len);
                s->pending_push = false;
        }
        body = malloc(a_len + b_len);
        assert_non_null(body);
        memcpy(body, a, a_len);
        if (b)
                memcpy(body + a_len, b, b_len);
        http_respond(c, 200, "Content-Type: application/x-tether-frames\r\n", body, a_len + b_len);
        free(a);
        free(b);
        free(body);
        c->held = false;
}

static void server_push(struct server *s) {
        s->pending_push = true;
        for (struct sconn *c = s->conns; c; c = c->next)
                if (c->held) {
                        http_answer_poll(c);
                        return;
                }
}

static const char *find_header(const char *head, size_t head_len, const char *name, size_t *ret_len) {
        size_t nl = strlen(name);
        const char *p = head, *end = head + head_len;

        while (p < end) {
                const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
                if (!eol)
                        break;
                if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        const char *v = p + nl + 1;
                        while (*v == ' ')
                                v++;
                        *ret_len = (size_t)(eol - v);
                        return v;
                }
                p = eol + 2;
        }
        return NULL;
}

static bool http_try_request(struct sconn *c) {
        struct server *s = c->srv;
        const char *end = c->in ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
        size_t head_len, body_len = 0, vlen;
        const char *v;

        if (!end)
                return false;
        head_len = (size_t)(end - c->in) + 4;
        v = find_header(c->in, head_len, "Content-Length", &vlen);
        if (v) {
                uint64_t n;
                assert_int_equal(parse_u64_n(v, vlen, 0, 1 << 26, &n), 0);
                body_len = n;
        }
        if (c->in_len < head_len + body_len)
                return false;

        const char *sp = memchr(c->in, ' ', head_len);
        assert_non_null(sp);
        const char *sp2 = memchr(sp + 1, ' ', head_len - (size_t)(sp + 1 - c->in));
        assert_non_null(sp2);
        size_t path_len = (size_t)(sp2 - sp - 1);
        assert_true(path_len < sizeof(s->last_path));
        memcpy(s->last_path, sp + 1, path_len);
        s->last_path[path_len] = 0;

        if (strncmp(c->in, "POST ", 5) == 0 && startswith(s->last_path, "/tether/v1/channel?hold=")) {
                const uint8_t *body = (const uint8_t *)c->in + head_len;
                size_t off = 0;
                uint64_t hold = 0;
                bool first = true;

                v = find_header(c->in, head_len, "Content-Type", &vlen);
                assert_non_null(v);
                assert_true(vlen == strlen("application/x-tether-frames") &&
                            memcmp(v, "application/x-tether-frames", vlen) == 0);
                assert_int_equal(parse_u64(s->last_path + strlen("/tether/v1/channel?hold="), 0, 300, &hold),
                                 0);
                while (off < body_len) {
                        struct tether_frame *frame = NULL;
                        size_t consumed = 0;
                        int r = tether_frame_decoder_feed(c->dec, body + off, body_len - off, &consumed,
                                                          &frame, NULL);
                        assert_true(r >= 0);
                        off += consumed;
                        if (r == 0)
                                break;
                        if (first && s->n_posts < MAX_RECORDS) {
                                s->first_types[s->n_posts] = frame->type;
                                s->holds[s->n_posts] = (unsigned)hold;
                                s->n_posts++;
                        }
                        first = false;
                        record_type(s, frame->type);
                        tether_frame_free(frame);
                }
                if (s->poll_status)
                        http_respond(c, s->poll_status, NULL, NULL, 0);
                else if (hold > 0 && !s->pending_push)
                        c->held = true; /* the MP holds: nothing but SIGNIN_CONFIRM to say */
                else
                        http_answer_poll(c);
        } else if (strncmp(c->in, "GET ", 4) == 0) {
                s->n_gets++;
                if (strcmp(s->last_path, "/tether/v1/policy/machine") == 0) {
                        v = find_header(c->in, head_len, "If-None-Match", &vlen);
                        if (v && vlen == 4 && memcmp(v, "\"v1\"", 4) == 0)
                                http_respond(c, 304, "ETag: \"v1\"\r\n", NULL, 0);
                        else
                                http_respond(c, 200, "ETag: \"v1\"\r\nTether-Signature: c2lnbmF0dXJl\r\n",
                                             (const uint8_t *)"<Policy/>", 9);
                } else
                        http_respond(c, 404, NULL, NULL, 0);
        }

        memmove(c->in, c->in + head_len + body_len, c->in_len - head_len - body_len);
        c->in_len -= head_len + body_len;
        return true;
}

static int sconn_on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        struct sconn *c = userdata;
        struct server *s = c->srv;
        uint8_t buf[16384];

        if (!c->up) {
                enum tether_tls_want want;
                int r = tether_tls_handshake(c->tls, &want);
                if (r < 0) {
                        sconn_free(c);
                        return 0;
                }
                if (r == 0) {
                        assert_true(sd_event_source_set_io_events(
                                            c->io, want == TETHER_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN) >= 0);
                        return 0;
                }
                c->up = true;
                s->handshakes++;
                sconn_update(c);
        }
        if (sconn_flush(c) < 0) {
                sconn_free(c);
                return 0;
        }
        for (;;) {
                enum tether_tls_want want;
                ssize_t n = tether_tls_read(c->tls, buf, sizeof(buf), &want);
                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        sconn_free(c);
                        return 0;
                }
                if (s->http) {
                        c->in = realloc(c->in, c->in_len + (size_t)n);
                        assert_non_null(c->in);
                        memcpy(c->in + c->in_len, buf, (size_t)n);
                        c->in_len += (size_t)n;
                        while (http_try_request(c))
                                ;
                        continue;
                }
                size_t off = 0;
                while (off < (size_t)n) {
                        struct tether_frame *frame = NULL;
                        size_t consumed = 0;
                        int r = tether_frame_decoder_feed(c->dec, buf + off, (size_t)n - off, &consumed,
                                                          &frame, NULL);
                        assert_true(r >= 0);
                        off += consumed;
                        if (r == 0)
                                break;
                        if (!frames_on_frame(c, frame))
                                return 0;
                }
        }
        return 0;
}

static int server_on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        struct server *s = userdata;
        struct sconn *c;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (cfd < 0)
                return 0;
        c = calloc(1, sizeof(*c));
        assert_non_null(c);
        c->srv = s;
        c->fd = cfd;
        assert_int_equal(tether_tls_conn_new(s->ctx, cfd, NULL, &c->tls), 0);
        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &c->dec), 0);
        assert_true(sd_event_add_io(s->event, &c->io, cfd, EPOLLIN, sconn_on_io, c) >= 0);
        c->next = s->conns;
        s->conns = c;
        s->accepted++;
        if (s->mute)
                assert_true(sd_event_source_set_enabled(c->io, SD_EVENT_OFF) >= 0);
        return 0;
}

/* Binds 127.0.0.1:0. listen() is separate so that a test can hold a port
 * that refuses connections and open it later. */
static void server_bind(struct server *s, sd_event *e, bool http, const char *cert_pem,
                        const struct tether_key *key) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);

        memset(s, 0, sizeof(*s));
        s->event = e;
        s->http = http;
        s->answer_keepalive = true;
        assert_int_equal(tether_tls_server_new(cert_pem, key, &s->ctx), 0);
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(s->lfd >= 0);
        assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
        s->port = ntohs(a.sin_port);
}

static void server_listen(struct server *s) {
        assert_int_equal(listen(s->lfd, 16), 0);
        assert_true(sd_event_add_io(s->event, &s->lio, s->lfd, EPOLLIN, server_on_accept, s) >= 0);
}

static void server_close_all(struct server *s) {
        while (s->conns)
                sconn_free(s->conns);
}

static void server_done(struct server *s) {
        server_close_all(s);
        sd_event_source_disable_unref(s->lio);
        if (s->lfd >= 0)
                close(s->lfd);
        tether_tls_ctx_free(s->ctx);
}

static unsigned count_type(const struct server *s, uint8_t type) {
        unsigned n = 0;
        for (unsigned i = 0; i < s->n_types; i++)
                n += s->types[i] == type;
        return n;
}

/* A minimal HTTP CONNECT proxy on 127.0.0.1, to show that the configured
 * proxy carries the HTTPS channel. Loopback and tiny payloads: its writes
 * are plain blocking writes, its reads wait for the loop. */
struct proxy {
        sd_event *event;
        int lfd;
        uint16_t port;
        sd_event_source *lio;
        unsigned connects;
        char last_target[128];
        struct pconn *conns;
};

struct pconn {
        struct proxy *p;
        struct pconn *next;
        int cfd, tfd;
        sd_event_source *cio, *tio;
        char head[4096];
        size_t head_len;
};

static void pconn_free(struct pconn *c) {
        for (struct pconn **pp = &c->p->conns; *pp; pp = &(*pp)->next)
                if (*pp == c) {
                        *pp = c->next;
                        break;
                }
        sd_event_source_disable_unref(c->cio);
        sd_event_source_disable_unref(c->tio);
        close(c->cfd);
        if (c->tfd >= 0)
                close(c->tfd);
        free(c);
}

static bool write_all(int fd, const void *data, size_t len) {
        const char *p = data;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n <= 0)
                        return false;
                p += n;
                len -= (size_t)n;
        }
        return true;
}

static int pconn_on_target(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        struct pconn *c = userdata;
        char buf[16384];
        ssize_t n = read(c->tfd, buf, sizeof(buf));

        if (n <= 0 || !write_all(c->cfd, buf, (size_t)n))
                pconn_free(c);
        return 0;
}

static int pconn_on_client(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        struct pconn *c = userdata;
        char buf[16384];
        ssize_t n = read(c->cfd, buf, sizeof(buf));

        if (n <= 0) {
                pconn_free(c);
                return 0;
        }
        if (c->tfd >= 0) {
                if (!write_all(c->tfd, buf, (size_t)n))
                        pconn_free(c);
                return 0;
        }
        assert_true(c->head_len + (size_t)n < sizeof(c->head));
        memcpy(c->head + c->head_len, buf, (size_t)n);
        c->head_len += (size_t)n;
        c->head[c->head_len] = 0;
        if (!strstr(c->head, "\r\n\r\n"))
                return 0;

        /* "CONNECT 127.0.0.1:PORT HTTP/1.1" */
        assert_true(startswith(c->head, "CONNECT 127.0.0.1:"));
        const char *port_s = c->head + strlen("CONNECT 127.0.0.1:");
        const char *sp = strchr(port_s, ' ');
        uint64_t port;
        assert_non_null(sp);
        assert_int_equal(parse_u64_n(port_s, (size_t)(sp - port_s), 1, 65535, &port), 0);
        snprintf(c->p->last_target, sizeof(c->p->last_target), "%.*s", (int)(sp - c->head - 8), c->head + 8);
        c->p->connects++;

        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        c->tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(c->tfd >= 0);
        if (connect(c->tfd, (struct sockaddr *)&a, sizeof(a)) < 0) {
                (void)write_all(c->cfd, "HTTP/1.1 502 Bad Gateway\r\n\r\n", 28);
                pconn_free(c);
                return 0;
        }
        assert_true(sd_event_add_io(c->p->event, &c->tio, c->tfd, EPOLLIN, pconn_on_target, c) >= 0);
        assert_true(write_all(c->cfd, "HTTP/1.1 200 Connection established\r\n\r\n", 39));
        return 0;
}

static int proxy_on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        struct proxy *p = userdata;
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        struct pconn *c;

        if (cfd < 0)
                return 0;
        c = calloc(1, sizeof(*c));
        assert_non_null(c);
        c->p = p;
        c->cfd = cfd;
        c->tfd = -1;
        assert_true(sd_event_add_io(p->event, &c->cio, cfd, EPOLLIN, pconn_on_client, c) >= 0);
        c->next = p->conns;
        p->conns = c;
        return 0;
}

static void proxy_start(struct proxy *p, sd_event *e) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);

        memset(p, 0, sizeof(*p));
        p->event = e;
        p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(p->lfd >= 0);
        assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &alen), 0);
        p->port = ntohs(a.sin_port);
        assert_int_equal(listen(p->lfd, 8), 0);
        assert_true(sd_event_add_io(e, &p->lio, p->lfd, EPOLLIN, proxy_on_accept, p) >= 0);
}

static void proxy_done(struct proxy *p) {
        while (p->conns)
                pconn_free(p->conns);
        sd_event_source_disable_unref(p->lio);
        close(p->lfd);
}

/* ------------------------------------------------------------------ */
/* The agent side                                                      */
/* ------------------------------------------------------------------ */

struct state_rec {
        enum tether_channel_state state;
        char transport[8];
        char detail[1024];
        uint64_t at;
};

struct fixture {
        sd_event *event;
        struct tether_key *mp_key;
        char *mp_cert;
        char mp_fp[TETHER_FINGERPRINT_LEN];
        struct tether_key *dev_key;
        char *dev_cert;
        struct server tcp;
        struct server https;
        struct tether_channel *ch;
        struct tether_channel_config cfg;

        unsigned signins_made;
        uint8_t rx[MAX_RECORDS];
        unsigned n_rx;
        struct state_rec states[MAX_RECORDS];
        unsigned n_states;

        /* policy result */
        bool policy_done;
        int policy_error;
        long policy_status;
        char policy_body[64];
        char policy_sig[64];
        char policy_etag[64];
        bool policy_sig_null;
};

static struct fixture *F;

static uint64_t now_usec(void) {
        uint64_t t;
        assert_true(sd_event_now(F->event, CLOCK_MONOTONIC, &t) >= 0);
        return t;
}

static int cb_make_signin(void *userdata, uint8_t **ret_frame, size_t *ret_len) {
        struct fixture *f = userdata;
        f->signins_made++;
        *ret_frame = make_frame(TETHER_FRAME_SIGNIN, "<BgbSignInMessage/>", ret_len);
        return 0;
}

static void cb_on_frame(void *userdata, struct tether_frame *frame) {
        struct fixture *f = userdata;
        if (f->n_rx < MAX_RECORDS)
                f->rx[f->n_rx++] = frame->type;
        tether_frame_free(frame);
}

static void cb_on_state(void *userdata, enum tether_channel_state state, const char *transport,
                        const char *detail) {
        struct fixture *f = userdata;
        struct state_rec *r;

        assert_non_null(transport);
        assert_non_null(detail);
        if (f->n_states >= MAX_RECORDS)
                return;
        r = &f->states[f->n_states++];
        r->state = state;
        snprintf(r->transport, sizeof(r->transport), "%s", transport);
        snprintf(r->detail, sizeof(r->detail), "%s", detail);
        r->at = now_usec();
}

static const struct tether_channel_callbacks callbacks = {
        .make_signin = cb_make_signin,
        .on_frame = cb_on_frame,
        .on_state = cb_on_state,
};

static int count_state(enum tether_channel_state st, const char *transport) {
        int n = 0;
        for (unsigned i = 0; i < F->n_states; i++)
                if (F->states[i].state == st &&
                    (!transport || strcmp(F->states[i].transport, transport) == 0))
                        n++;
        return n;
}

static const struct state_rec *last_state(enum tether_channel_state st) {
        for (unsigned i = F->n_states; i > 0; i--)
                if (F->states[i - 1].state == st)
                        return &F->states[i - 1];
        return NULL;
}

static unsigned count_rx(uint8_t type) {
        unsigned n = 0;
        for (unsigned i = 0; i < F->n_rx; i++)
                n += F->rx[i] == type;
        return n;
}

static int on_test_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        *(bool *)userdata = true;
        return 0;
}

/* Runs the loop until pred() holds or timeout passes; returns pred(). */
static bool run_until(bool (*pred)(void), uint64_t timeout) {
        sd_event_source *t = NULL;
        bool timed_out = false;

        assert_true(sd_event_add_time_relative(F->event, &t, CLOCK_MONOTONIC, timeout, 0, on_test_timeout,
                                               &timed_out) >= 0);
        while (!pred() && !timed_out)
                assert_true(sd_event_run(F->event, UINT64_MAX) >= 0);
        sd_event_source_disable_unref(t);
        return pred();
}

static bool never(void) {
        return false;
}

static bool is_connected(void) {
        return tether_channel_get_state(F->ch) == TETHER_CHANNEL_CONNECTED;
}

static bool got_disconnected(void) {
        return count_state(TETHER_CHANNEL_DISCONNECTED, NULL) > 0;
}

static bool one_signin(void) {
        return count_type(&F->tcp, TETHER_FRAME_SIGNIN) >= 1;
}

static int setup(void **state) {
        static const char *const alt[] = {"127.0.0.1", "localhost", NULL};
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        F = f;
        assert_true(sd_event_new(&f->event) >= 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->mp_key), 0);
        assert_int_equal(tether_cert_self_signed(f->mp_key, "localhost", alt, 1, &f->mp_cert), 0);
        assert_int_equal(tether_key_fingerprint(f->mp_key, f->mp_fp), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->dev_key), 0);
        assert_int_equal(tether_cert_self_signed(f->dev_key, "device", NULL, 1, &f->dev_cert), 0);

        server_bind(&f->tcp, f->event, false, f->mp_cert, f->mp_key);
        server_bind(&f->https, f->event, true, f->mp_cert, f->mp_key);

        f->cfg = (struct tether_channel_config){
                .host = "127.0.0.1",
                .tcp_port = f->tcp.port,
                .https_port = f->https.port,
                .mode = TETHER_CHANNEL_TCP,
                .pinned_fingerprint = f->mp_fp,
                .cert_pem = f->dev_cert,
                .device_key = f->dev_key,
                .keepalive_seconds = 30,
                .https_hold_seconds = 5,
        };
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        tether_channel_free(f->ch);
        server_done(&f->tcp);
        server_done(&f->https);
        tether_key_free(f->mp_key);
        tether_key_free(f->dev_key);
        free(f->mp_cert);
        free(f->dev_cert);
        sd_event_unref(f->event);
        free(f);
        F = NULL;
        return 0;
}

static void new_channel(void) {
        assert_int_equal(tether_channel_new(F->event, &F->cfg, &callbacks, F, &F->ch), 0);
}

/* ------------------------------------------------------------------ */
/* TCP                                                                 */
/* ------------------------------------------------------------------ */

static bool server_got_signin_and_response(void) {
        return count_type(&F->tcp, TETHER_FRAME_RESPONSE) > 0;
}
static bool client_got_push(void) {
        return count_rx(TETHER_FRAME_PUSH) > 0;
}

/* Connects, SIGNIN is the first frame, then frames flow both ways. */
static void test_tcp_signin_first_and_frames(void **state) {
        uint8_t *resp;
        size_t len;

        server_listen(&F->tcp);
        F->tcp.push_after_signin = true;
        new_channel();

        resp = make_frame(TETHER_FRAME_RESPONSE, "<BgbResponseMessage/>", &len);
        /* Nothing is up yet: the caller keeps the frame. */
        assert_int_equal(tether_channel_send(F->ch, resp, len), -ENOTCONN);
        assert_string_equal(tether_channel_transport_name(F->ch), "");

        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_int_equal(tether_channel_start(F->ch), -EALREADY);
        assert_true(run_until(is_connected, 5 * SEC));
        assert_string_equal(tether_channel_transport_name(F->ch), "tcp");
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "tcp"), 1);
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, "tcp"), 1);
        assert_non_null(strstr(last_state(TETHER_CHANNEL_CONNECTED)->detail, "127.0.0.1:"));

        assert_true(run_until(client_got_push, 5 * SEC));
        assert_int_equal(tether_channel_send(F->ch, resp, len), 0);
        free(resp);
        assert_true(run_until(server_got_signin_and_response, 5 * SEC));

        assert_true(F->tcp.n_types >= 2);
        assert_int_equal(F->tcp.types[0], TETHER_FRAME_SIGNIN);
        assert_int_equal(count_type(&F->tcp, TETHER_FRAME_SIGNIN), 1);
        assert_int_equal(F->signins_made, 1);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
}

static bool two_keepalives_answered(void) {
        return count_type(&F->tcp, TETHER_FRAME_KEEPALIVE) >= 3 && count_rx(TETHER_FRAME_KEEPALIVE) >= 3;
}

/* KEEPALIVE every interval, as a valid unsigned message; answered
 * keepalives keep the channel up well past two intervals. */
static void test_tcp_keepalive_sent(void **state) {
        server_listen(&F->tcp);
        F->cfg.keepalive_seconds = 1;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        uint64_t t0 = now_usec();
        assert_true(run_until(two_keepalives_answered, 6 * SEC));
        /* Not faster than the interval. */
        assert_true(now_usec() - t0 >= 2500 * MSEC);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
        assert_true(is_connected());
}

/* The server stops answering: the channel is declared dead within about
 * two intervals of the first unanswered KEEPALIVE, and not before. */
static void test_tcp_dead_peer(void **state) {
        server_listen(&F->tcp);
        F->tcp.answer_keepalive = false;
        F->cfg.keepalive_seconds = 1;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        uint64_t t0 = now_usec();
        assert_true(run_until(got_disconnected, 6 * SEC));
        uint64_t took = now_usec() - t0;
        /* first KEEPALIVE at 1 s, dead at 1 s + 2 intervals */
        assert_true(took >= 2500 * MSEC);
        assert_true(took <= 5000 * MSEC); /* 4 s, with room for a loaded machine */
        const struct state_rec *d = last_state(TETHER_CHANNEL_DISCONNECTED);
        assert_non_null(strstr(d->detail, "keepalive"));
        assert_string_equal(d->transport, "tcp");
        assert_true(count_type(&F->tcp, TETHER_FRAME_KEEPALIVE) >= 2);
}

static bool reconnected(void) {
        return F->tcp.accepted >= 2 && count_type(&F->tcp, TETHER_FRAME_SIGNIN) >= 2;
}

/* The server hangs up after SIGNIN: DISCONNECTED with the reason, then a
 * new connection (backoff attempt 0: within 1 s) that signs in again. */
static void test_tcp_reconnect_after_close(void **state) {
        server_listen(&F->tcp);
        F->tcp.close_after_signin = true;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 5 * SEC));
        assert_non_null(
                strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "Connection closed by 127.0.0.1:"));
        F->tcp.close_after_signin = false;
        assert_true(run_until(reconnected, 5 * SEC));
        assert_true(run_until(is_connected, 5 * SEC));
        assert_int_equal(F->signins_made, 2);
}

/* A pin that is not the MP's key: the handshake fails, clearly, nothing is
 * sent, and the channel never reports CONNECTED. */
static void test_tcp_wrong_pin(void **state) {
        struct tether_key *other = NULL;
        char fp[TETHER_FINGERPRINT_LEN];

        server_listen(&F->tcp);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &other), 0);
        assert_int_equal(tether_key_fingerprint(other, fp), 0);
        tether_key_free(other);
        F->cfg.pinned_fingerprint = fp;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 5 * SEC));
        const char *detail = last_state(TETHER_CHANNEL_DISCONNECTED)->detail;
        assert_non_null(strstr(detail, "TLS handshake with 127.0.0.1:"));
        assert_non_null(strstr(detail, "failed"));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);
        assert_int_equal(F->tcp.n_types, 0);
        assert_int_equal(F->signins_made, 0);
}

/* A malformed pin is refused at creation. */
static void test_bad_config(void **state) {
        struct tether_channel *ch = NULL;

        F->cfg.pinned_fingerprint = "abcd";
        assert_int_equal(tether_channel_new(F->event, &F->cfg, &callbacks, F, &ch), -EINVAL);
        F->cfg.pinned_fingerprint = F->mp_fp;
        F->cfg.host = "";
        assert_int_equal(tether_channel_new(F->event, &F->cfg, &callbacks, F, &ch), -EINVAL);
        F->cfg.host = "127.0.0.1";
        F->cfg.tcp_port = 0;
        assert_int_equal(tether_channel_new(F->event, &F->cfg, &callbacks, F, &ch), -EINVAL);
        assert_null(ch);
}

static void write_file(const char *path, const char *text) {
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        assert_true(fputs(text, fp) >= 0);
        assert_int_equal(fclose(fp), 0);
}

/* CA bundle + host name instead of a pin: accepted for a name the
 * certificate carries ("localhost", which also makes the link walk past
 * ::1, where nothing listens, to 127.0.0.1); refused when the certificate
 * names another host. */
static void test_tcp_ca_file_and_host(void **state) {
        static const char *const other_names[] = {"mp.example", NULL};
        char dir[] = "/tmp/test-channel-XXXXXX";
        char path[512], path2[512];
        char *other_cert = NULL;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/ca.pem", dir);
        snprintf(path2, sizeof(path2), "%s/other.pem", dir);
        write_file(path, F->mp_cert);

        server_listen(&F->tcp);
        F->cfg.pinned_fingerprint = NULL;
        F->cfg.ca_file = path;
        F->cfg.host = "localhost";
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        F->ch = tether_channel_free(F->ch);
        server_close_all(&F->tcp);

        /* Should fail: the MP now presents a certificate for mp.example
         * (trusted, but the wrong name). */
        assert_int_equal(tether_cert_self_signed(F->mp_key, "mp.example", other_names, 1, &other_cert), 0);
        write_file(path2, other_cert);
        tether_tls_ctx_free(F->tcp.ctx);
        assert_int_equal(tether_tls_server_new(other_cert, F->mp_key, &F->tcp.ctx), 0);
        F->cfg.ca_file = path2;
        F->cfg.host = "127.0.0.1";
        F->n_states = 0;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 5 * SEC));
        assert_non_null(
                strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "TLS handshake with 127.0.0.1:"));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);

        free(other_cert);
        unlink(path);
        unlink(path2);
        rmdir(dir);
}

/* A frame that never completes is a protocol error after the deadline
 * (shortened here), with GOODBYE(protocol-error) sent where possible. */
static void test_tcp_partial_frame_deadline(void **state) {
        struct channel_timing t = {.frame_usec = 700 * MSEC};

        server_listen(&F->tcp);
        F->tcp.partial_after_signin = true;
        new_channel();
        tether_channel_set_timing_for_test(F->ch, &t);
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        uint64_t t0 = now_usec();
        assert_true(run_until(got_disconnected, 5 * SEC));
        uint64_t took = now_usec() - t0;
        assert_true(took >= 600 * MSEC);
        assert_true(took <= 2500 * MSEC);
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "did not arrive whole"));
        F->tcp.partial_after_signin = false;
        assert_true(run_until(is_connected, 5 * SEC)); /* and it comes back */
}

/* Nothing listens: a clear "Connection refused" naming the peer. */
static void test_tcp_refused(void **state) {
        char want[128];

        new_channel(); /* the port is bound but not listening */
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 5 * SEC));
        snprintf(want, sizeof(want), "Failed to connect to 127.0.0.1:%u: Connection refused",
                 (unsigned)F->tcp.port);
        assert_string_equal(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, want);
        assert_string_equal(tether_channel_transport_name(F->ch), "");
        assert_int_equal(tether_channel_get_state(F->ch), TETHER_CHANNEL_DISCONNECTED);
}

static void server_stall(struct server *s) {
        for (struct sconn *c = s->conns; c; c = c->next)
                assert_true(sd_event_source_set_enabled(c->io, SD_EVENT_OFF) >= 0);
}

/* The MP stops reading: once the socket buffers are full, the queued
 * writes make no progress and the link gives up after the write deadline
 * (shortened here) instead of hanging. */
static void test_tcp_write_deadline(void **state) {
        struct channel_timing t = {.write_usec = 600 * MSEC};
        size_t body_len = 512 * 1024, len = 0;
        char *body = malloc(body_len + 1);
        uint8_t *big = NULL;
        int r = 0;

        assert_non_null(body);
        memset(body, 'x', body_len);
        body[body_len] = 0;
        big = make_frame(TETHER_FRAME_RESPONSE, body, &len);
        free(body);

        server_listen(&F->tcp);
        new_channel();
        tether_channel_set_timing_for_test(F->ch, &t);
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        assert_true(run_until(one_signin, 5 * SEC));
        server_stall(&F->tcp);

        /* Far more than loopback buffers hold; the queue limit may refuse
         * the last ones, which is the other half of "never hangs". */
        for (unsigned i = 0; i < 40 && r == 0; i++)
                r = tether_channel_send(F->ch, big, len);
        assert_true(r == 0 || r == -ENOBUFS);
        free(big);
        uint64_t t0 = now_usec();
        assert_true(run_until(got_disconnected, 10 * SEC));
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "made no progress"));
        assert_true(now_usec() - t0 >= 500 * MSEC);
}

/* A frame is written inside send when nothing is queued. When that write
 * fails (here the MP reset the connection), send still returns normally and
 * the failure is reported from the loop, never from inside send (a caller
 * may be deep in a callback); a send after it refuses. */
static void test_tcp_send_failure_reported_from_loop(void **state) {
        struct linger reset = {.l_onoff = 1, .l_linger = 0};
        uint8_t *resp;
        size_t len;

        server_listen(&F->tcp);
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        assert_true(run_until(one_signin, 5 * SEC));

        /* Over loopback the RST reaches the agent's socket at once. */
        for (struct sconn *c = F->tcp.conns; c; c = c->next)
                assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
        server_close_all(&F->tcp);

        resp = make_frame(TETHER_FRAME_RESPONSE, "<BgbResponseMessage/>", &len);
        assert_int_equal(tether_channel_send(F->ch, resp, len), 0);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
        assert_true(tether_channel_send(F->ch, resp, len) < 0);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
        free(resp);

        assert_true(run_until(got_disconnected, 5 * SEC));
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "127.0.0.1:"));
        assert_string_equal(last_state(TETHER_CHANNEL_DISCONNECTED)->transport, "tcp");
}

static bool server_got_goodbye(void) {
        return F->tcp.goodbye_reasons[TETHER_GOODBYE_SHUTDOWN] > 0;
}

/* stop() sends GOODBYE(shutdown) and does not reconnect. */
static void test_tcp_stop_goodbye(void **state) {
        server_listen(&F->tcp);
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        tether_channel_stop(F->ch);
        assert_int_equal(tether_channel_get_state(F->ch), TETHER_CHANNEL_IDLE);
        assert_true(run_until(server_got_goodbye, 5 * SEC));
        (void)run_until(never, 1500 * MSEC);
        assert_int_equal(F->tcp.accepted, 1);
}

static bool two_signins(void) {
        return count_type(&F->tcp, TETHER_FRAME_SIGNIN) >= 2 && is_connected();
}

/* reconnect() with a floor: not back before the floor has passed. */
static void test_tcp_reconnect_floor(void **state) {
        server_listen(&F->tcp);
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 5 * SEC));
        assert_true(run_until(one_signin, 5 * SEC));
        tether_channel_confirmed(F->ch, 20);
        uint64_t t0 = now_usec();
        tether_channel_reconnect(F->ch, 1, "GOODBYE(overloaded) RetryAfterSeconds=1");
        assert_int_equal(tether_channel_get_state(F->ch), TETHER_CHANNEL_DISCONNECTED);
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "overloaded"));
        assert_true(run_until(two_signins, 5 * SEC));
        assert_true(now_usec() - t0 >= 1 * SEC);
}

/* PROTOCOL-v1 7.4: [mp] host lists several addresses, tried in the order
 * given when there is no seed: the first refuses, the second takes the
 * channel. Then a move (GOODBYE(overloaded), RetryAfterSeconds=1) leaves
 * it for the next address no sooner than 1 s, and after a round of
 * failures the channel comes back to the one that works. */
static const struct state_rec *connecting_to(uint16_t port, uint64_t after) {
        char peer[64];

        snprintf(peer, sizeof(peer), "127.0.0.1:%u", (unsigned)port);
        for (unsigned i = 0; i < F->n_states; i++)
                if (F->states[i].state == TETHER_CHANNEL_CONNECTING && F->states[i].at >= after &&
                    strcmp(F->states[i].detail, peer) == 0)
                        return &F->states[i];
        return NULL;
}

static uint64_t move_t0;
static bool tried_refusing_after_move(void) {
        return connecting_to(F->https.port, move_t0) != NULL;
}

static void test_addresses_next_and_move(void **state) {
        char list[128], want[128];

        server_listen(&F->tcp); /* F->https is bound, not listening: refuses */
        snprintf(list, sizeof(list), "127.0.0.1:%u, 127.0.0.1:%u", (unsigned)F->https.port,
                 (unsigned)F->tcp.port);
        F->cfg.host = list;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(one_signin, 5 * SEC));
        assert_true(run_until(is_connected, 5 * SEC));
        assert_non_null(connecting_to(F->https.port, 0));
        snprintf(want, sizeof(want), "Failed to connect to 127.0.0.1:%u: Connection refused",
                 (unsigned)F->https.port);
        assert_string_equal(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, want);
        assert_non_null(connecting_to(F->tcp.port, 0));
        tether_channel_confirmed(F->ch, 20);

        move_t0 = now_usec();
        tether_channel_move(F->ch, 1, "overloaded");
        assert_int_equal(tether_channel_get_state(F->ch), TETHER_CHANNEL_DISCONNECTED);
        assert_true(run_until(tried_refusing_after_move, 5 * SEC));
        assert_true(connecting_to(F->https.port, move_t0)->at - move_t0 >= 1 * SEC);
        /* that failure ends the round: the backoff (at most 1 s for the
         * first), then the address that works again */
        assert_true(run_until(two_signins, 10 * SEC));
}

/* ------------------------------------------------------------------ */
/* HTTPS                                                               */
/* ------------------------------------------------------------------ */

static bool long_poll_held(void) {
        for (struct sconn *c = F->https.conns; c; c = c->next)
                if (c->held)
                        return true;
        return false;
}

static bool https_response_arrived(void) {
        return count_type(&F->https, TETHER_FRAME_RESPONSE) > 0;
}

/* Forced HTTPS: SIGNIN first in every POST, SIGNIN_CONFIRM at once (hold=0
 * first), then held long polls; a PUSH answers the held poll; a frame
 * queued meanwhile goes out at once beside the held poll. */
static void test_https_forced(void **state) {
        uint8_t *resp;
        size_t len;

        server_listen(&F->https);
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 10 * SEC));
        assert_string_equal(tether_channel_transport_name(F->ch), "https");
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, "https"), 1);
        assert_true(run_until(long_poll_held, 5 * SEC));
        assert_true(count_rx(TETHER_FRAME_SIGNIN_CONFIRM) >= 1);
        assert_int_equal(F->https.holds[0], 0);
        assert_int_equal(F->https.holds[F->https.n_posts - 1], 5);

        server_push(&F->https);
        assert_true(run_until(client_got_push, 5 * SEC));

        resp = make_frame(TETHER_FRAME_RESPONSE, "<BgbResponseMessage/>", &len);
        assert_int_equal(tether_channel_send(F->ch, resp, len), 0);
        free(resp);
        assert_true(run_until(https_response_arrived, 5 * SEC));

        for (unsigned i = 0; i < F->https.n_posts; i++)
                assert_int_equal(F->https.first_types[i], TETHER_FRAME_SIGNIN);
        assert_true(F->signins_made >= 3);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
}

static bool on_https(void) {
        return is_connected() && strcmp(tether_channel_transport_name(F->ch), "https") == 0;
}

static bool back_on_tcp(void) {
        return is_connected() && strcmp(tether_channel_transport_name(F->ch), "tcp") == 0 &&
               count_type(&F->tcp, TETHER_FRAME_SIGNIN) >= 1;
}

/* Auto mode: TCP refused -> HTTPS in the same attempt; later TCP opens
 * and the channel moves back to it. */
static void test_auto_fallback_and_back(void **state) {
        struct channel_timing t = {.tcp_probe_usec = 400 * MSEC};
        char want[128];

        server_listen(&F->https); /* TCP port bound, not listening: refused */
        F->cfg.mode = TETHER_CHANNEL_AUTO;
        new_channel();
        tether_channel_set_timing_for_test(F->ch, &t);
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(on_https, 10 * SEC));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "tcp"), 1);
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "https"), 1);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
        snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)F->https.port);
        assert_string_equal(last_state(TETHER_CHANNEL_CONNECTED)->detail, want);

        /* Still on HTTPS while TCP stays closed (probes fail quietly). */
        (void)run_until(never, 1200 * MSEC);
        assert_true(on_https());

        server_listen(&F->tcp);
        assert_true(run_until(back_on_tcp, 5 * SEC));
        assert_int_equal(F->tcp.types[0], TETHER_FRAME_SIGNIN);
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, "tcp"), 1);
        /* The HTTPS session was closed for the session layer first. */
        const struct state_rec *d = last_state(TETHER_CHANNEL_DISCONNECTED);
        assert_non_null(d);
        assert_string_equal(d->transport, "https");
        assert_string_equal(d->detail, "moving the channel back to TCP");
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 1);
}

/* A peer that accepts TCP but never finishes the TLS handshake: the
 * handshake deadline (shortened here) ends it, and in auto mode that counts
 * as "TCP cannot be established": HTTPS takes over. */
static void test_auto_handshake_deadline(void **state) {
        struct channel_timing t = {.handshake_usec = 500 * MSEC};

        F->tcp.mute = true;
        server_listen(&F->tcp);
        server_listen(&F->https);
        F->cfg.mode = TETHER_CHANNEL_AUTO;
        new_channel();
        tether_channel_set_timing_for_test(F->ch, &t);
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(on_https, 10 * SEC));
        assert_int_equal(F->tcp.accepted, 1);
        assert_int_equal(F->tcp.handshakes, 0);
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "https"), 1);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
}

/* Auto mode, both closed: one DISCONNECTED per attempt naming HTTPS. */
static void test_auto_both_closed(void **state) {
        F->cfg.mode = TETHER_CHANNEL_AUTO;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 10 * SEC));
        const struct state_rec *d = last_state(TETHER_CHANNEL_DISCONNECTED);
        assert_string_equal(d->transport, "https");
        assert_non_null(strstr(d->detail, "HTTPS poll to 127.0.0.1:"));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);
}

static void cb_policy(void *userdata, int error, long http_status, const uint8_t *body, size_t len,
                      const char *signature_b64, const char *etag);
static bool policy_done(void);

/* The configured proxy carries the HTTPS channel (CONNECT to the MP's
 * HTTPS port) and the policy fetches. */
static void test_https_via_proxy(void **state) {
        struct proxy px;
        char want[64];

        /* A no_proxy from the environment would bypass the proxy for
         * 127.0.0.1. */
        unsetenv("no_proxy");
        unsetenv("NO_PROXY");
        proxy_start(&px, F->event);
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)px.port);
        server_listen(&F->https);
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        F->cfg.proxy = url;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(on_https, 10 * SEC));
        assert_true(px.connects >= 1);
        snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)F->https.port);
        assert_string_equal(px.last_target, want);

        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_status, 200);

        F->ch = tether_channel_free(F->ch);
        proxy_done(&px);
}

/* Should fail: a proxy that is not there: the poll fails and says so. */
static void test_https_proxy_down(void **state) {
        struct server dead;
        char url[64];

        server_bind(&dead, F->event, false, F->mp_cert, F->mp_key); /* bound, not listening */
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)dead.port);
        server_listen(&F->https);
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        F->cfg.proxy = url;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 10 * SEC));
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "HTTPS poll to 127.0.0.1:"));
        assert_int_equal(F->https.accepted, 0);
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);
        F->ch = tether_channel_free(F->ch);
        server_done(&dead);
}

/* https_port refused: the next port of https_alt_ports carries the
 * channel in the same attempt (a stock proxy lets CONNECT through to 443
 * only), and it becomes the port status and policy fetches use. */
static void test_https_alt_port(void **state) {
        char want[64];

        server_listen(&F->https); /* F->tcp stays bound, not listening: refused */
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        F->cfg.https_port = F->tcp.port;
        F->cfg.https_alt_ports = (struct tether_port_list){.port = {F->tcp.port, F->https.port}, .n = 2};
        new_channel();
        assert_int_equal(tether_channel_https_port(F->ch), F->tcp.port);
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(on_https, 10 * SEC));
        /* The duplicate of https_port is not tried twice. */
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "https"), 2);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 0);
        snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)F->https.port);
        assert_string_equal(last_state(TETHER_CHANNEL_CONNECTED)->detail, want);
        assert_int_equal(tether_channel_https_port(F->ch), F->https.port);
        /* Policies come from the port that answered. */
        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_status, 200);
        assert_int_equal(F->https.n_gets, 1);
}

/* Should fail over to backoff: every HTTPS port refused, each tried once
 * per attempt, then one DISCONNECTED. A port that was only tried never
 * becomes the policy port: fetches still go to https_port. */
static void test_https_alt_ports_all_refused(void **state) {
        struct server dead;

        server_bind(&dead, F->event, false, F->mp_cert, F->mp_key);
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        F->cfg.https_alt_ports = (struct tether_port_list){.port = {dead.port}, .n = 1};
        new_channel(); /* F->https bound, not listening yet: refused */
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 10 * SEC));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTING, "https"), 2);
        assert_int_equal(count_state(TETHER_CHANNEL_DISCONNECTED, NULL), 1);
        tether_channel_stop(F->ch);
        server_listen(&F->https);
        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_error, 0);
        assert_int_equal(F->policy_status, 200);
        F->ch = tether_channel_free(F->ch);
        server_done(&dead);
}

/* tcp_retry_usec from the configuration sets how soon auto mode goes back
 * from HTTPS to TCP (the default, 60 s, would time this out). */
static void test_tcp_retry_interval_configured(void **state) {
        uint64_t start;

        server_listen(&F->https);
        F->cfg.mode = TETHER_CHANNEL_AUTO;
        F->cfg.tcp_retry_usec = 500 * MSEC;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(on_https, 10 * SEC));
        server_listen(&F->tcp);
        start = now_usec();
        assert_true(run_until(back_on_tcp, 5 * SEC));
        /* 500 ms +/- 25 %, and the handshake */
        assert_true(now_usec() - start < 3 * SEC);
}

/* Should fail: an answer other than 200/204 is a failed poll, named with
 * its status; the channel backs off and tries again. */
static void test_https_bad_status(void **state) {
        server_listen(&F->https);
        F->https.poll_status = 403;
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 10 * SEC));
        assert_non_null(strstr(last_state(TETHER_CHANNEL_DISCONNECTED)->detail, "answered HTTP 403"));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);
        F->https.poll_status = 0;
        assert_true(run_until(on_https, 10 * SEC));
}

/* HTTPS with a wrong pin: refused by libcurl, reported, never CONNECTED. */
static void test_https_wrong_pin(void **state) {
        struct tether_key *other = NULL;
        char fp[TETHER_FINGERPRINT_LEN];

        server_listen(&F->https);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &other), 0);
        assert_int_equal(tether_key_fingerprint(other, fp), 0);
        tether_key_free(other);
        F->cfg.pinned_fingerprint = fp;
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(got_disconnected, 10 * SEC));
        const char *detail = last_state(TETHER_CHANNEL_DISCONNECTED)->detail;
        assert_non_null(strstr(detail, "HTTPS poll to 127.0.0.1:"));
        assert_non_null(strcasestr(detail, "pinned"));
        assert_int_equal(count_state(TETHER_CHANNEL_CONNECTED, NULL), 0);
        assert_int_equal(F->https.n_posts, 0);
}

/* Several nodes, each its own key: a list of pins, any one matching, over
 * HTTPS (libcurl's "sha256//a;sha256//b") and over TCP. */
static bool connected_tcp(void) {
        return count_state(TETHER_CHANNEL_CONNECTED, "tcp") > 0;
}

static void test_pin_list_https_and_tcp(void **state) {
        struct tether_key *other = NULL;
        char fp[TETHER_FINGERPRINT_LEN], list[3 * TETHER_FINGERPRINT_LEN];

        server_listen(&F->https);
        server_listen(&F->tcp);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &other), 0);
        assert_int_equal(tether_key_fingerprint(other, fp), 0);
        tether_key_free(other);
        snprintf(list, sizeof(list), "%s,%s", fp, F->mp_fp);
        F->cfg.pinned_fingerprint = list;
        F->cfg.mode = TETHER_CHANNEL_HTTPS;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(is_connected, 10 * SEC));
        assert_true(F->https.n_posts > 0);
        tether_channel_free(F->ch);
        F->ch = NULL;

        F->cfg.mode = TETHER_CHANNEL_TCP;
        new_channel();
        assert_int_equal(tether_channel_start(F->ch), 0);
        assert_true(run_until(connected_tcp, 10 * SEC));
}

static void cb_policy(void *userdata, int error, long http_status, const uint8_t *body, size_t len,
                      const char *signature_b64, const char *etag) {
        struct fixture *f = userdata;

        f->policy_done = true;
        f->policy_error = error;
        f->policy_status = http_status;
        snprintf(f->policy_body, sizeof(f->policy_body), "%.*s", (int)len, body ? (const char *)body : "");
        f->policy_sig_null = !signature_b64;
        snprintf(f->policy_sig, sizeof(f->policy_sig), "%s", signature_b64 ? signature_b64 : "");
        snprintf(f->policy_etag, sizeof(f->policy_etag), "%s", etag ? etag : "");
}

static bool policy_done(void) {
        return F->policy_done;
}

/* Policy fetches: 200 with body, signature and ETag; 304 with the ETag;
 * the user name is escaped into the path; 404 is passed on; a header
 * injection through the ETag is refused. */
static void test_policy_fetch(void **state) {
        server_listen(&F->https);
        new_channel(); /* mode tcp: fetches work whatever the channel does */

        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_error, 0);
        assert_int_equal(F->policy_status, 200);
        assert_string_equal(F->policy_body, "<Policy/>");
        assert_string_equal(F->policy_sig, "c2lnbmF0dXJl");
        assert_string_equal(F->policy_etag, "\"v1\"");
        assert_string_equal(F->https.last_path, "/tether/v1/policy/machine");

        F->policy_done = false;
        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, "\"v1\"", cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_error, 0);
        assert_int_equal(F->policy_status, 304);
        assert_string_equal(F->policy_body, "");
        assert_true(F->policy_sig_null);

        F->policy_done = false;
        assert_int_equal(tether_channel_fetch_policy(F->ch, "ann b/c", NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_status, 404);
        assert_string_equal(F->https.last_path, "/tether/v1/policy/user/ann%20b%2Fc");

        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, "\"x\"\r\nEvil: 1", cb_policy, F),
                         -EINVAL);
        assert_int_equal(tether_channel_fetch_policy(F->ch, "", NULL, cb_policy, F), -EINVAL);
        assert_int_equal(F->https.n_gets, 3);
}

/* Should fail: fetching from a closed port gives a negative errno, no
 * status. */
static void test_policy_fetch_refused(void **state) {
        new_channel();
        assert_int_equal(tether_channel_fetch_policy(F->ch, NULL, NULL, cb_policy, F), 0);
        assert_true(run_until(policy_done, 10 * SEC));
        assert_int_equal(F->policy_error, -ECONNREFUSED);
        assert_int_equal(F->policy_status, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_signin_first_and_frames, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_keepalive_sent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_dead_peer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_reconnect_after_close, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_wrong_pin, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_ca_file_and_host, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_partial_frame_deadline, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_write_deadline, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_send_failure_reported_from_loop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_stop_goodbye, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_reconnect_floor, setup, teardown),
                cmocka_unit_test_setup_teardown(test_addresses_next_and_move, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pin_list_https_and_tcp, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_forced, setup, teardown),
                cmocka_unit_test_setup_teardown(test_auto_fallback_and_back, setup, teardown),
                cmocka_unit_test_setup_teardown(test_auto_handshake_deadline, setup, teardown),
                cmocka_unit_test_setup_teardown(test_auto_both_closed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_wrong_pin, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_bad_status, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_via_proxy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_proxy_down, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_alt_port, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_alt_ports_all_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_retry_interval_configured, setup, teardown),
                cmocka_unit_test_setup_teardown(test_policy_fetch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_policy_fetch_refused, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
