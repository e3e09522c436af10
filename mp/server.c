/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "mp/console.h"
#include "mp/devsync.h"
#include "mp/mp.h"
#include "mp/tickets.h"
#include "transport/sign.h"
#include "transport/tls.h"

#define SWEEP_USEC (1000ULL * 1000ULL)
/* How long a channel refused over a cap waits for the SIGNIN it would
 * otherwise leave unread (mp/conn.c, conn_handshake). */
#define MP_OVERLOADED_LINGER_USEC (2ULL * 1000ULL * 1000ULL)
#define EXPIRE_EVERY_USEC (30ULL * 1000000ULL)
/* Time for the GOODBYEs to drain; systemd's TimeoutStopSec is 30 s. */
#define SHUTDOWN_GRACE_USEC (15ULL * 1000000ULL)

uint64_t mp_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

/* "ADDR:PORT", "[V6]:PORT" or ":PORT". */
int mp_listen_tcp(const char *spec, int *ret_fd, uint16_t *ret_port) {
        char host[256];
        const char *colon = strrchr(spec, ':');
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV},
                        *res = NULL;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd, one = 1, r;
        size_t hl;

        if (!colon)
                return -EINVAL;
        hl = (size_t)(colon - spec);
        if (hl >= sizeof(host))
                return -EINVAL;
        memcpy(host, spec, hl);
        host[hl] = 0;
        if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
                memmove(host, host + 1, hl - 2);
                host[hl - 2] = 0;
        }
        r = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
        if (r != 0)
                return -EINVAL;
        fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(res);
                return r;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
                r = -errno;
                freeaddrinfo(res);
                close(fd);
                return r;
        }
        freeaddrinfo(res);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
        *ret_fd = fd;
        return 0;
}

/* Gives the socket just bound to group, through an O_PATH descriptor of
 * exactly that inode (a link renamed over it in between is not followed). */
static int admin_socket_group(const char *path, const char *group) {
        _cleanup_(closep) int fd = -1;
        struct group *g = getgrnam(group);
        struct stat st;

        if (!g)
                return -ENOENT;
        fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISSOCK(st.st_mode))
                return -ENOTSOCK;
        return fchownat(fd, "", (uid_t)-1, g->gr_gid, AT_EMPTY_PATH) < 0 ? -errno : 0;
}

