/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mp-swarm: how many agents one tether-mp holds, and how fast it reaches
 * them. One process opens N simulated agent channels (mutual TLS, each its
 * own device key and certificate), signs each in, asks the MP to push to
 * all of them, answers every push with a signed RESPONSE, and waits for
 * every RESPONSE_ACK. It prints the connections held, the fan-out time,
 * the time to the last response, and the MP's RSS and CPU seconds read
 * from /proc. Then the reconnection storm: the MP is stopped (SIGTERM) and
 * started again on the same state directory, and every agent reconnects
 * at once, first resuming its TLS session with the ticket it kept, then
 * (after another restart) with full handshakes. A benchmark, not a test.
 *
 *   mp-swarm [--clients N] [--mp PATH] [--push-rate N] [--push-batch N]
 *            [--storm-inflight N] [--no-storm] [--nodes N --store postgresql://...]
 *            [--console SCRIPT]
 *
 * With --console, the MP's console listens on 127.0.0.1:0 and, once every
 * client is signed in, SCRIPT (bench/console-bench.py) is started with
 * node 1's state directory, the tether-mp path, N and a result file instead of
 * the admin push: it times the REST API and starts the action itself,
 * while this process answers the pushes. The script writes
 * "page_all_answered=<CLOCK_MONOTONIC seconds>" to the result file: the
 * lag of the console's view behind the last acknowledged response.
 *
 * MP_SWARM_IDLE=N holds the idle connections N seconds (default 2) before
 * their memory is read, e.g. to attach heaptrack or gdb to the MP.
 *
 * With --nodes N (PostgreSQL only) the clients are spread over N nodes on
 * this machine, round robin, and the push is made on node 1: the other
 * nodes take their devices' targets from the database. The figures are
 * then per second (sign-ins, pushes fanned out, responses recorded, the
 * database's rows) and memory per connection, with the load average. The
 * storm then restarts every node.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "bench/swarm-console.h"
#include "bench/swarm-nodes.h"
#include "common/strutil.h"
#include "transport/frame.h"
#include "transport/guid.h"
#include "transport/message.h"
#include "transport/sign.h"
#include "transport/tls.h"

#ifndef TETHER_MP_BIN
#define TETHER_MP_BIN "tether-mp"
#endif

enum client_state {
        C_IDLE,
        C_HANDSHAKE,
        C_SIGNING_IN,
        C_READY,
        C_ANSWERED,
        C_DONE,
        C_FAILED,
};

struct client {
        int fd;
        enum client_state state;
        struct tether_key *key;
        struct tether_tls_ctx *ctx;
        struct tether_tls_conn *tls;
        struct tether_frame_decoder *dec;
        char id[TETHER_GUID_LEN];
        bool resumed;
        uint8_t *out;
        size_t out_len;
        uint32_t events;
};

struct swarm {
        unsigned n;
        struct client *clients;
        int ep;
        uint16_t ports[SWARM_MAX_NODES]; /* client i connects to node i % n_nodes */
        unsigned n_nodes;
        char pin[65];
        struct tether_key *site_key;
        unsigned ready, pushed, acked, failed, in_handshake, goodbyes, resumed;
        unsigned max_inflight;
        /* storm: a failed client goes back in line, as an agent retries */
        bool retry;
        unsigned *retry_q, n_retry, retries;
        uint32_t retry_min, retry_max;
        double t_last_push, t_last_ack;
};

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int r) {
        fprintf(stderr, "mp-swarm: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static void set_events(struct swarm *s, struct client *c, uint32_t ev) {
        struct epoll_event e = {.events = ev, .data.ptr = c};

        if (c->events == ev)
                return;
        if (epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
                die("epoll_ctl", errno);
        c->events = ev;
}

static void client_fail(struct swarm *s, struct client *c, const char *why) {
        if (c->state == C_FAILED)
                return;
        if (s->failed < 5)
                fprintf(stderr, "mp-swarm: client %s failed: %s\n", c->id, why);
        if (c->state == C_HANDSHAKE)
                s->in_handshake--;
        c->state = C_FAILED;
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
        if (s->retry) {
                s->retry_q[s->n_retry++] = (unsigned)(c - s->clients);
                s->retries++;
                return;
        }
        s->failed++;
}

static void client_flush(struct swarm *s, struct client *c) {
        while (c->out_len > 0) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_write(c->tls, c->out, c->out_len, &want);

                if (n == -EAGAIN) {
                        set_events(s, c, EPOLLIN | (want == TETHER_TLS_WANT_WRITE ? EPOLLOUT : 0));
                        return;
                }
                if (n < 0) {
                        client_fail(s, c, "write");
                        return;
                }
                memmove(c->out, c->out + n, c->out_len - (size_t)n);
                c->out_len -= (size_t)n;
        }
        set_events(s, c, EPOLLIN);
}

static void client_send(struct swarm *s, struct client *c, const struct tether_msg *msg,
                        const struct tether_key *signer) {
        uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        r = tether_msg_seal(msg, signer, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &len);
        if (r < 0)
                die("seal", r);
        c->out = realloc(c->out, c->out_len + len);
        if (!c->out)
                die("realloc", ENOMEM);
        memcpy(c->out + c->out_len, frame, len);
        c->out_len += len;
        free(frame);
        client_flush(s, c);
}

static void client_signin(struct swarm *s, struct client *c) {
        struct tether_msg msg = {.type = TETHER_FRAME_SIGNIN};
        char *b64 = NULL;
        int r;

        r = tether_key_spki_base64(c->key, &b64);
        if (r < 0)
                die("spki", r);
        msg.signin.timestamp = time(NULL);
        strscpy(msg.signin.client_id, sizeof(msg.signin.client_id), c->id);
        msg.signin.version = (char *)"mp-swarm";
        msg.signin.hostname = (char *)"swarm";
        msg.signin.public_key = b64;
        msg.signin.n_task_types = 3;
        msg.signin.task_types[0] = 1;
        msg.signin.task_types[1] = 2;
        msg.signin.task_types[2] = 3;
        c->state = C_SIGNING_IN;
        client_send(s, c, &msg, c->key);
        free(b64);
}

static void client_frame(struct swarm *s, struct client *c, struct tether_frame *fr) {
        struct tether_msg *m = NULL;
        struct tether_diag diag = {0};

        if (tether_msg_open(fr, tether_frame_type_signed(fr->type) ? s->site_key : NULL, &m, &diag) < 0) {
                client_fail(s, c, diag.text);
                return;
        }
        switch (m->type) {
        case TETHER_FRAME_SIGNIN_CONFIRM:
                if (m->signin_confirm.status != TETHER_SIGNIN_APPROVED) {
                        client_fail(s, c, "not approved");
                        break;
                }
                if (c->state == C_SIGNING_IN) {
                        c->state = C_READY;
                        s->ready++;
                }
                break;
        case TETHER_FRAME_PUSH: {
                struct tether_msg ack = {.type = TETHER_FRAME_PUSH_ACK},
                                  resp = {.type = TETHER_FRAME_RESPONSE};

                s->pushed++;
                s->t_last_push = now_s();
                strscpy(ack.ack.task_guid, sizeof(ack.ack.task_guid), m->push.task_guid);
                client_send(s, c, &ack, NULL);
                resp.response.timestamp = time(NULL);
                resp.response.push_id = m->push.push_id;
                resp.response.task_id = m->push.task_id;
                resp.response.return_code = TETHER_RC_SUCCESS;
                strscpy(resp.response.task_guid, sizeof(resp.response.task_guid), m->push.task_guid);
                strscpy(resp.response.client_id, sizeof(resp.response.client_id), c->id);
                resp.response.detail = (char *)"swarm";
                c->state = C_ANSWERED;
                client_send(s, c, &resp, c->key);
                break;
        }
        case TETHER_FRAME_RESPONSE_ACK:
                if (c->state == C_ANSWERED) {
                        c->state = C_DONE;
                        s->acked++;
                        s->t_last_ack = now_s();
                }
                break;
        case TETHER_FRAME_GOODBYE:
                if (m->goodbye.reason == TETHER_GOODBYE_SHUTDOWN) {
                        uint32_t ra = m->goodbye.retry_after_seconds;

                        if (s->goodbyes == 0 || ra < s->retry_min)
                                s->retry_min = ra;
                        if (ra > s->retry_max)
                                s->retry_max = ra;
                        s->goodbyes++;
                        c->state = C_FAILED; /* done with this one */
                        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
                        break;
                }
                client_fail(s, c, "GOODBYE");
                break;
        default:
                break;
        }
        tether_msg_free(m);
}

static void client_io(struct swarm *s, struct client *c) {
        static uint8_t buf[16384];
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        int r;

        if (c->state == C_FAILED)
                return;
        if (c->state == C_HANDSHAKE) {
                r = tether_tls_handshake(c->tls, &want);
                if (r < 0) {
                        client_fail(s, c, tether_tls_conn_error(c->tls));
                        return;
                }
                if (r == 0) {
                        set_events(s, c, want == TETHER_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN);
                        return;
                }
                s->in_handshake--;
                c->resumed = tether_tls_conn_resumed(c->tls);
                s->resumed += c->resumed;
                client_signin(s, c);
                return;
        }
        if (c->out_len > 0)
                client_flush(s, c);
        for (;;) {
                ssize_t n = tether_tls_read(c->tls, buf, sizeof(buf), &want);
                const uint8_t *p = buf;
                size_t left;

                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        client_fail(s, c, n == 0 ? "closed by the MP" : "read");
                        return;
                }
                left = (size_t)n;
                while (left > 0) {
                        struct tether_frame *fr = NULL;
                        struct tether_diag diag = {0};
                        size_t used = 0;

                        r = tether_frame_decoder_feed(c->dec, p, left, &used, &fr, &diag);
                        if (r < 0) {
                                client_fail(s, c, diag.text);
                                return;
                        }
                        p += used;
                        left -= used;
                        if (r == 1) {
                                client_frame(s, c, fr);
                                tether_frame_free(fr);
                                if (c->state == C_FAILED)
                                        return;
                        }
                }
        }
}

/* The device: key, certificate, TLS context (it keeps the ticket). */
static void client_setup(struct swarm *s, struct client *c) {
        char *cert = NULL;

        c->fd = -1;
        if (tether_guid_new(c->id) < 0 || tether_key_generate(TETHER_KEY_EC_P256, &c->key) < 0 ||
            tether_cert_self_signed(c->key, c->id, NULL, 2, &cert) < 0 ||
            tether_tls_client_new(cert, c->key, NULL, s->pin, &c->ctx) < 0)
                die("device setup", EIO);
        free(cert);
}

/* Drops the connection, keeps the device (and its kept ticket). */
static void client_reset(struct client *c) {
        c->tls = tether_tls_conn_free(c->tls);
        c->dec = tether_frame_decoder_free(c->dec);
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        free(c->out);
        c->out = NULL;
        c->out_len = 0;
        c->resumed = false;
        c->state = C_IDLE;
}

static void client_start(struct swarm *s, struct client *c) {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(s->ports[(size_t)(c - s->clients) % s->n_nodes]),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct epoll_event e;
        int r;

        client_reset(c);
        if (tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &c->dec) < 0)
                die("decoder", ENOMEM);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                die("socket", errno);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
                die("connect", errno);
        r = tether_tls_conn_new(c->ctx, c->fd, "127.0.0.1", &c->tls);
        if (r < 0)
                die("tls conn", r);
        c->state = C_HANDSHAKE;
        s->in_handshake++;
        c->events = EPOLLOUT;
        e = (struct epoll_event){.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, c->fd, &e) < 0)
                die("epoll_ctl", errno);
}

