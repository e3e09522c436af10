/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Several tether-mp nodes on one PostgreSQL database: this node's ID, and
 * the delivery of pushes another node's admin API wrote to the devices this
 * node holds. The writer NOTIFYs (a hint); this node LISTENs, and also looks
 * on a timer, so nothing depends on a hint arriving. Each run takes the
 * pending targets of its online devices with FOR UPDATE SKIP LOCKED, marks
 * them delivered and queues the frames in the same transaction: they leave
 * after the group commit, as every acknowledgement does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "mp/mp.h"
#include "transport/guid.h"

#define CLUSTER_TICK_USEC (1000ULL * 1000ULL)
/* a node not seen for this long no longer counts for the share */
#define NODE_STALE_SECONDS 10

struct mp_cluster {
        struct mp_server *srv;
        sd_event_source *timer, *io;
        int listen_fd;
        unsigned live;      /* nodes alive, this one included */
        uint32_t push_rate; /* this node's share of PushRate (0: unthrottled) */
};

/* PushRate is the site's: each node alive sends at its share of it. */
static void share_rate(struct mp_cluster *cl) {
        uint32_t rate = cl->srv->cfg->push_rate;
        unsigned live = 0;
        int r;

        r = mp_registry_node_heartbeat(cl->srv->reg, time(NULL), NODE_STALE_SECONDS, &live);
        if (r < 0 || live == 0)
                return; /* keep the last share */
        if (live != cl->live)
                log_info("%u node(s) alive: this node sends at most %u push(es)/s of the site's %u", live,
                         rate ? (rate / live ? rate / live : 1) : 0, rate);
        cl->live = live;
        cl->push_rate = rate ? (rate / live ? rate / live : 1) : 0;
}

uint32_t mp_cluster_push_rate(const struct mp_server *srv) {
        return srv->cluster ? srv->cluster->push_rate : srv->cfg->push_rate;
}

/* NodeID= when set; else <state-dir>/node-id, a GUID made at first start. */
int mp_cluster_node_id(const struct mp_config *cfg, char **ret) {
        char path[4096], buf[128] = "";
        _cleanup_(fclosep) FILE *f = NULL;

        if (cfg->node_id && *cfg->node_id) {
                *ret = strdup(cfg->node_id);
                return *ret ? 0 : -ENOMEM;
        }
        snprintf(path, sizeof(path), "%s/node-id", cfg->state_dir);
        f = fopen(path, "re");
        if (f) {
                if (!fgets(buf, sizeof(buf), f))
                        buf[0] = 0;
                buf[strcspn(buf, "\r\n")] = 0;
                if (!*buf)
                        return log_error_errno(-EINVAL, "%s is empty: remove it or set NodeID=", path);
        } else if (errno == ENOENT) {
                _cleanup_(closep) int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                int r = tether_guid_new(buf);

                if (fd < 0 || r < 0)
                        return log_error_errno(fd < 0 ? -errno : r, "Failed to create %s: %m", path);
                if (dprintf(fd, "%s\n", buf) < 0)
                        return log_error_errno(-EIO, "Failed to write %s", path);
        } else
                return log_error_errno(-errno, "Failed to read %s: %m", path);
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

struct take_ctx {
        struct mp_server *srv;
        char **ids;
        size_t n, cap;
        int error;
        size_t sent;
};

static void collect_online(struct mp_session *s, void *u) {
        struct take_ctx *t = u;

        if (t->error || s->status != MP_DEVICE_APPROVED || !s->conn || s->conn->dead)
                return;
        if (t->n == t->cap) {
                size_t ncap = t->cap ? t->cap * 2 : 64;
                char **x = realloc(t->ids, ncap * sizeof(*x));
                if (!x) {
                        t->error = -ENOMEM;
                        return;
                }
                t->ids = x;
                t->cap = ncap;
        }
        t->ids[t->n++] = s->client_id; /* borrowed: no session goes away during the run */
}

static int deliver_taken(uint64_t push_id, const char *client_id, uint8_t **frame, size_t len, void *u) {
        struct take_ctx *t = u;
        struct mp_session *s = mp_session_find(t->srv, client_id);
        struct mp_buf *buf;
        int r;

        if (!s || s->status != MP_DEVICE_APPROVED || !s->conn || s->conn->dead)
                return 0; /* left pending: its next sign-in gets it */
        r = mp_registry_target_advance(t->srv->reg, push_id, client_id, MP_TARGET_DELIVERED, time(NULL));
        if (r == -ESTALE)
                return 0;
        if (r < 0)
                return r;
        if (s->conn->kind == MP_CONN_HTTPS) {
                (void)mp_https_finish_poll(s->conn); /* the poll's answer reads the backlog */
                t->sent++;
                return 0;
        }
        buf = mp_buf_take(TAKE_PTR(*frame), len);
        if (!buf)
                return -ENOMEM;
        r = mp_conn_send(s->conn, buf);
        mp_buf_unref(buf);
        if (r >= 0)
                t->sent++;
        return 0;
}

/* A run takes at most PushBatch, and at most this node's share of a second. */
static unsigned take_limit(const struct mp_cluster *cl) {
        unsigned batch = cl->srv->cfg->push_batch;

        return cl->push_rate && cl->push_rate < batch ? cl->push_rate : batch;
}

/* One run: at most take_limit() targets (the per-node throttle); returns true
 * when it took a full batch, so that another run follows soon. */
static bool take_run(struct mp_cluster *cl) {
        struct mp_server *srv = cl->srv;
        struct take_ctx t = {.srv = srv};
        int r;

        mp_sessions_walk(srv, collect_online, &t);
        r = t.error;
        if (r >= 0)
                r = mp_registry_take(srv->reg, t.ids, t.n, time(NULL), take_limit(cl), deliver_taken, &t);
        free(t.ids);
        if (r < 0) {
                log_warning_errno(r, "Failed to take this node's pushes from the other nodes: %m");
                return false;
        }
        if (r > 0)
                log_info("Took %d push target(s) written by other nodes; sent %zu", r, t.sent);
        if (mp_registry_dirty(srv->reg))
                mp_server_flush(srv);
        return (unsigned)r >= take_limit(cl);
}

static int on_hint(sd_event_source *source, int fd, uint32_t revents, void *userdata);

/* Watches the hint connection; it is re-made on the timer after a loss. */
static void watch_hints(struct mp_cluster *cl) {
        int fd;

        if (cl->io)
                return;
        fd = mp_registry_listen_fd(cl->srv->reg);
        if (fd < 0)
                return;
        if (sd_event_add_io(cl->srv->event, &cl->io, fd, EPOLLIN, on_hint, cl) < 0)
                cl->io = NULL;
        cl->listen_fd = fd;
}

static void arm(struct mp_cluster *cl, uint64_t usec) {
        if (sd_event_source_set_time_relative(cl->timer, usec) < 0 ||
            sd_event_source_set_enabled(cl->timer, SD_EVENT_ONESHOT) < 0)
                log_error("Failed to arm the push take timer");
}

struct hint_ctx {
        struct mp_cluster *cl;
        bool take;
};

/* An administrator on another node decided a device held here: tell it,
 * as that node would have if it held the device. */
static void device_decided(struct mp_server *srv, const char *payload) {
        const char *sp = strchr(payload, ' ');
        const char *me = mp_registry_node(srv->reg);
        enum mp_device_status status;
        int r;

        if (!sp || ((size_t)(sp - payload) == strlen(me) && strncmp(payload, me, strlen(me)) == 0))
                return; /* this node's own decision: told already */
        if (!mp_session_find(srv, sp + 1))
                return;
        r = mp_registry_device(srv->reg, sp + 1, &status, NULL);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the new status of '%s': %m", sp + 1);
                return;
        }
        log_info("Another node decided '%s': %s", sp + 1, mp_device_status_name(status));
        mp_session_decided(srv, sp + 1, status);
}