static int listen_unix(const struct mp_config *cfg, int *ret_fd) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        mode_t old;
        int fd, r;

        if (strscpy(sa.sun_path, sizeof(sa.sun_path), cfg->admin_socket) < 0)
                return -ENAMETOOLONG;
        /* A socket left by a killed server is removed; anything else is not
         * ours to delete. */
        if (lstat(cfg->admin_socket, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                /* ...unless a running server still answers on it */
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
                close(fd);
                if (r == 0)
                        return -EADDRINUSE;
                unlink(cfg->admin_socket);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* Born with its final mode (0660 with a group, else 0600): nothing
         * is changed by path afterwards. */
        old = umask(cfg->admin_group && *cfg->admin_group ? 0117 : 0177);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (r < 0 || listen(fd, 64) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        if (cfg->admin_group && *cfg->admin_group &&
            admin_socket_group(cfg->admin_socket, cfg->admin_group) < 0)
                log_warning("Failed to give group '%s' access to %s, ignoring", cfg->admin_group,
                            cfg->admin_socket);
        *ret_fd = fd;
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* One listener per HTTPSListen item: the first is srv->https_fd (its port
 * is the one status and the ports file name first), the others, such as
 * 443 for agents behind a proxy that lets CONNECT through to 443 only,
 * serve the same endpoints. */
static int listen_https(struct mp_server *srv, const char *list) {
        char spec[300];
        int r;

        if (!list || strcmp(list, "off") == 0)
                return 0;
        for (const char *p = list; *p; p += strspn(p, " ")) {
                size_t len = strcspn(p, " ");
                int fd = -1;
                uint16_t port = 0;

                if (len >= sizeof(spec) || srv->n_https_more >= MP_MAX_HTTPS_LISTEN - 1)
                        return log_error_errno(-EINVAL, "HTTPSListen: bad or too many items in '%s'", list);
                memcpy(spec, p, len);
                spec[len] = '\0';
                p += len;
                r = mp_listen_tcp(spec, &fd, &port);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s (HTTPS)%s: %m", spec,
                                               r == -EACCES ? "; a port below 1024 needs "
                                                              "CAP_NET_BIND_SERVICE"
                                                            : "");
                if (srv->https_fd < 0) {
                        srv->https_fd = fd;
                        srv->https_port = port;
                        r = sd_event_add_io(srv->event, &srv->https_src, fd, EPOLLIN, on_accept, srv);
                } else {
                        unsigned i = srv->n_https_more++;

                        srv->https_more_fd[i] = fd;
                        srv->https_more_port[i] = port;
                        r = sd_event_add_io(srv->event, &srv->https_more_src[i], fd, EPOLLIN, on_accept,
                                            srv);
                }
                if (r < 0)
                        return log_error_errno(r, "Failed to watch the HTTPS listener %s: %m", spec);
        }
        return 0;
}

static bool is_https_listener(const struct mp_server *srv, int fd) {
        if (fd == srv->https_fd)
                return true;
        for (unsigned i = 0; i < srv->n_https_more; i++)
                if (fd == srv->https_more_fd[i])
                        return true;
        return false;
}

static int on_accept_resume(sd_event_source *timer, uint64_t usec, void *userdata) {
        sd_event_source *listener = userdata;
        struct mp_server *srv = sd_event_source_get_userdata(listener);

        (void)timer;
        (void)usec;
        if (!srv->shutting_down)
                (void)sd_event_source_set_enabled(listener, SD_EVENT_ON);
        sd_event_source_unref(listener);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct mp_server *srv = userdata;
        enum mp_conn_kind kind = fd == srv->channel_fd        ? MP_CONN_CHANNEL
                                 : is_https_listener(srv, fd) ? MP_CONN_HTTPS
                                                              : MP_CONN_ADMIN;

        (void)revents;
        for (unsigned i = 0; i < 256; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                struct mp_conn *c;
                int cfd, r;

                cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                break;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* Out of descriptors: the listener stays readable, so
                                 * pause it for a second instead of spinning. */
                                log_warning_errno(-errno,
                                                  "accept() failed with %zu connections open; pausing new "
                                                  "connections for 1 s: %m",
                                                  srv->n_conns);
                                (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
                                /* the timer holds a reference: shutdown may drop ours */
                                if (sd_event_add_time_relative(srv->event, NULL, CLOCK_MONOTONIC, 1000000, 0,
                                                               on_accept_resume,
                                                               sd_event_source_ref(s)) < 0) {
                                        sd_event_source_unref(s);
                                        (void)sd_event_source_set_enabled(s, SD_EVENT_ON);
                                }
                                break;
                        }
                        log_warning_errno(-errno, "accept() failed, ignoring: %m");
                        break;
                }
                if (srv->shutting_down) {
                        close(cfd);
                        continue;
                }
                r = mp_conn_new(srv, kind, cfd, kind == MP_CONN_ADMIN ? NULL : (struct sockaddr *)&ss, sl,
                                &c);
                if (r == -EBUSY) {
                        /* over the caps, and too many being refused already */
                        close(cfd);
                        continue;
                }
                if (r < 0) {
                        log_warning_errno(r, "Failed to set up a connection, ignoring: %m");
                        close(cfd);
                        continue;
                }
                log_debug("Accepted %s connection from %s",
                          kind == MP_CONN_CHANNEL ? "channel"
                          : kind == MP_CONN_HTTPS ? "HTTPS"
                                                  : "admin",
                          c->peer);
        }
        return 0;
}

void mp_server_want_flush(struct mp_server *srv, struct mp_conn *c) {
        if (c->in_flush_list)
                return;
        c->in_flush_list = true;
        mp_conn_ref(c);
        c->flush_next = srv->flush_list;
        srv->flush_list = c;
        if (srv->flush_count++ == 0)
                srv->flush_first_usec = mp_now_usec();
        (void)sd_event_source_set_enabled(srv->flush_src, SD_EVENT_ONESHOT);
}

static void check_shutdown_done(struct mp_server *srv) {
        if (srv->shutting_down && srv->n_conns == 0)
                (void)sd_event_exit(srv->event, 0);
}

/* The store lost the round's transaction with its database connection:
 * the replies held back would acknowledge records that were not stored.
 * Their connections are closed unsent; the agents resend on reconnecting. */
static void drop_unrecorded_replies(struct mp_server *srv) {
        struct mp_conn *list = srv->flush_list;

        log_warning("The records of the last round were not stored (the database transaction was lost); "
                    "closing the connections whose replies would have acknowledged them");
        srv->flush_list = NULL;
        srv->flush_count = 0;
        while (list) {
                struct mp_conn *c = list;

                list = c->flush_next;
                c->flush_next = NULL;
                c->in_flush_list = false;
                mp_conn_close(c, "records not stored (database transaction lost)");
                mp_conn_unref(c);
        }
        mp_push_drop_unstored(srv);
}

void mp_server_flush(struct mp_server *srv) {
        struct mp_conn *list;
        int r;

        /* Group commit: everything written since the last flush becomes
         * durable at once; only then do acknowledgements leave. */
        r = mp_registry_commit(srv->reg);
        if (r == -ECONNABORTED) {
                drop_unrecorded_replies(srv);
                return;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to commit the records; holding back replies: %m");
                return;
        }
        list = srv->flush_list;
        srv->flush_list = NULL;
        srv->flush_count = 0;
        srv->writing_committed = true;
        while (list) {
                struct mp_conn *c = list;

                list = c->flush_next;
                c->flush_next = NULL;
                c->in_flush_list = false;
                if (!c->dead)
                        (void)mp_conn_flush(c);
                mp_conn_unref(c);
        }
        srv->writing_committed = false;
        if (srv->waiters)
                mp_admin_check_waiters(srv, false);
        /* replies to the waiters were queued just now */
        if (srv->flush_list && !mp_registry_dirty(srv->reg)) {
                list = srv->flush_list;
                srv->flush_list = NULL;
                srv->flush_count = 0;
                while (list) {
                        struct mp_conn *c = list;
                        list = c->flush_next;
                        c->in_flush_list = false;
                        if (!c->dead)
                                (void)mp_conn_flush(c);
                        mp_conn_unref(c);
                }
        }
        check_shutdown_done(srv);
}

static int on_flush(sd_event_source *s, void *userdata) {
        (void)s;
        mp_server_flush(userdata);
        return 0;
}

struct stale_ctx {
        struct mp_server *srv;
        uint64_t now;
        struct mp_session **list;
        size_t n;
};

static void collect_stale(struct mp_session *s, void *u) {
        struct stale_ctx *st = u;
        struct mp_session **t;

        if (!s->https || (s->conn && !s->conn->dead) || mp_session_online(st->srv, s, st->now))
                return;
        t = realloc(st->list, (st->n + 1) * sizeof(*t));
        if (!t)
                return;
        st->list = t;
        st->list[st->n++] = s;
}

static void sweep_conn(struct mp_server *srv, struct mp_conn *c, uint64_t now) {
        uint64_t keepalive = (uint64_t)srv->cfg->keepalive * 1000000ULL;

        if (c->tls && !c->handshake_done) {
                if (now - c->created_usec > MP_HANDSHAKE_TIMEOUT_USEC)
                        mp_conn_close(c, "TLS handshake timed out");
                return;
        }
        switch (c->kind) {
        case MP_CONN_CHANNEL:
                if (c->overloaded && now - c->created_usec > MP_OVERLOADED_LINGER_USEC) {
                        /* GOODBYE(overloaded) sent; no SIGNIN came to read. */
                        mp_conn_close(c, NULL);
                } else if (tether_frame_decoder_partial(c->dec) &&
                           now - c->frame_start_usec > TETHER_FRAME_DEADLINE_USEC) {
                        log_warning("Protocol error from %s: a frame did not arrive whole within 30 s",
                                    c->peer);
                        (void)mp_channel_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
                        mp_conn_close_after_flush(c);
                } else if (!c->session &&
                           now - c->created_usec > (uint64_t)srv->cfg->request_timeout * 1000000ULL) {
                        mp_conn_close(c, "no SIGNIN within RequestTimeoutSeconds");
                } else if (c->session && now - c->last_rx_usec > 2 * keepalive + 2000000ULL) {
                        mp_conn_close(c, "offline after two missed keepalives");
                }
                break;
        case MP_CONN_HTTPS:
                if (mp_http_held(c)) {
                        if (now >= mp_http_hold_deadline(c))
                                (void)mp_https_finish_poll(c);
                } else {
                        mp_http_sweep(c, now);
                }
                break;
        case MP_CONN_ADMIN:
                mp_http_sweep(c, now);
                break;
        }
}

/* A referenced copy of the connection list: answering one connection can
 * run a pipelined request that closes another (a device's older poll), so
 * the list may change under a walk. NULL with *ret_n 0 on allocation
 * failure. */
static struct mp_conn **conns_snapshot(struct mp_server *srv, size_t *ret_n) {
        struct mp_conn **all = calloc(srv->n_conns ? srv->n_conns : 1, sizeof(*all));
        size_t n = 0;

        *ret_n = 0;
        if (!all)
                return NULL;
        for (struct mp_conn *c = srv->conns; c && n < srv->n_conns; c = c->next)
                all[n++] = mp_conn_ref(c);
        *ret_n = n;
        return all;
}

static int on_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mp_server *srv = userdata;
        uint64_t now = mp_now_usec();
        struct stale_ctx st = {.srv = srv, .now = now};

        size_t n = 0;
        struct mp_conn **all = conns_snapshot(srv, &n);

        for (size_t i = 0; i < n; i++) {
                if (!all[i]->dead)
                        sweep_conn(srv, all[i], now);
                mp_conn_unref(all[i]);
        }
        free(all);

        mp_sessions_walk(srv, collect_stale, &st);
        for (size_t i = 0; i < st.n; i++)
                mp_session_drop(srv, st.list[i]);
        free(st.list);

        if (now - srv->last_expire_usec > EXPIRE_EVERY_USEC) {
                int expired = mp_registry_expire(srv->reg, time(NULL));

                srv->last_expire_usec = now;
                mp_dupguard_expire(srv->dupguard, now);
                if (expired > 0)
                        log_info("%d push targets expired undelivered", expired);
                if (expired < 0)
                        log_warning_errno(expired, "Failed to expire pushes, ignoring: %m");
        }
        if (srv->waiters)
                mp_admin_check_waiters(srv, true);
        if (srv->flush_count > 0 || mp_registry_dirty(srv->reg))
                mp_server_flush(srv);
        check_shutdown_done(srv);

        (void)sd_event_source_set_time(s, usec + SWEEP_USEC);
        return 0;
}

