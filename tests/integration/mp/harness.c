/* SPDX-License-Identifier: Apache-2.0 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/strutil.h"
#include "transport/guid.h"
#include "transport/sign.h"
#include "transport/tls.h"

#ifndef TETHER_MP_BIN
#error "TETHER_MP_BIN must name the tether-mp binary"
#endif

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_ports(struct mp_server_proc *p) {
        char path[256], line[64];
        FILE *f;

        snprintf(path, sizeof(path), "%s/ports", p->state);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                uint64_t v;
                line[strcspn(line, "\n")] = 0;
                if (startswith(line, "tcp=") && parse_u64(line + 4, 1, 65535, &v) == 0)
                        p->tcp_port = (uint16_t)v;
                else if (startswith(line, "https=") && parse_u64(line + 6, 0, 65535, &v) == 0)
                        p->https_port = (uint16_t)v;
        }
        fclose(f);
        return p->tcp_port ? 0 : -EBADMSG;
}

/* Under tests/integration/mp-pg/pg-run.sh (TETHER_TEST_PG set) each server
 * directory gets a PostgreSQL database of its own, kept across restarts:
 * the same tests then run on the PostgreSQL store. */
static int pg_store_url(const struct mp_server_proc *p, char *url, size_t size) {
        const char *base = getenv("TETHER_TEST_PG"), *q;
        char db[64] = "t_", sql[128];
        size_t n = 2;
        PGconn *c;

        if (!base || !*base)
                return 0;
        for (const char *s = strrchr(p->dir, '/') ? strrchr(p->dir, '/') + 1 : p->dir; *s && n < 60; s++)
                if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9'))
                        db[n++] = *s;
                else if (*s >= 'A' && *s <= 'Z')
                        db[n++] = (char)(*s - 'A' + 'a');
        db[n] = 0;
        c = PQconnectdb(base);
        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "harness: PostgreSQL %s: %s", base, PQerrorMessage(c));
                PQfinish(c);
                return -ENOTCONN;
        }
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        PQclear(PQexec(c, sql)); /* "already exists" after a restart */
        PQfinish(c);
        q = strchr(base, '?');
        snprintf(url, size, "postgresql:///%s%s", db, q ? q : "");
        return 1;
}

static int spawn(struct mp_server_proc *p, const char *const *extra) {
        char notify[200], buf[256], store[512];
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *argv[64];
        int fd, n = 0, r;
        int64_t deadline;

        snprintf(notify, sizeof(notify), "%s/notify", p->dir);
        unlink(notify);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        strscpy(sa.sun_path, sizeof(sa.sun_path), notify);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -errno;
        }

        argv[n++] = TETHER_MP_BIN;
        argv[n++] = "serve";
        argv[n++] = "--state-dir";
        argv[n++] = p->state;
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1:0";
        argv[n++] = "--https-listen";
        argv[n++] = "127.0.0.1:0";
        argv[n++] = "--console-listen";
        argv[n++] = "127.0.0.1:0";
        argv[n++] = "--verbose";
        r = pg_store_url(p, store, sizeof(store));
        if (r < 0)
                return r;
        if (r > 0) {
                argv[n++] = "--store";
                argv[n++] = store;
        }
        for (size_t i = 0; extra && extra[i] && n < 62; i++)
                argv[n++] = extra[i];
        argv[n] = NULL;

        p->pid = fork();
        if (p->pid < 0) {
                close(fd);
                return -errno;
        }
        if (p->pid == 0) {
                char log[256];
                int lfd;

                /* never outlive the test, even when it crashes */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                snprintf(log, sizeof(log), "%s/server.log", p->dir);
                lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                if (lfd >= 0) {
                        dup2(lfd, STDOUT_FILENO);
                        dup2(lfd, STDERR_FILENO);
                }
                setenv("NOTIFY_SOCKET", notify, 1);
                unsetenv("JOURNAL_STREAM");
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }

        r = -ETIMEDOUT;
        deadline = now_ms() + 30000;
        while (now_ms() < deadline) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int status;

                if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                        p->pid = 0;
                        r = -ECHILD;
                        break;
                }
                if (poll(&pfd, 1, 200) <= 0)
                        continue;
                ssize_t len = recv(fd, buf, sizeof(buf) - 1, 0);
                if (len <= 0)
                        continue;
                buf[len] = 0;
                if (strstr(buf, "READY=1")) {
                        r = 0;
                        break;
                }
        }
        close(fd);
        if (r < 0) {
                fprintf(stderr, "tether-mp did not start (%s); log in %s/server.log\n", strerror(-r),
                        p->dir);
                if (p->pid > 0) {
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, NULL, 0);
                        p->pid = 0;
                }
                return r;
        }
        r = read_ports(p);
        if (r < 0)
                return r;

        char path[256];
        struct tether_key *tls_key = NULL;
        snprintf(path, sizeof(path), "%s/tls.key", p->state);
        r = tether_key_load_private(path, &tls_key);
        if (r < 0)
                return r;
        r = tether_key_fingerprint(tls_key, p->tls_fingerprint);
        tether_key_free(tls_key);
        if (r < 0)
                return r;
        tether_key_free(p->site_key);
        p->site_key = NULL;
        snprintf(path, sizeof(path), "%s/site.pub", p->state);
        return tether_key_load_public(path, &p->site_key);
}

