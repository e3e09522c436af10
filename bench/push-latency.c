/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tether-bench-push: push-to-signed-response latency of one real tetherd.
 *
 * This program is a minimal management point built on transport/ only: it
 * makes a site key and a TLS certificate in DIR, listens on loopback, lets
 * one agent sign in, then sends N signed PUSH frames one after another. For
 * each it measures, on CLOCK_MONOTONIC, the time from the first byte written
 * to the PUSH_ACK, and to a RESPONSE whose signature has been verified
 * against the agent's key: "push to signed response". Every RESPONSE is
 * acknowledged (RESPONSE_ACK), as an MP does.
 *
 * The PUSH bodies are signed before the clock starts: an MP signs one body
 * per fan-out, not per device, so that cost is not the agent's.
 *
 * Usage: tether-bench-push --dir DIR [--pushes N] [--warmup N] [--type T]
 *                          [--keepalive S] [--out FILE] [--timeout S] [--go-file F]
 * Writes DIR/site.pub, DIR/tls.crt and, once listening, DIR/ports
 * ("tcp=PORT"). Prints median, p99 and max; --out gets one line per push:
 * "ack_us response_us return_code".
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/frame.h"
#include "transport/guid.h"
#include "transport/message.h"
#include "transport/sign.h"
#include "transport/tls.h"

