/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"
#include "transport/sign.h"
#include "transport/tls.h"

struct mp_buf *mp_buf_new(const void *data, size_t len) {
        struct mp_buf *b = malloc(sizeof(*b) + len + 1);

        if (!b)
                return NULL;
        b->ref = 1;
        b->len = len;
        if (len)
                memcpy(b->data, data, len);
        b->data[len] = 0;
        return b;
}

struct mp_buf *mp_buf_take(uint8_t *data, size_t len) {
        struct mp_buf *b = mp_buf_new(data, len);

        free(data);
        return b;
}

struct mp_buf *mp_buf_ref(struct mp_buf *b) {
        if (b)
                b->ref++;
        return b;
}

void mp_buf_unref(struct mp_buf *b) {
        if (b && --b->ref == 0)
                free(b);
}

static void format_peer(struct mp_conn *c, const struct sockaddr *sa) {
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (sa && sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                port = ntohs(in->sin_port);
        } else if (sa && sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                port = ntohs(in6->sin6_port);
        } else {
                strscpy(host, sizeof(host), "local");
        }
        strscpy(c->address, sizeof(c->address), host);
        if (sa && sa->sa_family == AF_INET6)
                snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host, port);
        else if (port)
                snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
        else
                strscpy(c->peer, sizeof(c->peer), host);
}

/* ---- the caps on connections ---- */

struct addr_count {
        char address[64];
        unsigned n;
};

static int addr_cmp(const void *a, const void *b) {
        return strcmp(((const struct addr_count *)a)->address, ((const struct addr_count *)b)->address);
}

static unsigned unauth_at(struct mp_server *srv, const char *address) {
        struct addr_count key;
        void *node;

        strscpy(key.address, sizeof(key.address), address);
        node = tfind(&key, &srv->unauth_by_addr, addr_cmp);
        return node ? (*(struct addr_count **)node)->n : 0;
}

static int unauth_add(struct mp_conn *c) {
        struct mp_server *srv = c->srv;
        struct addr_count *a = calloc(1, sizeof(*a)), **node;

        if (!a)
                return -ENOMEM;
        strscpy(a->address, sizeof(a->address), c->address);
        node = tsearch(a, &srv->unauth_by_addr, addr_cmp);
        if (!node) {
                free(a);
                return -ENOMEM;
        }
        if (*node != a)
                free(a);
        (*node)->n++;
        srv->n_unauth++;
        return 0;
}

static void unauth_remove(struct mp_conn *c) {
        struct mp_server *srv = c->srv;
        struct addr_count key, *a;
        void *node;

        strscpy(key.address, sizeof(key.address), c->address);
        node = tfind(&key, &srv->unauth_by_addr, addr_cmp);
        if (!node)
                return;
        a = *(struct addr_count **)node;
        srv->n_unauth--;
        if (--a->n == 0) {
                tdelete(a, &srv->unauth_by_addr, addr_cmp);
                free(a);
        }
}

/* NULL when a new connection from c->address fits, else the cap it hits. */
static const char *over_cap(struct mp_conn *c) {
        const struct mp_config *cfg = c->srv->cfg;

        if (c->srv->n_net_conns >= cfg->max_conns)
                return "MaxConnections";
        if (c->srv->n_unauth >= cfg->max_unauth)
                return "MaxUnauthenticated";
        if (unauth_at(c->srv, c->address) >= cfg->max_unauth_per_addr)
                return "MaxUnauthenticatedPerAddress";
        return NULL;
}

/* Under a flood, one line a second, with the count since the last. */
static void log_refusal(struct mp_conn *c, const char *cap) {
        struct mp_server *srv = c->srv;
        uint64_t now = mp_now_usec();

        if (now - srv->overload_log_usec < 1000000ULL && srv->overload_log_usec) {
                srv->overload_unlogged++;
                return;
        }
        log_warning("Connection from %s refused: over %s (%zu connections, %zu not signed in; %u more "
                    "refused since the last such line)",
                    c->peer, cap, srv->n_net_conns, srv->n_unauth, srv->overload_unlogged);
        srv->overload_log_usec = now;
        srv->overload_unlogged = 0;
}

void mp_conn_authenticated(struct mp_conn *c) {
        if (c->authenticated || c->overloaded || c->kind == MP_CONN_ADMIN)
                return;
        c->authenticated = true;
        unauth_remove(c);
}

/* Counts a new connection in the caps, or marks it to be refused. */
static int conn_admit(struct mp_conn *c) {
        const char *cap;

        if (c->kind == MP_CONN_ADMIN)
                return 0;
        cap = over_cap(c);
        if (cap) {
                if (c->srv->n_overloaded >= MP_MAX_OVERLOADED)
                        return -EBUSY;
                log_refusal(c, cap);
                c->overloaded = true;
                c->srv->n_overloaded++;
                return 0;
        }
        return unauth_add(c);
}

