/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attacks of issue #10 against the real tether-mp (the MP side): each
 * test reproduces one, over loopback, and checks that the server survives,
 * stays bounded and says what happened. Each test starts its own server in
 * a temporary directory and always kills it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "harness.h"
#include "transport/sign.h"
#include "transport/tls.h"

#define PIPELINED 10000

struct fixture {
        struct mp_server_proc p;
        struct device d;
};

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

static int start_with_config(void **state, const char *config) {
        struct fixture *f = calloc(1, sizeof(*f));
        char path[256];
        FILE *c;

        assert_non_null(f);
        *state = f;
        strscpy(f->p.dir, sizeof(f->p.dir), "/tmp/mp-sec-XXXXXX");
        assert_non_null(mkdtemp(f->p.dir));
        snprintf(f->p.state, sizeof(f->p.state), "%s/state", f->p.dir);
        snprintf(path, sizeof(path), "%s/mp.conf", f->p.dir);
        c = fopen(path, "we");
        assert_non_null(c);
        fprintf(c, "[MP]\n%s", config ? config : "");
        fclose(c);
        assert_int_equal(mp_proc_restart(&f->p, (const char *const[]){"--config", path, NULL}), 0);
        assert_int_equal(device_new(&f->d, NULL, f->p.dir), 0);
        return 0;
}

static int setup_default(void **state) {
        return start_with_config(state, NULL);
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int status, ok = 0;

        if (f->p.pid > 0) {
                status = mp_proc_stop(&f->p, SIGTERM);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "tether-mp did not exit cleanly (status 0x%x); see %s/server.log\n",
                                (unsigned)status, f->p.dir);
                        ok = -1;
                }
        }
        device_done(&f->d);
        if (ok == 0)
                mp_proc_cleanup(&f->p);
        else
                tether_key_free(f->p.site_key);
        free(f);
        return ok;
}

/* The server is still running (not crashed, not exited). */
static void assert_alive(struct mp_server_proc *p) {
        int status = 0;

        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                p->pid = 0;
                fail_msg("tether-mp died (status 0x%x; signal %d); see %s/server.log", (unsigned)status,
                         WIFSIGNALED(status) ? WTERMSIG(status) : 0, p->dir);
        }
}

/* The whole server log, for checks on what it said. */
static char *server_log(struct mp_server_proc *p) {
        char path[256], *text = NULL;
        size_t len = 0;
        FILE *f, *m;
        char buf[4096];
        size_t n;

        snprintf(path, sizeof(path), "%s/server.log", p->dir);
        f = fopen(path, "re");
        assert_non_null(f);
        m = open_memstream(&text, &len);
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, m);
        fclose(m);
        fclose(f);
        return text;
}

/* The first log line containing needle, or NULL; owned by the caller. */
static char *log_line_with(struct mp_server_proc *p, const char *needle) {
        _cleanup_(freep) char *text = server_log(p);
        char *hit = strstr(text, needle), *start, *end;

        if (!hit)
                return NULL;
        start = hit;
        while (start > text && start[-1] != '\n')
                start--;
        end = strchrnul(hit, '\n');
        return strndup(start, (size_t)(end - start));
}

/* Waits up to timeout_ms for a log line containing needle. */
static __attribute__((unused)) char *wait_log_line(struct mp_server_proc *p, const char *needle,
                                                   int timeout_ms) {
        int64_t deadline = now_ms() + timeout_ms;

        for (;;) {
                char *line = log_line_with(p, needle);

                if (line || now_ms() > deadline)
                        return line;
                sleep_ms(100);
        }
}

/* ---- pipelining (item 1) ---- */

/* One byte stream, TLS or a plain unix socket, non-blocking. */
struct stream {
        int fd;
        struct tether_tls_conn *tls;
};

static ssize_t stream_write(struct stream *s, const void *buf, size_t len, short *events) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        ssize_t n;

        if (!s->tls) {
                n = send(s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN) {
                        *events |= POLLOUT;
                        return -EAGAIN;
                }
                return n < 0 ? -errno : n;
        }
        n = tether_tls_write(s->tls, buf, len, &want);
        if (n == -EAGAIN)
                *events |= want == TETHER_TLS_WANT_WRITE ? POLLOUT : POLLIN;
        return n;
}

static ssize_t stream_read(struct stream *s, void *buf, size_t len, short *events) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        ssize_t n;

        if (!s->tls) {
                n = recv(s->fd, buf, len, MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN) {
                        *events |= POLLIN;
                        return -EAGAIN;
                }
                return n < 0 ? -errno : n;
        }
        n = tether_tls_read(s->tls, buf, len, &want);
        if (n == -EAGAIN)
                *events |= want == TETHER_TLS_WANT_WRITE ? POLLOUT : POLLIN;
        return n;
}