static void shutdown_begin(struct mp_server *srv) {
        uint32_t window;

        if (srv->shutting_down)
                return;
        srv->shutting_down = true;
        /* Ask the fleet to come back spread over a window in which the MP
         * takes their sign-ins at the configured rate. */
        window = (uint32_t)(srv->n_channel_conns / srv->cfg->shutdown_reconnect_rate);
        if (window < 5)
                window = 5;
        if (window > 900)
                window = 900;
        log_info("Shutting down: GOODBYE(shutdown, RetryAfterSeconds=%u) to %zu channel connections", window,
                 srv->n_channel_conns);

        srv->channel_src = sd_event_source_disable_unref(srv->channel_src);
        srv->https_src = sd_event_source_disable_unref(srv->https_src);
        for (unsigned i = 0; i < srv->n_https_more; i++)
                srv->https_more_src[i] = sd_event_source_disable_unref(srv->https_more_src[i]);
        srv->admin_src = sd_event_source_disable_unref(srv->admin_src);

        mp_admin_check_waiters(srv, true);
        struct mp_buf *goodbye = NULL;
        if (mp_channel_goodbye_frame(srv, TETHER_GOODBYE_SHUTDOWN, window, &goodbye) < 0)
                log_error("Failed to build GOODBYE(shutdown); closing channels without it");
        size_t n = 0;
        struct mp_conn **all = conns_snapshot(srv, &n);

        for (size_t i = 0; i < n; i++) {
                struct mp_conn *c = all[i];

                if (c->dead) {
                        /* closed while answering another one */
                } else if (c->kind == MP_CONN_CHANNEL && c->session) {
                        if (goodbye)
                                (void)mp_conn_send(c, goodbye);
                        mp_conn_close_after_flush(c);
                } else if (c->kind == MP_CONN_HTTPS && mp_http_held(c)) {
                        (void)mp_https_finish_poll(c);
                        mp_conn_close_after_flush(c);
                } else if (c->out_head) {
                        mp_conn_close_after_flush(c);
                } else {
                        mp_conn_close(c, NULL);
                }
                mp_conn_unref(c);
        }
        free(all);
        mp_buf_unref(goodbye);
        mp_server_flush(srv);
        check_shutdown_done(srv);
}