static void conn_unadmit(struct mp_conn *c) {
        if (c->kind == MP_CONN_ADMIN)
                return;
        if (c->overloaded) {
                c->srv->n_overloaded--;
                return;
        }
        if (!c->authenticated)
                unauth_remove(c);
}

/* A peer that sends and never reads (pipelined requests, keepalives) gets
 * no more answers queued than this: its socket is left unread until the
 * output drains. */
static bool conn_input_full(const struct mp_conn *c) {
        return c->out_bytes >= MP_CONN_OUT_MAX || mp_http_input_full(c);
}

static void conn_update_events(struct mp_conn *c) {
        uint32_t ev = EPOLLIN | EPOLLET;

        if (c->dead || !c->io)
                return;
        /* Writability is asked for only when a write found the socket full:
         * queued output otherwise leaves with the next flush. */
        if (c->want_write)
                ev |= EPOLLOUT;
        if (ev != c->io_events) {
                if (sd_event_source_set_io_events(c->io, ev) >= 0)
                        c->io_events = ev;
        }
}

static ssize_t conn_read(struct mp_conn *c, void *buf, size_t len) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        ssize_t n;

        if (!c->tls) {
                n = read(c->fd, buf, len);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
                return n;
        }
        n = tether_tls_read(c->tls, buf, len, &want);
        if (n == -EAGAIN && want == TETHER_TLS_WANT_WRITE)
                c->want_write = true;
        return n;
}

static ssize_t conn_write(struct mp_conn *c, const void *buf, size_t len) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        ssize_t n;

        if (!c->tls) {
                n = send(c->fd, buf, len, MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                        c->want_write = true;
                        return -EAGAIN;
                }
                return n < 0 ? -errno : n;
        }
        n = tether_tls_write(c->tls, buf, len, &want);
        if (n == -EAGAIN && want == TETHER_TLS_WANT_WRITE)
                c->want_write = true;
        return n;
}

int mp_conn_flush(struct mp_conn *c) {
        if (c->dead)
                return -ECONNRESET;
        if (!c->handshake_done)
                return 0;
        /* The durability rule: no byte leaves while records written before
         * it are uncommitted; the server's flush commits, then comes back. */
        if (mp_registry_dirty(c->srv->reg) && !c->srv->writing_committed) {
                mp_server_want_flush(c->srv, c);
                return 0;
        }
        c->want_write = false;
        while (c->out_head) {
                struct mp_out *o = c->out_head;
                ssize_t n = conn_write(c, o->buf->data + o->off, o->buf->len - o->off);

                if (n == -EAGAIN)
                        break;
                if (n < 0) {
                        log_debug_errno((int)n, "%s: write failed: %m", c->peer);
                        mp_conn_close(c, NULL);
                        return (int)n;
                }
                o->off += (size_t)n;
                c->out_bytes -= (size_t)n;
                if (o->off == o->buf->len) {
                        c->out_head = o->next;
                        if (!c->out_head)
                                c->out_tail = NULL;
                        mp_buf_unref(o->buf);
                        free(o);
                }
        }
        if (!c->out_head && c->close_after_flush) {
                mp_conn_close(c, NULL);
                return 0;
        }
        /* The peer read its answers: parse and read what it sent meanwhile. */
        if (c->input_stalled && !conn_input_full(c)) {
                c->input_stalled = false;
                mp_conn_want_input(c);
        }
        conn_update_events(c);
        return 0;
}

int mp_conn_send(struct mp_conn *c, struct mp_buf *buf) {
        struct mp_out *o;

        if (c->dead)
                return -ECONNRESET;
        o = calloc(1, sizeof(*o));
        if (!o)
                return -ENOMEM;
        o->buf = mp_buf_ref(buf);
        if (c->out_tail)
                c->out_tail->next = o;
        else
                c->out_head = o;
        c->out_tail = o;
        c->out_bytes += buf->len;
        mp_server_want_flush(c->srv, c);
        return 0;
}

int mp_conn_send_bytes(struct mp_conn *c, const void *data, size_t len) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = mp_buf_new(data, len);

        if (!b)
                return -ENOMEM;
        return mp_conn_send(c, b);
}

void mp_conn_close_after_flush(struct mp_conn *c) {
        if (c->dead)
                return;
        c->close_after_flush = true;
        if (!c->out_head)
                mp_conn_close(c, NULL);
        else
                mp_server_want_flush(c->srv, c);
}