int mp_proc_start(struct mp_server_proc *p, const char *const *extra) {
        memset(p, 0, sizeof(*p));
        strscpy(p->dir, sizeof(p->dir), "/tmp/mp-it-XXXXXX");
        if (!mkdtemp(p->dir))
                return -errno;
        snprintf(p->state, sizeof(p->state), "%s/state", p->dir);
        return spawn(p, extra);
}

int mp_proc_restart(struct mp_server_proc *p, const char *const *extra) {
        return spawn(p, extra);
}

int mp_proc_stop(struct mp_server_proc *p, int sig) {
        int status = 0;
        int64_t deadline = now_ms() + 20000;

        if (p->pid <= 0)
                return -ECHILD;
        kill(p->pid, sig);
        for (;;) {
                pid_t w = waitpid(p->pid, &status, WNOHANG);
                if (w == p->pid)
                        break;
                if (now_ms() > deadline) {
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, &status, 0);
                        break;
                }
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        p->pid = 0;
        return status;
}

void mp_proc_cleanup(struct mp_server_proc *p) {
        char cmd[300];

        if (p->pid > 0)
                mp_proc_stop(p, SIGKILL);
        tether_key_free(p->site_key);
        p->site_key = NULL;
        if (p->dir[0] && !getenv("MP_IT_KEEP")) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "failed to remove %s\n", p->dir);
        }
}

int mp_cli(struct mp_server_proc *p, char **ret_out, const char *const *args) {
        const char *argv[64];
        int pipefd[2], n = 0, status;
        char *out = NULL;
        size_t len = 0;
        FILE *m;
        pid_t pid;

        argv[n++] = TETHER_MP_BIN;
        for (size_t i = 0; args[i] && n < 60; i++)
                argv[n++] = args[i];
        argv[n++] = "--state-dir";
        argv[n++] = p->state;
        argv[n] = NULL;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(pipefd[1]);
        m = open_memstream(&out, &len);
        for (;;) {
                char buf[4096];
                ssize_t k = read(pipefd[0], buf, sizeof(buf));
                if (k <= 0)
                        break;
                fwrite(buf, 1, (size_t)k, m);
        }
        fclose(m);
        close(pipefd[0]);
        waitpid(pid, &status, 0);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

json_object *mp_cli_json(struct mp_server_proc *p, const char *const *args) {
        const char *a[32];
        char *out = NULL;
        json_object *o;
        size_t n = 0;

        for (; args[n] && n < 30; n++)
                a[n] = args[n];
        a[n++] = "--json";
        a[n] = NULL;
        if (mp_cli(p, &out, a) != 0) {
                free(out);
                return NULL;
        }
        o = json_tokener_parse(out);
        free(out);
        return o;
}

static int write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        if (!f)
                return -errno;
        fputs(text, f);
        return fclose(f) == 0 ? 0 : -EIO;
}

int device_new(struct device *d, const char *client_id, const char *dir) {
        int r;

        memset(d, 0, sizeof(*d));
        if (client_id)
                strscpy(d->client_id, sizeof(d->client_id), client_id);
        else if ((r = tether_guid_new(d->client_id)) < 0)
                return r;
        r = tether_key_generate(TETHER_KEY_EC_P256, &d->key);
        if (r < 0)
                return r;
        r = tether_cert_self_signed(d->key, d->client_id, NULL, 30, &d->cert_pem);
        if (r < 0)
                return r;
        if (dir) {
                static unsigned seq;
                unsigned s = ++seq;
                snprintf(d->cert_path, sizeof(d->cert_path), "%s/dev%u.crt", dir, s);
                snprintf(d->key_path, sizeof(d->key_path), "%s/dev%u.key", dir, s);
                r = write_text(d->cert_path, d->cert_pem);
                if (r >= 0)
                        r = tether_key_save_private(d->key, d->key_path);
        }
        return r;
}

void device_done(struct device *d) {
        tether_key_free(d->key);
        free(d->cert_pem);
        memset(d, 0, sizeof(*d));
}

static int wait_fd(int fd, enum tether_tls_want want, int timeout_ms) {
        struct pollfd pfd = {.fd = fd, .events = want == TETHER_TLS_WANT_WRITE ? POLLOUT : POLLIN};
        int r = poll(&pfd, 1, timeout_ms);

        if (r < 0)
                return -errno;
        return r == 0 ? -ETIMEDOUT : 0;
}

int chan_open(struct chan *c, struct mp_server_proc *p, const struct device *d) {
        return chan_open_port(c, p, d, p->tcp_port);
}