static int on_shutdown_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mp_server *srv = userdata;

        (void)s;
        (void)usec;
        log_warning("%zu connections did not drain in time; closing them", srv->n_conns);
        (void)sd_event_exit(srv->event, 0);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct mp_server *srv = userdata;

        (void)s;
        (void)si;
        shutdown_begin(srv);
        if (srv->shutting_down)
                (void)sd_event_add_time_relative(srv->event, NULL, CLOCK_MONOTONIC, SHUTDOWN_GRACE_USEC, 0,
                                                 on_shutdown_deadline, srv);
        return 0;
}

static int write_ports(struct mp_server *srv) {
        char path[4096], text[64 + 24 * (MP_MAX_HTTPS_LISTEN + 1)];
        int n;

        snprintf(path, sizeof(path), "%s/ports", srv->cfg->state_dir);
        n = snprintf(text, sizeof(text), "tcp=%u\nhttps=%u\n", srv->channel_port, srv->https_port);
        for (unsigned i = 0; i < srv->n_https_more; i++)
                n += snprintf(text + n, sizeof(text) - (size_t)n, "https_more=%u\n",
                              srv->https_more_port[i]);
        if (srv->console)
                n += snprintf(text + n, sizeof(text) - (size_t)n, "console=%u\n",
                              mp_console_port(srv->console));
        /* Atomic so that a reader never sees half of it; not durable: it is
         * written anew at every start. */
        return write_file_atomic(path, text, (size_t)n, 0644, 0);
}