void mp_conn_close(struct mp_conn *c, const char *why) {
        struct mp_server *srv = c->srv;

        if (c->dead)
                return;
        if (why)
                log_info("Connection from %s closed: %s", c->peer, why);
        c->dead = true;

        if (c->kind == MP_CONN_CHANNEL || c->kind == MP_CONN_HTTPS)
                mp_channel_closed(c);
        if (c->kind == MP_CONN_ADMIN)
                mp_admin_conn_closed(srv, c);
        mp_http_free(c);

        c->io = sd_event_source_disable_unref(c->io);
        c->resume_src = sd_event_source_disable_unref(c->resume_src);
        conn_unadmit(c);
        if (c->tls) {
                if (c->handshake_done)
                        tether_tls_shutdown(c->tls);
                c->tls = tether_tls_conn_free(c->tls);
        }
        if (c->fd >= 0) {
                close(c->fd);
                c->fd = -1;
        }
        while (c->out_head) {
                struct mp_out *o = c->out_head;
                c->out_head = o->next;
                mp_buf_unref(o->buf);
                free(o);
        }
        c->out_tail = NULL;
        c->out_bytes = 0;
        c->dec = tether_frame_decoder_free(c->dec);

        if (c->prev)
                c->prev->next = c->next;
        else if (srv->conns == c)
                srv->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        srv->n_conns--;
        if (c->kind == MP_CONN_CHANNEL)
                srv->n_channel_conns--;
        if (c->kind != MP_CONN_ADMIN && !c->overloaded)
                srv->n_net_conns--;
        mp_conn_unref(c);
}

struct mp_conn *mp_conn_ref(struct mp_conn *c) {
        c->ref++;
        return c;
}

void mp_conn_unref(struct mp_conn *c) {
        if (!c || --c->ref > 0)
                return;
        tether_key_free(c->peer_key);
        free(c);
}

/* No usable client key: say which, since "no client certificate" would
 * send an administrator who provisioned, say, an RSA-1024 key astray. */
static void conn_log_refused_key(struct mp_conn *c, int r) {
        char name[64];

        if (tether_tls_peer_key_name(c->tls, name, sizeof(name)) < 0) {
                log_debug("%s: no client certificate", c->peer);
                return;
        }
        log_warning("TLS client certificate from %s refused: its key is %s (%s); the protocol allows ECDSA "
                    "P-256, Ed25519 and RSA of 2048 to 8192 bits",
                    c->peer, name, r == -EKEYREJECTED ? "not allowed" : strerror(-r));
}

static int conn_handshake(struct mp_conn *c) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        int r;

        r = tether_tls_handshake(c->tls, &want);
        if (r < 0) {
                log_info("TLS handshake with %s failed: %s", c->peer, tether_tls_conn_error(c->tls));
                mp_conn_close(c, NULL);
                return r;
        }
        if (r == 0) {
                c->want_write = want == TETHER_TLS_WANT_WRITE;
                conn_update_events(c);
                return 0;
        }
        c->handshake_done = true;
        c->want_write = false;
        log_debug("%s: TLS session %s", c->peer, tether_tls_conn_resumed(c->tls) ? "resumed" : "new");
        r = tether_tls_peer_key(c->tls, &c->peer_key);
        if (r < 0)
                conn_log_refused_key(c, r);
        if (c->overloaded && c->kind == MP_CONN_CHANNEL) {
                /* The contract's refusal: come back later, or elsewhere.
                 * The connection ends once the SIGNIN an agent sends right
                 * after its handshake is read (mp_channel_input): closed
                 * with it unread, the socket would send a reset, which
                 * can discard the GOODBYE before the agent reads it. */
                (void)mp_channel_goodbye(c, TETHER_GOODBYE_OVERLOADED, c->srv->cfg->overload_retry_after);
                return 1;
        }
        return 1;
}

static int conn_input(struct mp_conn *c, const uint8_t *data, size_t len) {
        if (c->kind == MP_CONN_CHANNEL)
                return mp_channel_input(c, data, len);
        return mp_http_input(c, data, len);
}

static void conn_process(struct mp_conn *c) {
        static uint8_t buf[64 * 1024];
        int r;

        if (!c->handshake_done && c->tls) {
                r = conn_handshake(c);
                if (r <= 0)
                        return;
        }
        if (c->out_head || c->want_write) {
                r = mp_conn_flush(c);
                if (r < 0 || c->dead)
                        return;
        }
        if (c->http) {
                /* what a previous round left unparsed goes first */
                r = mp_http_input(c, NULL, 0);
                if (r < 0 || c->dead)
                        return;
        }
        for (;;) {
                ssize_t n;

                if (c->dead || c->close_after_flush)
                        return;
                if (conn_input_full(c)) {
                        /* Edge-triggered: the socket is left readable and
                         * unread; mp_conn_want_input comes back to it. */
                        c->input_stalled = true;
                        break;
                }
                n = conn_read(c, buf, sizeof(buf));
                if (n == -EAGAIN)
                        break;
                if (n == 0) {
                        mp_conn_close(c, c->session || c->http ? NULL : "closed by peer");
                        return;
                }
                if (n < 0) {
                        log_debug_errno((int)n, "%s: read failed: %m", c->peer);
                        mp_conn_close(c, NULL);
                        return;
                }
                c->last_rx_usec = mp_now_usec();
                r = conn_input(c, buf, (size_t)n);
                if (r < 0 || c->dead)
                        return;
        }
        conn_update_events(c);
}