static void run_until(struct swarm *s, unsigned *counter, unsigned target, double timeout,
                      unsigned *next_start) {
        struct epoll_event evs[512];
        double deadline = now_s() + timeout;

        while (*counter + s->failed < target && now_s() < deadline) {
                /* keep a bounded number of handshakes in flight */
                while (next_start && *next_start < s->n && s->in_handshake < s->max_inflight)
                        client_start(s, &s->clients[(*next_start)++]);
                while (next_start && s->n_retry > 0 && s->in_handshake < s->max_inflight)
                        client_start(s, &s->clients[s->retry_q[--s->n_retry]]);
                int n = epoll_wait(s->ep, evs, 512, 100);
                for (int i = 0; i < n; i++)
                        client_io(s, evs[i].data.ptr);
        }
}

static size_t sink(char *ptr, size_t size, size_t nmemb, void *ud) {
        (void)ptr;
        (void)ud;
        return size * nmemb;
}

struct growbuf {
        char *data;
        size_t len;
};

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud) {
        struct growbuf *b = ud;
        char *t = realloc(b->data, b->len + size * nmemb + 1);

        if (!t)
                return 0;
        memcpy(t + b->len, ptr, size * nmemb);
        b->len += size * nmemb;
        t[b->len] = 0;
        b->data = t;
        return size * nmemb;
}