/* Counts the occurrences of needle in a stream read in pieces. */
struct counter {
        const char *needle;
        char carry[64];
        size_t carry_len;
        unsigned count;
};

static void count_in(struct counter *c, const char *data, size_t len) {
        size_t nl = strlen(c->needle);
        _cleanup_(freep) char *joined = malloc(c->carry_len + len + 1);

        assert_non_null(joined);
        memcpy(joined, c->carry, c->carry_len);
        memcpy(joined + c->carry_len, data, len);
        len += c->carry_len;
        joined[len] = 0;
        for (const char *p = joined; (p = memmem(p, (size_t)(joined + len - p), c->needle, nl)); p += nl)
                c->count++;
        /* keep a tail shorter than the needle: no match is counted twice */
        c->carry_len = len < nl - 1 ? len : nl - 1;
        memcpy(c->carry, joined + len - c->carry_len, c->carry_len);
}

/* Writes all of req in as few writes as the socket takes, reading the
 * answers at the same time, until `want` answers (counted by needle) came
 * back or the server closed; returns the count. */
static unsigned pipeline(struct stream *s, const char *req, size_t req_len, const char *needle,
                         unsigned want, int timeout_ms) {
        struct counter cnt = {.needle = needle};
        int64_t deadline = now_ms() + timeout_ms;
        size_t off = 0;
        char buf[65536];

        while (cnt.count < want && now_ms() < deadline) {
                short events = 0;
                bool progress = false;

                if (off < req_len) {
                        ssize_t n = stream_write(s, req + off, req_len - off, &events);
                        if (n > 0) {
                                off += (size_t)n;
                                progress = true;
                        } else if (n != -EAGAIN) {
                                break;
                        }
                }
                ssize_t n = stream_read(s, buf, sizeof(buf), &events);
                if (n > 0) {
                        count_in(&cnt, buf, (size_t)n);
                        progress = true;
                } else if (n == 0 || (n < 0 && n != -EAGAIN)) {
                        break;
                }
                if (!progress) {
                        struct pollfd pfd = {.fd = s->fd, .events = events ? events : POLLIN};
                        poll(&pfd, 1, 200);
                }
        }
        return cnt.count;
}

static char *repeat(const char *one, unsigned n, size_t *ret_len) {
        size_t l = strlen(one);
        char *all = malloc(l * n + 1);

        assert_non_null(all);
        for (unsigned i = 0; i < n; i++)
                memcpy(all + i * l, one, l);
        all[l * n] = 0;
        *ret_len = l * n;
        return all;
}

static void assert_https_answers(struct fixture *f) {
        struct chan c;
        struct stream s;
        static const char req[] = "GET /tether/v1/nothing-here HTTP/1.1\r\nHost: mp\r\n\r\n";

        assert_int_equal(chan_open_port(&c, &f->p, &f->d, f->p.https_port), 0);
        s = (struct stream){.fd = c.fd, .tls = c.tls};
        assert_int_equal(pipeline(&s, req, strlen(req), "HTTP/1.1 404 ", 1, 10000), 1);
        chan_close(&c);
}

static void test_pipelined_https(void **state) {
        struct fixture *f = *state;
        struct chan c;
        struct stream s;
        size_t len = 0;
        /* The shortest request: the most of them in one TLS record, which
         * is what one read hands the server. */
        _cleanup_(freep) char *reqs = repeat("GET / HTTP/1.1\r\n\r\n", PIPELINED, &len);

        /* Any client certificate passes the handshake: no sign-in needed. */
        assert_int_equal(chan_open_port(&c, &f->p, &f->d, f->p.https_port), 0);
        s = (struct stream){.fd = c.fd, .tls = c.tls};
        unsigned got = pipeline(&s, reqs, len, "HTTP/1.1 404 ", PIPELINED, 120000);
        chan_close(&c);
        assert_alive(&f->p);
        assert_int_equal(got, PIPELINED);
        /* and it still answers others */
        assert_https_answers(f);
        assert_alive(&f->p);
}

static void test_pipelined_admin(void **state) {
        struct fixture *f = *state;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stream s = {.fd = -1};
        size_t len = 0;
        _cleanup_(freep) char *reqs = repeat("GET / HTTP/1.1\r\n\r\n", PIPELINED, &len);
        _cleanup_(freep) char *out = NULL;

        assert_true((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%.80s/admin.sock", f->p.state) <
                    sizeof(sa.sun_path));
        s.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s.fd >= 0);
        assert_int_equal(connect(s.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        unsigned got = pipeline(&s, reqs, len, "HTTP/1.1 404 ", PIPELINED, 120000);
        close(s.fd);
        assert_alive(&f->p);
        assert_int_equal(got, PIPELINED);
        assert_int_equal(mp_cli(&f->p, &out, (const char *const[]){"status", NULL}), 0);
        assert_alive(&f->p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_pipelined_https, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_pipelined_admin, setup_default, teardown),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