/* Group commit under load: do not let acknowledgements wait behind a long
 * queue of readable connections. */
static void conn_maybe_flush(struct mp_server *srv) {
        if (srv->flush_count >= 256 ||
            (srv->flush_count > 0 && mp_now_usec() - srv->flush_first_usec > 20000))
                mp_server_flush(srv);
}

static int conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct mp_conn *c = userdata;
        struct mp_server *srv = c->srv;

        mp_conn_ref(c);
        if (revents & (EPOLLERR | EPOLLHUP) && !(revents & EPOLLIN))
                mp_conn_close(c, NULL);
        else
                conn_process(c);
        mp_conn_unref(c);
        conn_maybe_flush(srv);
        return 0;
}

static int conn_resume(sd_event_source *s, void *userdata) {
        struct mp_conn *c = userdata;
        struct mp_server *srv = c->srv;

        (void)s;
        mp_conn_ref(c);
        if (!c->dead)
                conn_process(c);
        mp_conn_unref(c);
        conn_maybe_flush(srv);
        return 0;
}

void mp_conn_want_input(struct mp_conn *c) {
        if (c->dead)
                return;
        if (!c->resume_src) {
                if (sd_event_add_defer(c->srv->event, &c->resume_src, conn_resume, c) < 0) {
                        mp_conn_close(c, "out of memory");
                        return;
                }
                /* after the sockets that are ready now: a pipelining peer
                 * takes its turn with the others */
                (void)sd_event_source_set_priority(c->resume_src, SD_EVENT_PRIORITY_NORMAL + 10);
        }
        (void)sd_event_source_set_enabled(c->resume_src, SD_EVENT_ONESHOT);
}

int mp_conn_new(struct mp_server *srv, enum mp_conn_kind kind, int fd, const struct sockaddr *sa,
                socklen_t salen, struct mp_conn **ret) {
        struct mp_conn *c;
        int r;

        (void)salen;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->srv = srv;
        c->kind = kind;
        c->ref = 1;
        c->fd = fd;
        c->created_usec = c->last_rx_usec = mp_now_usec();
        format_peer(c, sa);
        r = conn_admit(c);
        if (r < 0) {
                free(c);
                return r;
        }

        if (kind != MP_CONN_ADMIN) {
                r = tether_tls_conn_new(srv->tls, fd, NULL, &c->tls);
                if (r < 0)
                        goto fail;
        } else {
                c->handshake_done = true;
        }
        if (kind == MP_CONN_CHANNEL) {
                /* Before a verified SIGNIN, one frame of a SIGNIN's size at
                 * most (channel.c widens it after). */
                r = tether_frame_decoder_new(srv->cfg->max_signin < srv->cfg->max_frame
                                                     ? srv->cfg->max_signin
                                                     : srv->cfg->max_frame,
                                             &c->dec);
                if (r < 0)
                        goto fail;
        } else {
                r = mp_http_attach(c);
                if (r < 0)
                        goto fail;
        }
        /* Edge-triggered: every handler reads until EAGAIN, and with ten
         * thousand sockets a level-triggered epoll would report every
         * not-yet-dispatched one again on each loop iteration. */
        r = sd_event_add_io(srv->event, &c->io, fd, EPOLLIN | EPOLLET, conn_io, c);
        if (r < 0)
                goto fail;
        c->io_events = EPOLLIN | EPOLLET;

        c->next = srv->conns;
        if (srv->conns)
                srv->conns->prev = c;
        srv->conns = c;
        srv->n_conns++;
        if (kind == MP_CONN_CHANNEL)
                srv->n_channel_conns++;
        if (kind != MP_CONN_ADMIN && !c->overloaded)
                srv->n_net_conns++;
        *ret = c;
        return 0;
fail:
        conn_unadmit(c);
        c->io = sd_event_source_disable_unref(c->io);
        mp_http_free(c);
        tether_frame_decoder_free(c->dec);
        tether_tls_conn_free(c->tls);
        free(c);
        return r;
}