/* The MP's own count of channel connections, from its admin API. */
static long admin_connections(const char *sock) {
        struct growbuf b = {0};
        CURL *curl = curl_easy_init();
        json_object *o, *v;
        long n = -1;

        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
        curl_easy_setopt(curl, CURLOPT_URL, "http://localhost/v1/status");
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
        if (curl_easy_perform(curl) == CURLE_OK && b.data && (o = json_tokener_parse(b.data))) {
                if (json_object_object_get_ex(o, "channel_connections", &v))
                        n = (long)json_object_get_int64(v);
                json_object_put(o);
        }
        free(b.data);
        curl_easy_cleanup(curl);
        return n;
}

static int admin_push_all(const char *sock) {
        CURL *curl = curl_easy_init();
        long status = 0;
        CURLcode rc;

        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
        curl_easy_setopt(curl, CURLOPT_URL, "http://localhost/v1/pushes");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "{\"type\":1,\"param\":\"\",\"all\":true}");
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(curl);
        return rc == CURLE_OK && status == 200 ? 0 : -EIO;
}

/* Runs the console script while answering the pushes it starts, in slices,
 * to stop early when the script failed. */
static void console_round(struct swarm *s, const char *script, const char *dir, const char *state,
                          const char *mp) {
        pid_t pid = swarm_console_start(script, dir, state, mp, s->n);

        for (double t_stop = now_s() + 300; s->acked < s->ready && now_s() < t_stop;) {
                int st;

                run_until(s, &s->acked, s->ready, 1.0, NULL);
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        pid = -1;
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                                fprintf(stderr, "mp-swarm: the console script failed (status %d)\n", st);
                                break;
                        }
                }
        }
        swarm_console_done(pid, dir, s->t_last_ack);
}

