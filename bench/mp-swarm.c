/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mp-swarm: how many agents one tether-mp holds, and how fast it reaches
 * them. One process opens N simulated agent channels (mutual TLS, each its
 * own device key and certificate), signs each in, asks the MP to push to
 * all of them, answers every push with a signed RESPONSE, and waits for
 * every RESPONSE_ACK. It prints the connections held, the fan-out time,
 * the time to the last response, and the MP's RSS and CPU seconds read
 * from /proc. A benchmark, not a test.
 *
 *   mp-swarm [--clients N] [--mp PATH] [--push-rate N] [--push-batch N]
 *            [--console SCRIPT]
 *
 * With --console, the MP's console listens on 127.0.0.1:0 and, once every
 * client is signed in, SCRIPT (bench/console-bench.py) is started with
 * the state directory, the tether-mp path, N and a result file instead of
 * the admin push: it times the REST API and starts the action itself,
 * while this process answers the pushes. The script writes
 * "page_all_answered=<CLOCK_MONOTONIC seconds>" to the result file: the
 * lag of the console's view behind the last acknowledged response.
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

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
        uint8_t *out;
        size_t out_len;
        uint32_t events;
};

struct swarm {
        unsigned n;
        struct client *clients;
        int ep;
        uint16_t port;
        char pin[65];
        struct tether_key *site_key;
        unsigned ready, pushed, acked, failed, in_handshake, goodbyes;
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
        s->failed++;
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
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

static void client_start(struct swarm *s, struct client *c) {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(s->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct epoll_event e;
        char *cert = NULL;
        int r;

        if (tether_guid_new(c->id) < 0 || tether_key_generate(TETHER_KEY_EC_P256, &c->key) < 0 ||
            tether_cert_self_signed(c->key, c->id, NULL, 2, &cert) < 0 ||
            tether_tls_client_new(cert, c->key, NULL, s->pin, &c->ctx) < 0 ||
            tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &c->dec) < 0)
                die("device setup", EIO);
        free(cert);
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
                while (next_start && *next_start < s->n && s->in_handshake < 256)
                        client_start(s, &s->clients[(*next_start)++]);
                int n = epoll_wait(s->ep, evs, 512, 100);
                for (int i = 0; i < n; i++)
                        client_io(s, evs[i].data.ptr);
        }
}

static int wait_ready(int notify_fd, pid_t pid) {
        char buf[256];
        double deadline = now_s() + 60;

        while (now_s() < deadline) {
                struct pollfd p = {.fd = notify_fd, .events = POLLIN};
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return -ECHILD;
                if (poll(&p, 1, 200) <= 0)
                        continue;
                ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, 0);
                if (n > 0) {
                        buf[n] = 0;
                        if (strstr(buf, "READY=1"))
                                return 0;
                }
        }
        return -ETIMEDOUT;
}