/* The administrator's console (mp/console.h), with the MP's TLS key. */
static int start_console(struct mp_server *srv, const char *cert) {
        const char *spec = srv->cfg->console_listen;
        _cleanup_(freep) uint8_t *key = NULL;
        char path[4096];
        size_t len = 0;
        int r;

        if (!spec || !*spec || strcmp(spec, "off") == 0)
                return 0;
        snprintf(path, sizeof(path), "%s/tls.key", srv->cfg->state_dir);
        r = read_file_at(AT_FDCWD, path, 1u << 20, &key, &len);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s for the console: %m", path);
        return mp_console_new(srv, spec, cert, (const char *)key, srv->cfg->console_webroot, &srv->console);
}

static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_warning_errno(-errno, "Failed to raise the open-file limit, ignoring: %m");
        }
        log_debug("Open-file limit: %llu", (unsigned long long)rl.rlim_cur);
}

int mp_server_new(struct mp_config *cfg, struct mp_server **ret) {
        _cleanup_(freep) char *cert = NULL;
        struct mp_server *srv;
        char path[4096];
        int r;

        raise_fd_limit();
        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->cfg = cfg;
        srv->channel_fd = srv->https_fd = srv->admin_fd = -1;
        srv->approval.mode = cfg->approval;
        srv->approval.token = cfg->token;
        if (cfg->approval == MP_APPROVAL_TOKEN && (!cfg->token || !*cfg->token)) {
                r = log_error_errno(-EINVAL, "Approval mode 'token' needs an enrolment token (--token)");
                goto fail;
        }

        r = mp_state_load(cfg, true, &srv->site_key, &srv->tls_key, &cert);
        if (r < 0)
                goto fail;
        r = tether_key_fingerprint(srv->site_key, srv->site_fingerprint);
        if (r >= 0)
                r = tether_key_spki_base64(srv->site_key, &srv->site_key_b64);
        if (r < 0) {
                log_error_errno(r, "Failed to encode the site key: %m");
                goto fail;
        }
        r = tether_tls_server_new(cert, srv->tls_key, &srv->tls);
        if (r < 0) {
                log_error_errno(r, "Failed to set up TLS: %m");
                goto fail;
        }
        snprintf(path, sizeof(path), "%s/tether-mp.db", cfg->state_dir);
        r = mp_registry_open(cfg->store ? cfg->store : path, &srv->reg);
        if (r < 0) {
                /* a URL may hold a password: name only the engine then */
                log_error_errno(r, "Failed to open the records at %s: %m",
                                !cfg->store                       ? path
                                : mp_store_spec_is_pg(cfg->store) ? "the PostgreSQL store"
                                                                  : cfg->store);
                goto fail;
        }
        {
                _cleanup_(freep) char *node_id = NULL;

                r = mp_cluster_node_id(cfg, &node_id);
                if (r >= 0)
                        r = mp_registry_set_node(srv->reg, node_id);
                if (r < 0)
                        goto fail;
        }
        r = mp_dupguard_new(NULL, &srv->dupguard);
        if (r < 0)
                goto fail;

        r = sd_event_new(&srv->event);
        if (r < 0)
                goto fail;
        /* Pings systemd's watchdog from the loop itself when WatchdogSec= is set. */
        (void)sd_event_set_watchdog(srv->event, true);
        r = mp_site_chain_load(srv);
        if (r >= 0)
                r = mp_tickets_start(srv);
        if (r < 0)
                goto fail;
        r = mp_listen_tcp(cfg->listen, &srv->channel_fd, &srv->channel_port);
        if (r < 0) {
                log_error_errno(r, "Failed to listen on %s: %m", cfg->listen);
                goto fail;
        }
        r = sd_event_add_io(srv->event, &srv->channel_src, srv->channel_fd, EPOLLIN, on_accept, srv);
        if (r < 0)
                goto fail;
        r = listen_https(srv, cfg->https_listen);
        if (r < 0)
                goto fail;
        r = listen_unix(cfg, &srv->admin_fd);
        if (r < 0) {
                log_error_errno(r, "Failed to listen on %s: %m", cfg->admin_socket);
                goto fail;
        }
        r = sd_event_add_io(srv->event, &srv->admin_src, srv->admin_fd, EPOLLIN, on_accept, srv);
        if (r < 0)
                goto fail;

        r = start_console(srv, cert);
        if (r < 0)
                goto fail;
        r = mp_devsync_new(srv, &srv->devsync);
        if (r < 0)
                goto fail;

        r = sd_event_add_defer(srv->event, &srv->flush_src, on_flush, srv);
        if (r < 0)
                goto fail;
        (void)sd_event_source_set_priority(srv->flush_src, SD_EVENT_PRIORITY_IDLE);
        (void)sd_event_source_set_enabled(srv->flush_src, SD_EVENT_OFF);
        r = mp_cluster_start(srv, &srv->cluster);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(srv->event, &srv->sweep_src, CLOCK_MONOTONIC, SWEEP_USEC, 100000,
                                       on_sweep, srv);
        if (r < 0)
                goto fail;
        (void)sd_event_source_set_enabled(srv->sweep_src, SD_EVENT_ON);

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        r = sd_event_add_signal(srv->event, &srv->sigterm_src, SIGTERM, on_signal, srv);
        if (r >= 0)
                r = sd_event_add_signal(srv->event, &srv->sigint_src, SIGINT, on_signal, srv);
        if (r < 0)
                goto fail;

        r = write_ports(srv);
        if (r < 0)
                log_warning_errno(r, "Failed to write %s/ports, ignoring: %m", cfg->state_dir);

        *ret = srv;
        return 0;
fail:
        mp_server_free(srv);
        return r;
}