struct options {
        const char *mp, *rate, *batch, *store, *console;
        unsigned n_nodes, storm_inflight;
        bool storm;
};

/* SIGTERM: every channel gets GOODBYE(shutdown), then the MPs exit. */
static void stop_nodes(struct swarm *s, struct swarm_node *nodes, unsigned n, unsigned expect) {
        double t_term = now_s();
        int status = 0;

        s->goodbyes = 0;
        for (unsigned i = 0; i < n; i++)
                kill(nodes[i].pid, SIGTERM);
        run_until(s, &s->goodbyes, expect, 60, NULL);
        double t_goodbye = now_s() - t_term;
        for (unsigned i = 0; i < n; i++)
                waitpid(nodes[i].pid, &status, 0);
        printf("SIGTERM:              %u GOODBYE(shutdown) in %.3f s (RetryAfterSeconds %u), MPs exited "
               "after %.3f s\n",
               s->goodbyes, t_goodbye, s->retry_max, now_s() - t_term);
        fflush(stdout);
}

/* All agents back at once after a restart of every node on its state
 * directory; resume: offer the kept tickets. */
static void storm(struct swarm *s, const struct swarm_nodes_config *nc, struct swarm_node *nodes,
                  bool resume) {
        double rss, cpu0, cpu, t0, t;
        unsigned next = 0;

        for (unsigned i = 0; i < s->n; i++) {
                client_reset(&s->clients[i]);
                if (!resume)
                        tether_tls_client_forget_session(s->clients[i].ctx);
        }
        s->ready = s->failed = s->resumed = s->retries = s->n_retry = 0;
        s->retry = true;
        swarm_nodes_restart(nc, nodes);
        for (unsigned i = 0; i < nc->n; i++)
                s->ports[i] = nodes[i].port;
        swarm_nodes_figures(nodes, nc->n, &rss, &cpu0);
        t0 = now_s();
        run_until(s, &s->ready, s->n, 600, &next);
        t = now_s() - t0;
        s->retry = false;
        swarm_nodes_figures(nodes, nc->n, &rss, &cpu);
        printf("storm %-14s %u of %u back in %.2f s, %.0f sign-ins/s, %u resumed TLS sessions, %u "
               "connection "
               "attempts failed and retried; MP CPU %.2f s, %.0f sign-ins per MP CPU second\n",
               resume ? "(resumption):" : "(full):", s->ready, s->n, t, t > 0 ? s->ready / t : 0.0,
               s->resumed, s->retries, cpu - cpu0, cpu > cpu0 ? s->ready / (cpu - cpu0) : 0.0);
        fflush(stdout);
        stop_nodes(s, nodes, nc->n, s->ready);
}