int chan_open_port(struct chan *c, struct mp_server_proc *p, const struct device *d, uint16_t port) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        int r, one = 1;

        memset(c, 0, sizeof(*c));
        c->fd = -1;
        r = tether_tls_client_new(d->cert_pem, d->key, NULL, p->tls_fingerprint, &c->ctx);
        if (r < 0)
                return r;
        r = tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &c->dec);
        if (r < 0)
                return r;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        r = tether_tls_conn_new(c->ctx, c->fd, "127.0.0.1", &c->tls);
        if (r < 0)
                return r;
        for (;;) {
                r = tether_tls_handshake(c->tls, &want);
                if (r == 1)
                        return 0;
                if (r < 0) {
                        fprintf(stderr, "handshake: %s\n", tether_tls_conn_error(c->tls));
                        return r;
                }
                r = wait_fd(c->fd, want, 10000);
                if (r < 0)
                        return r;
        }
}

void chan_close(struct chan *c) {
        tether_tls_conn_free(c->tls);
        tether_tls_ctx_free(c->ctx);
        tether_frame_decoder_free(c->dec);
        if (c->fd >= 0)
                close(c->fd);
        memset(c, 0, sizeof(*c));
        c->fd = -1;
}

int chan_send_raw(struct chan *c, const void *data, size_t len) {
        const uint8_t *p = data;

        while (len > 0) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_write(c->tls, p, len, &want);

                if (n == -EAGAIN) {
                        int r = wait_fd(c->fd, want, 10000);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (n < 0)
                        return (int)n;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int chan_send(struct chan *c, const struct tether_msg *msg, const struct tether_key *signer) {
        uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        r = tether_msg_seal(msg, signer, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &len);
        if (r < 0)
                return r;
        r = chan_send_raw(c, frame, len);
        free(frame);
        return r;
}

int chan_recv(struct chan *c, int timeout_ms, struct tether_frame **ret) {
        int64_t deadline = now_ms() + timeout_ms;

        for (;;) {
                struct tether_diag diag = {0};
                size_t used = 0;
                int r;

                if (c->rlen > c->roff) {
                        r = tether_frame_decoder_feed(c->dec, c->rbuf + c->roff, c->rlen - c->roff, &used,
                                                      ret, &diag);
                        if (r < 0) {
                                fprintf(stderr, "decode: %s\n", diag.text);
                                return r;
                        }
                        c->roff += used;
                        if (r == 1)
                                return 1;
                }
                c->roff = c->rlen = 0;

                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_read(c->tls, c->rbuf, sizeof(c->rbuf), &want);
                if (n > 0) {
                        c->rlen = (size_t)n;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET;
                if (n != -EAGAIN)
                        return (int)n;
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                r = wait_fd(c->fd, want, (int)left);
                if (r < 0)
                        return r;
        }
}

int chan_recv_msg(struct chan *c, struct mp_server_proc *p, int timeout_ms, struct tether_msg **ret) {
        struct tether_frame *frame = NULL;
        struct tether_diag diag = {0};
        int r;

        r = chan_recv(c, timeout_ms, &frame);
        if (r < 0)
                return r;
        r = tether_msg_open(frame, tether_frame_type_signed(frame->type) ? p->site_key : NULL, ret, &diag);
        if (r < 0)
                fprintf(stderr, "open %s: %s\n", tether_frame_type_name(frame->type), diag.text);
        tether_frame_free(frame);
        return r;
}

int chan_signin(struct chan *c, struct mp_server_proc *p, const struct device *d,
                const struct tether_key *signer, const struct tether_key *pubkey, const char *token,
                struct tether_msg **ret) {
        struct tether_msg msg = {.type = TETHER_FRAME_SIGNIN};
        char *b64 = NULL;
        char host[64];
        int r;

        r = tether_key_spki_base64(pubkey ? pubkey : d->key, &b64);
        if (r < 0)
                return r;
        snprintf(host, sizeof(host), "host-%.8s", d->client_id);
        msg.signin.timestamp = time(NULL);
        strscpy(msg.signin.client_id, sizeof(msg.signin.client_id), d->client_id);
        msg.signin.version = (char *)"0.1.0-test";
        msg.signin.hostname = host;
        msg.signin.public_key = b64;
        msg.signin.n_task_types = 3;
        msg.signin.task_types[0] = 1;
        msg.signin.task_types[1] = 2;
        msg.signin.task_types[2] = 3;
        msg.signin.enrolment_token = (char *)token;
        r = chan_send(c, &msg, signer ? signer : d->key);
        free(b64);
        if (r < 0)
                return r;
        return chan_recv_msg(c, p, 10000, ret);
}

int make_response(const struct device *d, const struct tether_push *push, uint32_t rc, const char *detail,
                  struct tether_msg *ret) {
        memset(ret, 0, sizeof(*ret));
        ret->type = TETHER_FRAME_RESPONSE;
        ret->response.timestamp = time(NULL);
        ret->response.push_id = push->push_id;
        ret->response.task_id = push->task_id;
        ret->response.return_code = rc;
        strscpy(ret->response.task_guid, sizeof(ret->response.task_guid), push->task_guid);
        strscpy(ret->response.client_id, sizeof(ret->response.client_id), d->client_id);
        ret->response.detail = (char *)detail;
        return 0;
}