static void proc_figures(pid_t pid, double *rss_mib, double *cpu_s) {
        char path[64], line[512];
        FILE *f;

        *rss_mib = *cpu_s = 0;
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        f = fopen(path, "re");
        if (f) {
                while (fgets(line, sizeof(line), f)) {
                        if (startswith(line, "VmRSS:")) {
                                char *p = line + 6;
                                while (*p == ' ' || *p == '\t')
                                        p++;
                                p[strcspn(p, " ")] = 0;
                                uint64_t kb;
                                if (parse_u64(p, 0, UINT64_MAX, &kb) == 0)
                                        *rss_mib = (double)kb / 1024.0;
                        }
                }
                fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        f = fopen(path, "re");
        if (f && fgets(line, sizeof(line), f)) {
                /* fields 14 and 15 (utime, stime), counted after the ")" of comm */
                char *p = strrchr(line, ')');
                unsigned field = 2;
                uint64_t ut = 0, st = 0;

                while (p && *p) {
                        p++;
                        if (*p != ' ')
                                continue;
                        field++;
                        size_t len = strcspn(p + 1, " ");
                        if (field == 14)
                                (void)parse_u64_n(p + 1, len, 0, UINT64_MAX, &ut);
                        if (field == 15) {
                                (void)parse_u64_n(p + 1, len, 0, UINT64_MAX, &st);
                                break;
                        }
                }
                *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        if (f)
                fclose(f);
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

/* The console bench script (see the top): it starts the action itself. */
static pid_t start_console_script(const char *script, const char *dir, const char *state, const char *mp,
                                  unsigned n) {
        char result[128], count[16];
        pid_t pid;

        snprintf(result, sizeof(result), "%s/console-result", dir);
        snprintf(count, sizeof(count), "%u", n);
        fflush(stdout);
        pid = fork();
        if (pid < 0)
                die("fork", errno);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                execl(script, script, state, mp, count, result, (char *)NULL);
                _exit(127);
        }
        return pid;
}

/* Waits for the script unless reaped (pid -1; it stops once the console
 * shows every answer) and
 * prints the lag of that view behind the last acknowledged response. */
static void console_script_done(pid_t pid, const char *dir, double t_last_ack) {
        char path[128], line[128];
        int status = 0;
        FILE *f;

        if (pid > 0 && (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0))
                fprintf(stderr, "mp-swarm: the console script failed (status %d)\n", status);
        snprintf(path, sizeof(path), "%s/console-result", dir);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (startswith(line, "page_all_answered=")) {
                        double t = strtod(line + 18, NULL);
                        printf("console view lag:     %.3f s after the last acknowledged response\n",
                               t - t_last_ack);
                }
        if (f)
                fclose(f);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"clients", required_argument, NULL, 'n'},
                {"mp", required_argument, NULL, 'm'},
                {"push-rate", required_argument, NULL, 'r'},
                {"push-batch", required_argument, NULL, 'b'},
                {"console", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        const char *mp = TETHER_MP_BIN, *rate = "0", *batch = "500", *console = NULL;
        struct swarm s = {.n = 1000};
        struct rlimit rl;
        uint64_t v;
        int c;

        while ((c = getopt_long(argc, argv, "n:m:r:b:c:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        if (parse_u64(optarg, 1, 100000, &v) < 0)
                                die("--clients", EINVAL);
                        s.n = (unsigned)v;
                        break;
                case 'm':
                        mp = optarg;
                        break;
                case 'r':
                        rate = optarg;
                        break;
                case 'b':
                        batch = optarg;
                        break;
                case 'c':
                        console = optarg;
                        break;
                default:
                        printf("Usage: mp-swarm [--clients N (1000)] [--mp PATH] [--push-rate N (0: "
                               "unlimited)] "
                               "[--push-batch N (500)] [--console SCRIPT]\n");
                        return c == 'h' ? 0 : 2;
                }
        }

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

        char dir[] = "/tmp/mp-swarm-XXXXXX", state[64], notify[96], sock[96], path[128];
        if (!mkdtemp(dir))
                die("mkdtemp", errno);
        snprintf(state, sizeof(state), "%s/state", dir);
        snprintf(notify, sizeof(notify), "%s/notify", dir);
        snprintf(sock, sizeof(sock), "%s/admin.sock", state);

        int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strscpy(sa.sun_path, sizeof(sa.sun_path), notify);
        if (nfd < 0 || bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("notify socket", errno);

        pid_t pid = fork();
        if (pid == 0) {
                char log[96];
                snprintf(log, sizeof(log), "%s/mp.log", dir);
                int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (lfd >= 0) {
                        dup2(lfd, STDOUT_FILENO);
                        dup2(lfd, STDERR_FILENO);
                }
                setenv("NOTIFY_SOCKET", notify, 1);
                execl(mp, mp, "serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--https-listen",
                      "off", "--console-listen", console ? "127.0.0.1:0" : "off", "--push-rate", rate,
                      "--push-batch", batch, (char *)NULL);
                _exit(127);
        }
        if (wait_ready(nfd, pid) < 0) {
                fprintf(stderr, "mp-swarm: %s did not start; see %s/mp.log\n", mp, dir);
                kill(pid, SIGKILL);
                return 1;
        }

        struct tether_key *tls_key = NULL;
        snprintf(path, sizeof(path), "%s/tls.key", state);
        if (tether_key_load_private(path, &tls_key) < 0 || tether_key_fingerprint(tls_key, s.pin) < 0)
                die("tls.key", EIO);
        tether_key_free(tls_key);
        snprintf(path, sizeof(path), "%s/site.pub", state);
        if (tether_key_load_public(path, &s.site_key) < 0)
                die("site.pub", EIO);
        snprintf(path, sizeof(path), "%s/ports", state);
        FILE *pf = fopen(path, "re");
        char line[64];
        while (pf && fgets(line, sizeof(line), pf))
                if (startswith(line, "tcp=")) {
                        line[strcspn(line, "\n")] = 0;
                        if (parse_u64(line + 4, 1, 65535, &v) == 0)
                                s.port = (uint16_t)v;
                }
        if (pf)
                fclose(pf);
        if (!s.port)
                die("ports", EIO);

        s.clients = calloc(s.n, sizeof(*s.clients));
        s.ep = epoll_create1(EPOLL_CLOEXEC);
        if (!s.clients || s.ep < 0)
                die("setup", ENOMEM);

        double rss, cpu, cpu0;
        proc_figures(pid, &rss, &cpu0);
        printf("mp-swarm: %u clients against %s (pid %d), push rate %s/s, batch %s\n", s.n, mp, pid, rate,
               batch);

        double t0 = now_s();
        unsigned next = 0;
        run_until(&s, &s.ready, s.n, 600, &next);
        double t_signed_in = now_s() - t0;
        proc_figures(pid, &rss, &cpu);
        printf("signed in:            %u of %u in %.2f s (%u failed); MP RSS %.1f MiB, CPU %.2f s\n",
               s.ready, s.n, t_signed_in, s.failed, rss, cpu - cpu0);

        long held = admin_connections(sock);
        double cpu_before_push = cpu;
        double t_push = now_s();
        pid_t script = -1;
        if (console)
                script = start_console_script(console, dir, state, mp, s.n);
        else if (admin_push_all(sock) < 0)
                die("push", EIO);
        if (console) /* in slices, to stop early when the script failed */
                for (double t_stop = now_s() + 300; s.acked < s.ready && now_s() < t_stop;) {
                        run_until(&s, &s.acked, s.ready, 1.0, NULL);
                        int st;
                        if (waitpid(script, &st, WNOHANG) == script) {
                                bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;

                                script = -1;
                                if (!ok) {
                                        fprintf(stderr, "mp-swarm: the console script failed (status %d)\n",
                                                st);
                                        break;
                                }
                        }
                }
        else
                run_until(&s, &s.acked, s.ready, 600, NULL);
        if (console)
                console_script_done(script, dir, s.t_last_ack);
        double t_end = now_s();
        proc_figures(pid, &rss, &cpu);

        printf("connections held:     %ld (MP's count), %u signed in here\n", held, s.ready);
        printf("fan-out:              %u pushes received, last after %.3f s\n", s.pushed,
               s.pushed ? s.t_last_push - t_push : 0.0);
        printf("last response acked:  %u of %u after %.3f s\n", s.acked, s.ready,
               s.acked ? s.t_last_ack - t_push : t_end - t_push);
        printf("MP RSS:               %.1f MiB\n", rss);
        printf("MP CPU seconds:       %.2f total, %.2f for the push round\n", cpu - cpu0,
               cpu - cpu_before_push);

        /* SIGTERM: every channel gets GOODBYE(shutdown), then the MP exits. */
        double t_term = now_s();
        unsigned failed_before = s.failed;
        kill(pid, SIGTERM);
        run_until(&s, &s.goodbyes, s.acked + failed_before, 60, NULL);
        double t_goodbye = now_s() - t_term;
        int status = 0;
        waitpid(pid, &status, 0);
        printf("SIGTERM:              %u GOODBYE(shutdown) in %.3f s (RetryAfterSeconds %u), MP exited %d "
               "after "
               "%.3f s\n",
               s.goodbyes, t_goodbye, s.retry_max, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
               now_s() - t_term);
        for (unsigned i = 0; i < s.n; i++) {
                struct client *cl = &s.clients[i];
                tether_tls_conn_free(cl->tls);
                tether_tls_ctx_free(cl->ctx);
                tether_key_free(cl->key);
                tether_frame_decoder_free(cl->dec);
                free(cl->out);
                if (cl->fd > 0)
                        close(cl->fd);
        }
        free(s.clients);
        tether_key_free(s.site_key);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "mp-swarm: could not remove %s\n", dir);
        curl_global_cleanup();
        return s.acked == s.n ? 0 : 1;
}