int mp_server_run(struct mp_server *srv) {
        int r;

        printf("Site key fingerprint (pin this on agents): %s\n", srv->site_fingerprint);
        fflush(stdout);
        {
                char fpr[TETHER_FINGERPRINT_LEN];
                if (tether_key_fingerprint(srv->tls_key, fpr) >= 0)
                        log_info("TLS key fingerprint: %s", fpr);
        }
        log_info(
                "tether-mp listening: channel TCP port %u, HTTPS port %u, console port %u, admin socket %s, "
                "approval %s",
                srv->channel_port, srv->https_port, srv->console ? mp_console_port(srv->console) : 0,
                srv->cfg->admin_socket, mp_approval_mode_name(srv->approval.mode));
        for (unsigned i = 0; i < srv->n_https_more; i++)
                log_info("tether-mp listening: HTTPS also on port %u", srv->https_more_port[i]);
        (void)sd_notifyf(0, "READY=1\nSTATUS=channel port %u, HTTPS port %u", srv->channel_port,
                         srv->https_port);
        r = sd_event_loop(srv->event);
        (void)sd_notify(0, "STOPPING=1");
        r = r < 0 ? r : mp_registry_commit(srv->reg);
        log_info("tether-mp stopped");
        return r;
}

struct mp_server *mp_server_free(struct mp_server *srv) {
        if (!srv)
                return NULL;
        while (srv->conns)
                mp_conn_close(srv->conns, NULL);
        while (srv->flush_list) {
                struct mp_conn *c = srv->flush_list;
                srv->flush_list = c->flush_next;
                mp_conn_unref(c);
        }
        mp_push_free_all(srv);
        while (srv->waiters) {
                struct mp_waiter *w = srv->waiters;
                srv->waiters = w->next;
                mp_conn_unref(w->conn);
                free(w);
        }
        while (srv->sessions) {
                struct mp_session *s = *(struct mp_session **)srv->sessions;
                mp_session_drop(srv, s);
        }
        for (size_t i = 0; i < ELEMENTSOF(srv->confirm_cache); i++)
                mp_buf_unref(srv->confirm_cache[i]);
        srv->console = mp_console_free(srv->console);
        srv->devsync = mp_devsync_free(srv->devsync);
        sd_event_source_disable_unref(srv->channel_src);
        sd_event_source_disable_unref(srv->https_src);
        sd_event_source_disable_unref(srv->admin_src);
        srv->cluster = mp_cluster_free(srv->cluster);
        sd_event_source_disable_unref(srv->sweep_src);
        mp_tickets_stop(srv);
        sd_event_source_disable_unref(srv->flush_src);
        sd_event_source_disable_unref(srv->sigterm_src);
        sd_event_source_disable_unref(srv->sigint_src);
        if (srv->channel_fd >= 0)
                close(srv->channel_fd);
        if (srv->https_fd >= 0)
                close(srv->https_fd);
        for (unsigned i = 0; i < srv->n_https_more; i++) {
                sd_event_source_disable_unref(srv->https_more_src[i]);
                close(srv->https_more_fd[i]);
        }
        if (srv->admin_fd >= 0) {
                close(srv->admin_fd);
                unlink(srv->cfg->admin_socket);
        }
        mp_registry_free(srv->reg);
        mp_dupguard_free(srv->dupguard);
        tether_tls_ctx_free(srv->tls);
        mp_site_chain_free(srv);
        tether_key_free(srv->site_key);
        tether_key_free(srv->tls_key);
        free(srv->site_key_b64);
        sd_event_unref(srv->event);
        free(srv);
        return NULL;
}