static void on_one_hint(const char *channel, const char *payload, void *userdata) {
        struct hint_ctx *h = userdata;

        if (strcmp(channel, "tether_push") == 0)
                h->take = true;
        else if (strcmp(channel, "tether_device") == 0)
                device_decided(h->cl->srv, payload);
}

static int on_hint(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct hint_ctx h = {.cl = userdata};
        int n;

        (void)source, (void)fd, (void)revents;
        n = mp_registry_listen_drain(h.cl->srv->reg, on_one_hint, &h);
        if (n < 0) {
                h.cl->io = sd_event_source_disable_unref(h.cl->io);
                return 0;
        }
        if (mp_registry_dirty(h.cl->srv->reg))
                mp_server_flush(h.cl->srv);
        if (h.take && !h.cl->srv->shutting_down)
                arm(h.cl, 0); /* at the next loop iteration */
        return 0;
}

static int on_tick(sd_event_source *source, uint64_t usec, void *userdata) {
        struct mp_cluster *cl = userdata;
        bool more;

        (void)source, (void)usec;
        if (cl->srv->shutting_down)
                return 0;
        watch_hints(cl);
        share_rate(cl);
        more = take_run(cl);
        /* a full run: the next once this node's share allows it */
        if (!more)
                arm(cl, CLUSTER_TICK_USEC);
        else
                arm(cl, cl->push_rate ? 1000000ULL * take_limit(cl) / cl->push_rate : 0);
        return 0;
}

int mp_cluster_start(struct mp_server *srv, struct mp_cluster **ret) {
        struct mp_cluster *cl;
        int r;

        *ret = NULL;
        if (mp_registry_listen_fd(srv->reg) == -EOPNOTSUPP)
                return 0; /* one node (SQLite): it wrote every push itself */
        cl = calloc(1, sizeof(*cl));
        if (!cl)
                return -ENOMEM;
        cl->srv = srv;
        cl->listen_fd = -1;
        cl->push_rate = srv->cfg->push_rate;
        r = sd_event_add_time_relative(srv->event, &cl->timer, CLOCK_MONOTONIC, CLUSTER_TICK_USEC, 10000,
                                       on_tick, cl);
        if (r < 0) {
                free(cl);
                return r;
        }
        (void)sd_event_source_set_enabled(cl->timer, SD_EVENT_ONESHOT);
        watch_hints(cl);
        share_rate(cl);
        log_info("Node %s: taking the pushes other nodes write for the devices held here",
                 mp_registry_node(srv->reg));
        *ret = cl;
        return 0;
}

struct mp_cluster *mp_cluster_free(struct mp_cluster *cl) {
        if (!cl)
                return NULL;
        sd_event_source_disable_unref(cl->timer);
        sd_event_source_disable_unref(cl->io);
        free(cl);
        return NULL;
}