static void parse_args(int argc, char **argv, struct swarm *s, struct options *o) {
        static const struct option opts[] = {
                {"clients", required_argument, NULL, 'n'},
                {"mp", required_argument, NULL, 'm'},
                {"push-rate", required_argument, NULL, 'r'},
                {"push-batch", required_argument, NULL, 'b'},
                {"storm-inflight", required_argument, NULL, 'i'},
                {"no-storm", no_argument, NULL, 'X'},
                {"nodes", required_argument, NULL, 'N'},
                {"store", required_argument, NULL, 'S'},
                {"console", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        uint64_t v;
        int c;

        while ((c = getopt_long(argc, argv, "n:m:r:b:i:XN:S:c:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        if (parse_u64(optarg, 1, 100000, &v) < 0)
                                die("--clients", EINVAL);
                        s->n = (unsigned)v;
                        break;
                case 'N':
                        if (parse_u64(optarg, 1, SWARM_MAX_NODES, &v) < 0)
                                die("--nodes (1 to 8)", EINVAL);
                        o->n_nodes = (unsigned)v;
                        break;
                case 'm':
                        o->mp = optarg;
                        break;
                case 'r':
                        o->rate = optarg;
                        break;
                case 'b':
                        o->batch = optarg;
                        break;
                case 'i':
                        if (parse_u64(optarg, 1, 100000, &v) < 0)
                                die("--storm-inflight", EINVAL);
                        o->storm_inflight = (unsigned)v;
                        break;
                case 'X':
                        o->storm = false;
                        break;
                case 'S':
                        o->store = optarg;
                        break;
                case 'c':
                        o->console = optarg;
                        break;
                default:
                        printf("Usage: mp-swarm [--clients N (1000)] [--mp PATH] [--push-rate N (0: "
                               "unlimited)] [--push-batch N (500)] [--storm-inflight N (1000)] "
                               "[--no-storm] [--nodes N (1) --store postgresql://...] [--console SCRIPT]\n");
                        exit(c == 'h' ? 0 : 2);
                }
        }
}

static double per_s(double n, double seconds) {
        return seconds > 0 ? n / seconds : 0;
}

/* The rows the database wrote since before (after the statistics collector
 * caught up), per second over seconds; -1 without PostgreSQL. */
static double db_rows_per_s(const char *store, long long before, double seconds) {
        long long after;

        if (before < 0)
                return -1;
        sleep(1);
        after = swarm_db_rows(store);
        return after < 0 ? -1 : per_s((double)(after - before), seconds);
}

static void print_db(const char *what, double rows_per_s) {
        if (rows_per_s < 0)
                printf("%-22s(SQLite: not measured)\n", what);
        else
                printf("%-22s%.0f rows/s\n", what, rows_per_s);
}

int main(int argc, char **argv) {
        struct options o = {.mp = TETHER_MP_BIN,
                            .rate = "0",
                            .batch = "500",
                            .n_nodes = 1,
                            .storm_inflight = 1000,
                            .storm = true};
        struct swarm s = {.n = 1000, .max_inflight = 256};
        struct swarm_node nodes[SWARM_MAX_NODES] = {0};
        struct rlimit rl;
        char load[128];

        parse_args(argc, argv, &s, &o);
        /* Both ends need an fd each per connection. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
                if (rl.rlim_cur < s.n + 64)
                        fprintf(stderr, "mp-swarm: open-file limit %llu is below %u clients\n",
                                (unsigned long long)rl.rlim_cur, s.n);
        }
        signal(SIGPIPE, SIG_IGN);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        char dir[] = "/tmp/mp-swarm-XXXXXX", path[192], config[192];
        if (!mkdtemp(dir))
                die("mkdtemp", errno);
        /* Every simulated agent comes from 127.0.0.1: the per-address cap
         * would stand for one host, not a fleet. The global caps stay. */
        snprintf(config, sizeof(config), "%s/mp.conf", dir);
        FILE *cf = fopen(config, "we");
        if (!cf || fprintf(cf, "[MP]\nMaxUnauthenticatedPerAddress=1000000\n") < 0 || fclose(cf) != 0)
                die("mp.conf", EIO);
        struct swarm_nodes_config nc = {.mp = o.mp,
                                        .dir = dir,
                                        .config = config,
                                        .store = o.store,
                                        .rate = o.rate,
                                        .batch = o.batch,
                                        .console = o.console != NULL,
                                        .n = o.n_nodes};
        swarm_nodes_start(&nc, nodes);
        s.n_nodes = o.n_nodes;
        for (unsigned i = 0; i < o.n_nodes; i++)
                s.ports[i] = nodes[i].port;

        struct tether_key *tls_key = NULL;
        snprintf(path, sizeof(path), "%s/tls.key", nodes[0].state);
        if (tether_key_load_private(path, &tls_key) < 0 || tether_key_fingerprint(tls_key, s.pin) < 0)
                die("tls.key", EIO);
        tether_key_free(tls_key);
        snprintf(path, sizeof(path), "%s/site.pub", nodes[0].state);
        if (tether_key_load_public(path, &s.site_key) < 0)
                die("site.pub", EIO);

        s.clients = calloc(s.n, sizeof(*s.clients));
        s.ep = epoll_create1(EPOLL_CLOEXEC);
        s.retry_q = calloc(s.n, sizeof(*s.retry_q));
        if (!s.clients || !s.retry_q || s.ep < 0)
                die("setup", ENOMEM);
        /* Device keys first: the clock then times the MP, not key generation. */
        for (unsigned i = 0; i < s.n; i++)
                client_setup(&s, &s.clients[i]);

        double rss0, rss, cpu, cpu0;
        swarm_nodes_figures(nodes, o.n_nodes, &rss0, &cpu0);
        swarm_load(load, sizeof(load));
        printf("mp-swarm: %u clients over %u node(s) (%s), push rate %s/s, batch %s\n", s.n, o.n_nodes,
               o.store ? "PostgreSQL" : "SQLite", o.rate, o.batch);
        printf("machine:              %s at the start (shared: other work runs too)\n", load);

        long long rows0 = swarm_db_rows(o.store);
        double t0 = now_s();
        unsigned next = 0;
        run_until(&s, &s.ready, s.n, 600, &next);
        double t_signed_in = now_s() - t0;
        swarm_nodes_figures(nodes, o.n_nodes, &rss, &cpu);
        printf("signed in:            %u of %u in %.2f s (%u failed): %.0f sign-ins/s; MP RSS %.1f MiB, CPU "
               "%.2f s\n",
               s.ready, s.n, t_signed_in, s.failed, per_s(s.ready, t_signed_in), rss, cpu - cpu0);
        print_db("database, sign-ins:", db_rows_per_s(o.store, rows0, t_signed_in));
        /* Idle: what a held connection costs once its handshake is over. */
        sleep(getenv("MP_SWARM_IDLE") ? (unsigned)strtoul(getenv("MP_SWARM_IDLE"), NULL, 10) : 2);
        swarm_nodes_figures(nodes, o.n_nodes, &rss, &cpu);
        printf("idle memory:          MP RSS %.1f MiB, %.1f KiB per connection (RSS growth over all nodes / "
               "%u)\n",
               rss, per_s((rss - rss0) * 1024.0, s.ready), s.ready);
        fflush(stdout);

        long held = 0;
        for (unsigned i = 0; i < o.n_nodes; i++)
                held += admin_connections(nodes[i].sock);
        double cpu_before_push = cpu;
        long long rows1 = swarm_db_rows(o.store);
        double t_push = now_s();
        if (o.console)
                console_round(&s, o.console, dir, nodes[0].state, o.mp);
        else if (admin_push_all(nodes[0].sock) < 0)
                die("push", EIO);
        else
                run_until(&s, &s.acked, s.ready, 600, NULL);
        double t_end = now_s();
        swarm_nodes_figures(nodes, o.n_nodes, &rss, &cpu);

        double fan = s.pushed ? s.t_last_push - t_push : 0.0;
        double resp = s.acked ? s.t_last_ack - t_push : t_end - t_push;
        printf("connections held:     %ld (the MPs' count), %u signed in here\n", held, s.ready);
        printf("fan-out:              %u pushes received, last after %.3f s: %.0f pushes/s\n", s.pushed, fan,
               per_s(s.pushed, fan));
        printf("responses recorded:   %u of %u acknowledged, last after %.3f s: %.0f responses/s\n", s.acked,
               s.ready, resp, per_s(s.acked, resp));
        print_db("database, push round:", db_rows_per_s(o.store, rows1, resp));
        printf("MP RSS:               %.1f MiB over %u node(s)\n", rss, o.n_nodes);
        printf("MP CPU seconds:       %.2f total, %.2f for the push round\n", cpu - cpu0,
               cpu - cpu_before_push);
        swarm_load(load, sizeof(load));
        printf("machine:              %s at the end\n", load);
        fflush(stdout);

        unsigned acked = s.acked;
        stop_nodes(&s, nodes, o.n_nodes, s.acked + s.failed);
        if (o.storm) {
                s.max_inflight = o.storm_inflight;
                storm(&s, &nc, nodes, true);
                storm(&s, &nc, nodes, false);
        }
        for (unsigned i = 0; i < s.n; i++) {
                struct client *cl = &s.clients[i];
                client_reset(cl);
                tether_tls_ctx_free(cl->ctx);
                tether_key_free(cl->key);
        }
        free(s.clients);
        free(s.retry_q);
        tether_key_free(s.site_key);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "mp-swarm: could not remove %s\n", dir);
        curl_global_cleanup();
        return acked == s.n ? 0 : 1;
}
