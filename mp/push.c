/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"
#include "transport/sign.h"

static void push_free(struct mp_push *p) {
        if (!p)
                return;
        sd_event_source_disable_unref(p->timer);
        for (size_t i = 0; i < p->n_targets; i++)
                free(p->targets[i]);
        free(p->targets);
        free(p->task_param);
        mp_buf_unref(p->frame);
        free(p);
}

static void push_unlink(struct mp_server *srv, struct mp_push *p) {
        for (struct mp_push **pp = &srv->pushes; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        return;
                }
}

void mp_push_drop_unstored(struct mp_server *srv) {
        struct mp_push **pp = &srv->pushes;

        while (*pp) {
                struct mp_push *p = *pp;
                json_object *o = NULL;
                int r = mp_registry_push_json(srv->reg, p->push_id, time(NULL), &o, NULL);

                json_object_put(o);
                if (r >= 0) {
                        pp = &p->next;
                        continue;
                }
                /* not stored, or not known now: sending it could hand out a
                 * push the records do not have; a stored one still reaches
                 * its devices at their next sign-in */
                log_warning_errno(r, "Push %llu (TaskGUID %s) stopped: not in the records (%m)",
                                  (unsigned long long)p->push_id, p->task_guid);
                *pp = p->next;
                push_free(p);
        }
}

void mp_push_free_all(struct mp_server *srv) {
        while (srv->pushes) {
                struct mp_push *p = srv->pushes;
                srv->pushes = p->next;
                push_free(p);
        }
}

/* Sends the push to one target if it is online; returns true when sent. */
static bool push_deliver(struct mp_server *srv, struct mp_push *p, const char *client_id) {
        struct mp_session *s = mp_session_find(srv, client_id);
        int r;

        if (!s || s->status != MP_DEVICE_APPROVED || !s->conn || s->conn->dead)
                return false; /* kept pending: delivered at the next sign-in or poll */
        if (s->conn->kind == MP_CONN_HTTPS)
                return mp_https_finish_poll(s->conn) >= 0;
        /* recorded first: a node that no longer holds the session sends nothing */
        r = mp_registry_target_advance(srv->reg, p->push_id, client_id, MP_TARGET_DELIVERED, time(NULL));
        if (r == -ESTALE)
                return false;
        if (r < 0)
                log_warning_errno(r, "Failed to record delivery to '%s', ignoring: %m", client_id);
        return mp_conn_send(s->conn, p->frame) >= 0;
}

static int push_timer(sd_event_source *source, uint64_t usec, void *userdata);

static void push_step(struct mp_server *srv, struct mp_push *p) {
        uint64_t now = mp_now_usec(), next;
        size_t n;

        n = mp_throttle_take(&p->throttle, now, p->n_targets - p->next_target, &next);
        for (size_t i = 0; i < n; i++) {
                if (push_deliver(srv, p, p->targets[p->next_target]))
                        p->sent++;
                p->next_target++;
        }
        if (p->next_target >= p->n_targets) {
                log_info("Finished sending push task (PushID: %llu TaskGUID: %s) to %zu of %zu clients "
                         "online in "
                         "%.3f s; the others get it when they sign in",
                         (unsigned long long)p->push_id, p->task_guid, p->sent, p->n_targets,
                         (double)(mp_now_usec() - p->started_usec) / 1e6);
                push_unlink(srv, p);
                push_free(p);
                return;
        }
        /* Next round: a timer at the throttle's time, or at once (the next
         * loop iteration) so other connections are served in between. */
        if (sd_event_source_set_time(p->timer, next) < 0 ||
            sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT) < 0)
                log_error("Failed to re-arm the fan-out timer of push %llu", (unsigned long long)p->push_id);
}

static int push_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        struct mp_push *p = userdata;

        (void)source;
        (void)usec;
        push_step(p->srv, p);
        return 0;
}

struct online_ctx {
        struct mp_server *srv;
        uint64_t now;
        char **ids;
        size_t n;
        int error;
};

static void collect_online(struct mp_session *s, void *u) {
        struct online_ctx *o = u;
        char **t;

        if (o->error || s->status != MP_DEVICE_APPROVED || !mp_session_online(o->srv, s, o->now))
                return;
        t = realloc(o->ids, (o->n + 1) * sizeof(*o->ids));
        if (!t) {
                o->error = -ENOMEM;
                return;
        }
        o->ids = t;
        o->ids[o->n] = strdup(s->client_id);
        if (!o->ids[o->n]) {
                o->error = -ENOMEM;
                return;
        }
        o->n++;
}