struct link {
        int fd;
        struct tether_tls_conn *tls;
        struct tether_frame_decoder *dec;
        uint8_t buf[65536];
        size_t len, off;
        int timeout_ms;
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int wait_fd(int fd, enum tether_tls_want want, int timeout_ms) {
        struct pollfd p = {.fd = fd, .events = want == TETHER_TLS_WANT_WRITE ? POLLOUT : POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r < 0)
                return -errno;
        return r == 0 ? -ETIMEDOUT : 0;
}

static int link_write(struct link *l, const uint8_t *data, size_t len) {
        while (len > 0) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_write(l->tls, data, len, &want);
                if (n == -EAGAIN) {
                        int r = wait_fd(l->fd, want, l->timeout_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (n < 0)
                        return (int)n;
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Reads the next whole frame. */
static int link_read_frame(struct link *l, struct tether_frame **ret) {
        for (;;) {
                if (l->off < l->len) {
                        size_t used = 0;
                        struct tether_diag diag = {0};
                        int r = tether_frame_decoder_feed(l->dec, l->buf + l->off, l->len - l->off, &used,
                                                          ret, &diag);
                        l->off += used;
                        if (r < 0) {
                                fprintf(stderr, "bench: bad frame from the agent: %s\n", diag.text);
                                return r;
                        }
                        if (r == 1)
                                return 0;
                        continue;
                }
                l->off = l->len = 0;
                enum tether_tls_want want = TETHER_TLS_WANT_READ;
                ssize_t n = tether_tls_read(l->tls, l->buf, sizeof(l->buf), &want);
                if (n == -EAGAIN) {
                        if (tether_tls_pending(l->tls))
                                continue;
                        int r = wait_fd(l->fd, want, l->timeout_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET;
                if (n < 0)
                        return (int)n;
                l->len = (size_t)n;
        }
}

static int send_msg(struct link *l, const struct tether_msg *m, const struct tether_key *signer) {
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t len = 0;
        int r = tether_msg_seal(m, signer, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &len);
        if (r < 0)
                return r;
        return link_write(l, frame, len);
}

static int write_file(const char *path, const char *text, mode_t mode) {
        _cleanup_(closep) int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len)
                return -EIO;
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void print_stats(const char *what, uint64_t *v, size_t n) {
        if (n == 0)
                return;
        qsort(v, n, sizeof(*v), cmp_u64);
        size_t p99 = (size_t)((double)(n - 1) * 0.99 + 0.5);
        printf("%-28s n=%zu median=%.3f ms p99=%.3f ms max=%.3f ms min=%.3f ms\n", what, n,
               (double)v[(n - 1) / 2] / 1e6, (double)v[p99] / 1e6, (double)v[n - 1] / 1e6,
               (double)v[0] / 1e6);
}

static void tls_ctx_freep(struct tether_tls_ctx **p) {
        tether_tls_ctx_free(*p);
}
static void tls_conn_freep(struct tether_tls_conn **p) {
        tether_tls_conn_free(*p);
}
static void key_freep(struct tether_key **p) {
        tether_key_free(*p);
}
static void msg_freep(struct tether_msg **p) {
        tether_msg_free(*p);
}
static void frame_freep(struct tether_frame **p) {
        tether_frame_free(*p);
}
static void decoder_freep(struct tether_frame_decoder **p) {
        tether_frame_decoder_free(*p);
}

struct options {
        const char *dir;
        const char *out;
        const char *go_file;
        uint64_t pushes, warmup, type, keepalive, timeout;
};

static int parse_args(int argc, char **argv, struct options *o) {
        static const struct option longopts[] = {
                {"dir", required_argument, NULL, 'd'},
                {"pushes", required_argument, NULL, 'n'},
                {"warmup", required_argument, NULL, 'w'},
                {"type", required_argument, NULL, 't'},
                {"keepalive", required_argument, NULL, 'k'},
                {"out", required_argument, NULL, 'o'},
                {"timeout", required_argument, NULL, 'T'},
                {"go-file", required_argument, NULL, 'g'},
                {NULL, 0, NULL, 0},
        };
        *o = (struct options){.pushes = 10000, .warmup = 100, .type = 1, .keepalive = 180, .timeout = 30};
        int c;
        while ((c = getopt_long(argc, argv, "", longopts, NULL)) >= 0) {
                int r = 0;
                switch (c) {
                case 'd':
                        o->dir = optarg;
                        break;
                case 'o':
                        o->out = optarg;
                        break;
                case 'g':
                        o->go_file = optarg;
                        break;
                case 'n':
                        r = parse_u64(optarg, 1, 10000000, &o->pushes);
                        break;
                case 'w':
                        r = parse_u64(optarg, 0, 1000000, &o->warmup);
                        break;
                case 't':
                        r = parse_u64(optarg, 1, 1000, &o->type);
                        break;
                case 'k':
                        r = parse_u64(optarg, 1, 86400, &o->keepalive);
                        break;
                case 'T':
                        r = parse_u64(optarg, 1, 3600, &o->timeout);
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0) {
                        fprintf(stderr, "bench: bad value for an option: %s\n", optarg);
                        return r;
                }
        }
        if (!o->dir) {
                fprintf(stderr, "usage: tether-bench-push --dir DIR [--pushes N] [--warmup N] [--type T] "
                                "[--keepalive S] [--out FILE] [--timeout S]\n");
                return -EINVAL;
        }
        return 0;
}

static int setup_keys(const char *dir, struct tether_key **site, struct tether_key **tls_key, char **cert) {
        char path[4096];
        int r = tether_key_generate(TETHER_KEY_EC_P256, site);
        if (r < 0)
                return r;
        r = tether_key_generate(TETHER_KEY_EC_P256, tls_key);
        if (r < 0)
                return r;
        static const char *const names[] = {"localhost", "127.0.0.1", NULL};
        r = tether_cert_self_signed(*tls_key, "localhost", names, 30, cert);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/site.pub", dir);
        r = tether_key_save_public(*site, path);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/tls.crt", dir);
        return write_file(path, *cert, 0644);
}

static int listen_loopback(const char *dir, int *ret_fd) {
        _cleanup_(closep) int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof(sa);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
                return -errno;
        char path[4096], text[64];
        snprintf(path, sizeof(path), "%s/ports", dir);
        snprintf(text, sizeof(text), "tcp=%u\n", ntohs(sa.sin_port));
        int r = write_file(path, text, 0644);
        if (r < 0)
                return r;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Accepts the agent, completes TLS, verifies its SIGNIN, confirms it. */
static int sign_in(struct link *l, int listen_fd, struct tether_tls_ctx *ctx, const struct tether_key *site,
                   uint64_t keepalive, struct tether_key **ret_device, char client_id[TETHER_GUID_LEN]) {
        int r = wait_fd(listen_fd, TETHER_TLS_WANT_READ, l->timeout_ms);
        if (r < 0)
                return r;
        l->fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (l->fd < 0)
                return -errno;
        int one = 1;
        (void)setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r = tether_tls_conn_new(ctx, l->fd, NULL, &l->tls);
        if (r < 0)
                return r;
        for (;;) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                r = tether_tls_handshake(l->tls, &want);
                if (r == 1)
                        break;
                if (r < 0) {
                        fprintf(stderr, "bench: TLS handshake: %s\n", tether_tls_conn_error(l->tls));
                        return r;
                }
                r = wait_fd(l->fd, want, l->timeout_ms);
                if (r < 0)
                        return r;
        }
        _cleanup_(key_freep) struct tether_key *cert_key = NULL;
        r = tether_tls_peer_key(l->tls, &cert_key);
        if (r < 0)
                return r;
        _cleanup_(frame_freep) struct tether_frame *f = NULL;
        r = link_read_frame(l, &f);
        if (r < 0)
                return r;
        if (f->type != TETHER_FRAME_SIGNIN) {
                fprintf(stderr, "bench: first frame is %s, not SIGNIN\n", tether_frame_type_name(f->type));
                return -EPROTO;
        }
        struct tether_diag diag = {0};
        _cleanup_(msg_freep) struct tether_msg *m = NULL;
        r = tether_msg_open(f, cert_key, &m, &diag);
        if (r < 0) {
                fprintf(stderr, "bench: SIGNIN refused: %s\n", diag.text);
                return r;
        }
        strscpy(client_id, TETHER_GUID_LEN, m->signin.client_id);

        _cleanup_(msg_freep) struct tether_msg *c = NULL;
        r = tether_msg_new(TETHER_FRAME_SIGNIN_CONFIRM, &c);
        if (r < 0)
                return r;
        c->signin_confirm.timestamp = time(NULL);
        c->signin_confirm.message_version = 1;
        c->signin_confirm.status = TETHER_SIGNIN_APPROVED;
        c->signin_confirm.keepalive_seconds = (uint32_t)keepalive;
        r = tether_key_spki_base64(site, &c->signin_confirm.site_public_key);
        if (r < 0)
                return r;
        r = send_msg(l, c, site);
        if (r < 0)
                return r;
        *ret_device = TAKE_PTR(cert_key);
        return 0;
}

int main(int argc, char **argv) {
        struct options o;
        if (parse_args(argc, argv, &o) < 0)
                return 2;

        _cleanup_(key_freep) struct tether_key *site = NULL, *tls_key = NULL, *device = NULL;
        _cleanup_(freep) char *cert = NULL;
        int r = setup_keys(o.dir, &site, &tls_key, &cert);
        if (r < 0) {
                fprintf(stderr, "bench: keys in %s: %s\n", o.dir, strerror(-r));
                return 1;
        }
        _cleanup_(tls_ctx_freep) struct tether_tls_ctx *ctx = NULL;
        r = tether_tls_server_new(cert, tls_key, &ctx);
        if (r < 0) {
                fprintf(stderr, "bench: TLS context: %s\n", strerror(-r));
                return 1;
        }
        _cleanup_(closep) int listen_fd = -1;
        r = listen_loopback(o.dir, &listen_fd);
        if (r < 0) {
                fprintf(stderr, "bench: listen: %s\n", strerror(-r));
                return 1;
        }

        struct link l = {.fd = -1, .timeout_ms = (int)o.timeout * 1000};
        _cleanup_(closep) int conn_fd = -1;
        _cleanup_(tls_conn_freep) struct tether_tls_conn *tls = NULL;
        _cleanup_(decoder_freep) struct tether_frame_decoder *dec = NULL;
        r = tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec);
        if (r < 0)
                return 1;
        l.dec = dec;
        char client_id[TETHER_GUID_LEN] = "";
        r = sign_in(&l, listen_fd, ctx, site, o.keepalive, &device, client_id);
        conn_fd = l.fd;
        tls = l.tls;
        if (r < 0) {
                fprintf(stderr, "bench: agent sign-in failed: %s\n", strerror(-r));
                return 1;
        }
        fprintf(stderr, "bench: agent %s signed in; %llu pushes (+%llu warm-up), task type %llu\n",
                client_id, (unsigned long long)o.pushes, (unsigned long long)o.warmup,
                (unsigned long long)o.type);

        /* --go-file: wait until it exists, so that a tracer can attach to
         * the agent before the first push. */
        for (uint64_t waited_ms = 0; o.go_file && access(o.go_file, F_OK) < 0; waited_ms += 10) {
                if (waited_ms > o.timeout * 1000) {
                        fprintf(stderr, "bench: %s did not appear\n", o.go_file);
                        return 1;
                }
                usleep(10000);
        }

        uint64_t total = o.pushes + o.warmup;
        _cleanup_(freep) uint64_t *ack_ns = calloc(total, sizeof(uint64_t));
        _cleanup_(freep) uint64_t *resp_ns = calloc(total, sizeof(uint64_t));
        _cleanup_(freep) uint32_t *rcs = calloc(total, sizeof(uint32_t));
        if (!ack_ns || !resp_ns || !rcs)
                return 1;
        unsigned rc_count[8] = {0};
        uint64_t keepalives = 0;

        for (uint64_t i = 0; i < total; i++) {
                _cleanup_(msg_freep) struct tether_msg *p = NULL;
                if (tether_msg_new(TETHER_FRAME_PUSH, &p) < 0)
                        return 1;
                time_t t = time(NULL);
                p->push.timestamp = t;
                p->push.push_id = i + 1;
                p->push.task_id = i + 1;
                p->push.task_type = (uint32_t)o.type;
                p->push.expires = t + 3600;
                p->push.task_param = strdup("");
                if (!p->push.task_param || tether_guid_new(p->push.task_guid) < 0)
                        return 1;
                strscpy(p->push.client_id, sizeof(p->push.client_id), client_id);
                _cleanup_(freep) uint8_t *frame = NULL;
                size_t frame_len = 0;
                r = tether_msg_seal(p, site, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &frame_len);
                if (r < 0)
                        return 1;

                uint64_t t0 = now_ns();
                r = link_write(&l, frame, frame_len);
                if (r < 0) {
                        fprintf(stderr, "bench: writing PUSH %llu: %s\n", (unsigned long long)(i + 1),
                                strerror(-r));
                        return 1;
                }
                bool answered = false;
                while (!answered) {
                        _cleanup_(frame_freep) struct tether_frame *f = NULL;
                        r = link_read_frame(&l, &f);
                        if (r < 0) {
                                fprintf(stderr, "bench: waiting for the answer to push %llu: %s\n",
                                        (unsigned long long)(i + 1), strerror(-r));
                                return 1;
                        }
                        struct tether_diag diag = {0};
                        _cleanup_(msg_freep) struct tether_msg *m = NULL;
                        r = tether_msg_open(f, f->type == TETHER_FRAME_RESPONSE ? device : NULL, &m, &diag);
                        if (r < 0) {
                                fprintf(stderr, "bench: %s frame refused: %s\n",
                                        tether_frame_type_name(f->type), diag.text);
                                return 1;
                        }
                        if (m->type == TETHER_FRAME_PUSH_ACK &&
                            strcmp(m->ack.task_guid, p->push.task_guid) == 0) {
                                ack_ns[i] = now_ns() - t0;
                        } else if (m->type == TETHER_FRAME_RESPONSE) {
                                if (strcmp(m->response.task_guid, p->push.task_guid) == 0) {
                                        resp_ns[i] = now_ns() - t0;
                                        rcs[i] = m->response.return_code;
                                        rc_count[m->response.return_code < 8 ? m->response.return_code
                                                                             : 0]++;
                                        answered = true;
                                }
                                _cleanup_(msg_freep) struct tether_msg *a = NULL;
                                if (tether_msg_new(TETHER_FRAME_RESPONSE_ACK, &a) < 0)
                                        return 1;
                                strscpy(a->ack.task_guid, sizeof(a->ack.task_guid), m->response.task_guid);
                                r = send_msg(&l, a, NULL);
                                if (r < 0)
                                        return 1;
                        } else if (m->type == TETHER_FRAME_KEEPALIVE) {
                                keepalives++;
                                _cleanup_(msg_freep) struct tether_msg *k = NULL;
                                if (tether_msg_new(TETHER_FRAME_KEEPALIVE, &k) < 0)
                                        return 1;
                                k->keepalive.timestamp = time(NULL);
                                if (send_msg(&l, k, NULL) < 0)
                                        return 1;
                        } else if (m->type == TETHER_FRAME_GOODBYE) {
                                fprintf(stderr, "bench: the agent said GOODBYE (%s)\n",
                                        tether_goodbye_reason_name(m->goodbye.reason));
                                return 1;
                        }
                }
        }

        /* Say goodbye properly so that the agent does not log an error. */
        _cleanup_(msg_freep) struct tether_msg *g = NULL;
        if (tether_msg_new(TETHER_FRAME_GOODBYE, &g) == 0) {
                g->goodbye.reason = TETHER_GOODBYE_SHUTDOWN;
                g->goodbye.retry_after_seconds = 60;
                (void)send_msg(&l, g, NULL);
        }
        tether_tls_shutdown(l.tls);

        if (o.out) {
                _cleanup_(fclosep) FILE *out = fopen(o.out, "we");
                if (!out) {
                        fprintf(stderr, "bench: %s: %m\n", o.out);
                        return 1;
                }
                for (uint64_t i = o.warmup; i < total; i++)
                        fprintf(out, "%.1f %.1f %u\n", (double)ack_ns[i] / 1e3, (double)resp_ns[i] / 1e3,
                                rcs[i]);
        }
        printf("push latency, one tetherd, loopback TLS, task type %llu, %llu pushes after %llu warm-up\n",
               (unsigned long long)o.type, (unsigned long long)o.pushes, (unsigned long long)o.warmup);
        print_stats("push -> PUSH_ACK", ack_ns + o.warmup, o.pushes);
        print_stats("push -> signed RESPONSE", resp_ns + o.warmup, o.pushes);
        printf("return codes:");
        for (unsigned c = 1; c < 8; c++)
                if (rc_count[c])
                        printf(" %s=%u", tether_return_code_name(c), rc_count[c]);
        printf("\nkeepalives answered during the run: %llu\n", (unsigned long long)keepalives);
        return 0;
}