int mp_push_start(struct mp_server *srv, const struct mp_push_request *req, uint64_t *ret_push_id,
                  char ret_guid[TETHER_GUID_LEN], size_t *ret_n_targets) {
        struct tether_msg msg = {.type = TETHER_FRAME_PUSH};
        struct mp_push *p;
        uint8_t *frame = NULL;
        size_t frame_len = 0;
        time_t now = time(NULL);
        int r;

        if (req->task_type == 0 || req->task_type > 65535)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->srv = srv;
        p->task_type = req->task_type;
        p->task_param = strdup(req->task_param ? req->task_param : "");
        if (!p->task_param) {
                r = -ENOMEM;
                goto fail;
        }
        p->expires = now + (req->expires_seconds ? req->expires_seconds : srv->cfg->push_expires);

        if (req->all && srv->cluster) {
                /* several nodes: online anywhere, by the presence records */
                r = mp_registry_online_ids(srv->reg, &p->targets, &p->n_targets);
                if (r < 0)
                        goto fail;
        } else if (req->all) {
                struct online_ctx o = {.srv = srv, .now = mp_now_usec()};

                mp_sessions_walk(srv, collect_online, &o);
                p->targets = o.ids;
                p->n_targets = o.n;
                if (o.error < 0) {
                        r = o.error;
                        goto fail;
                }
        } else {
                p->targets = calloc(req->n_targets ? req->n_targets : 1, sizeof(*p->targets));
                if (!p->targets) {
                        r = -ENOMEM;
                        goto fail;
                }
                for (size_t i = 0; i < req->n_targets; i++) {
                        enum mp_device_status st;

                        if (!tether_guid_valid(req->targets[i])) {
                                r = -EINVAL;
                                goto fail;
                        }
                        r = mp_registry_device(srv->reg, req->targets[i], &st, NULL);
                        if (r < 0)
                                goto fail; /* -ENOENT: unknown device */
                        p->targets[p->n_targets] = strdup(req->targets[i]);
                        if (!p->targets[p->n_targets]) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        p->n_targets++;
                }
        }

        r = mp_registry_push_reserve(srv->reg, &p->push_id, &p->task_id);
        if (r < 0)
                goto fail;
        if (req->task_guid && tether_guid_valid(req->task_guid))
                r = strscpy(p->task_guid, sizeof(p->task_guid), req->task_guid);
        else
                r = tether_guid_new(p->task_guid);
        if (r < 0)
                goto fail;

        /* One body, one signature, for the whole fan-out: no ClientID. */
        msg.push.timestamp = now;
        msg.push.push_id = p->push_id;
        msg.push.task_id = p->task_id;
        strscpy(msg.push.task_guid, sizeof(msg.push.task_guid), p->task_guid);
        msg.push.task_type = p->task_type;
        msg.push.task_param = p->task_param;
        msg.push.expires = p->expires;
        r = tether_msg_seal(&msg, mp_site_signer(srv), srv->cfg->max_frame, &frame, &frame_len);
        if (r < 0)
                goto fail;
        p->frame = mp_buf_take(frame, frame_len);
        if (!p->frame) {
                r = -ENOMEM;
                goto fail;
        }
        r = mp_registry_push_store(srv->reg, p->push_id, p->task_id, p->task_guid, p->task_type,
                                   p->task_param, now, p->expires, p->frame->data, p->frame->len);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < p->n_targets; i++) {
                r = mp_registry_target_add(srv->reg, p->push_id, p->targets[i], now);
                if (r < 0)
                        goto fail;
        }

        mp_throttle_init(&p->throttle, mp_cluster_push_rate(srv), srv->cfg->push_batch, mp_now_usec());
        /* the seeds' BgbServer.log says this first; here the push row has
         * just been written rather than read */
        log_info("Get one push message from database.");
        p->started_usec = mp_now_usec();
        {
                char push_id[32], guid[64];
                const char *fields[] = {push_id, guid, NULL};

                snprintf(push_id, sizeof(push_id), "PUSH_ID=%llu", (unsigned long long)p->push_id);
                snprintf(guid, sizeof(guid), "TASK_GUID=%s", p->task_guid);
                log_struct(LOG_INFO, fields,
                           "Starting to send push task (PushID: %llu TaskID: %llu TaskGUID: %s TaskType: %u "
                           "TaskParam: %s) to %zu clients with throttling (strategy: %u param: %u)",
                           (unsigned long long)p->push_id, (unsigned long long)p->task_id, p->task_guid,
                           p->task_type, p->task_param, p->n_targets, mp_throttle_strategy(&p->throttle),
                           mp_throttle_param(&p->throttle));
        }

        r = sd_event_add_time(srv->event, &p->timer, CLOCK_MONOTONIC, p->started_usec, 1000, push_timer, p);
        if (r < 0)
                goto fail;
        p->next = srv->pushes;
        srv->pushes = p;

        *ret_push_id = p->push_id;
        strscpy(ret_guid, TETHER_GUID_LEN, p->task_guid);
        *ret_n_targets = p->n_targets;
        return 0;
fail:
        push_free(p);
        return r;
}
