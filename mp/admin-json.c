/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's JSON, made from the store's plain records. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "mp/registry.h"
#include "mp/util.h"
#include "transport/message.h"

/* NULL strings are left out, as NULL columns always were. */
static void add_str(json_object *o, const char *key, const char *v) {
        if (v)
                json_object_object_add(o, key, json_object_new_string(v));
}

static void add_int(json_object *o, const char *key, int64_t v) {
        json_object_object_add(o, key, json_object_new_int64(v));
}

static void add_time(json_object *o, const char *key, int64_t t) {
        char ts[TETHER_TIMESTAMP_LEN];

        if (tether_timestamp_format((time_t)t, ts) >= 0)
                json_object_object_add(o, key, json_object_new_string(ts));
}

static json_object *device_json(const struct mp_device_rec *d) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "client_id", d->client_id);
        add_str(o, "hostname", d->hostname);
        add_str(o, "version", d->version);
        add_str(o, "status", mp_device_status_name(d->status));
        add_str(o, "fingerprint", d->fingerprint);
        add_time(o, "first_seen", d->first_seen);
        add_time(o, "last_seen", d->last_seen);
        add_str(o, "address", d->address);
        add_str(o, "conflict", d->conflict);
        add_str(o, "node", d->node);
        return o;
}

int mp_registry_devices_json(struct mp_registry *reg, json_object **ret) {
        struct mp_store *st = mp_registry_store(reg);
        struct mp_device_rec *recs = NULL;
        json_object *arr;
        size_t n = 0;
        int r;

        r = st->ops->devices(st, &recs, &n);
        if (r < 0)
                return r;
        arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                json_object_array_add(arr, device_json(&recs[i]));
        mp_device_recs_free(recs, n);
        if (!arr)
                return -ENOMEM;
        *ret = arr;
        return 0;
}

static json_object *conflict_json(const struct mp_conflict_rec *c) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "client_id", c->client_id);
        add_str(o, "kind", c->kind);
        add_str(o, "known_fingerprint", c->known_fingerprint);
        add_str(o, "offered_fingerprint", c->offered_fingerprint);
        add_str(o, "hostname", c->hostname);
        add_str(o, "address", c->address);
        add_str(o, "established_hostname", c->established_hostname);
        add_str(o, "established_address", c->established_address);
        add_time(o, "first_seen", c->first_seen);
        add_time(o, "last_seen", c->last_seen);
        add_int(o, "count", c->count);
        return o;
}

int mp_registry_conflicts_json(struct mp_registry *reg, json_object **ret) {
        struct mp_store *st = mp_registry_store(reg);
        struct mp_conflict_rec *recs = NULL;
        json_object *arr;
        size_t n = 0;
        int r;

        r = st->ops->conflicts(st, &recs, &n);
        if (r < 0)
                return r;
        arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                json_object_array_add(arr, conflict_json(&recs[i]));
        mp_conflict_recs_free(recs, n);
        if (!arr)
                return -ENOMEM;
        *ret = arr;
        return 0;
}

static json_object *target_json(const struct mp_target_rec *t) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "client_id", t->client_id);
        add_str(o, "state", mp_target_state_name(t->state));
        add_time(o, "updated", t->updated);
        if (t->answered) {
                add_int(o, "return_code", t->return_code);
                add_str(o, "return_code_name", tether_return_code_name(t->return_code));
                add_str(o, "detail", t->detail);
                add_str(o, "response_xml", t->response_xml);
                add_str(o, "signature_hex", t->signature_hex);
                add_time(o, "received", t->received);
        }
        return o;
}

static json_object *push_summary_json(const struct mp_push_rec *p) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_int(o, "push_id", (int64_t)p->push_id);
        add_int(o, "task_id", (int64_t)p->task_id);
        add_str(o, "task_guid", p->task_guid);
        add_int(o, "task_type", p->task_type);
        add_str(o, "task_param", p->task_param);
        add_time(o, "created", p->created);
        add_time(o, "expires", p->expires);
        return o;
}

int mp_registry_push_json(struct mp_registry *reg, uint64_t push_id, time_t now, json_object **ret,
                          bool *ret_done) {
        struct mp_store *st = mp_registry_store(reg);
        _cleanup_(json_object_putp) json_object *obj = NULL, *targets = NULL, *summary = NULL;
        struct mp_push_rec p = {};
        struct mp_target_rec *recs = NULL;
        int counts[MP_TARGET_EXPIRED + 1] = {0};
        bool done = true;
        size_t n = 0;
        int r;

        r = st->ops->push_get(st, push_id, now, &p, &recs, &n);
        if (r < 0)
                return r;
        obj = push_summary_json(&p);
        mp_push_rec_done(&p);
        targets = json_object_new_array();
        summary = json_object_new_object();
        for (size_t i = 0; obj && targets && i < n; i++) {
                if ((unsigned)recs[i].state <= MP_TARGET_EXPIRED)
                        counts[recs[i].state]++;
                if (recs[i].state != MP_TARGET_ANSWERED && recs[i].state != MP_TARGET_EXPIRED)
                        done = false;
                json_object_array_add(targets, target_json(&recs[i]));
        }
        mp_target_recs_free(recs, n);
        if (!obj || !targets || !summary)
                return -ENOMEM;
        for (int k = 0; k <= MP_TARGET_EXPIRED; k++)
                json_object_object_add(summary, mp_target_state_name(k), json_object_new_int(counts[k]));
        json_object_object_add(obj, "counts", TAKE_PTR(summary));
        json_object_object_add(obj, "total", json_object_new_int((int)n));
        json_object_object_add(obj, "done", json_object_new_boolean(done));
        json_object_object_add(obj, "targets", TAKE_PTR(targets));
        *ret = TAKE_PTR(obj);
        if (ret_done)
                *ret_done = done;
        return 0;
}

static json_object *response_json(const struct mp_response_rec *x) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "client_id", x->client_id);
        add_str(o, "task_guid", x->task_guid);
        add_int(o, "push_id", (int64_t)x->push_id);
        add_int(o, "task_id", (int64_t)x->task_id);
        add_int(o, "return_code", x->return_code);
        add_str(o, "return_code_name", tether_return_code_name(x->return_code));
        add_str(o, "detail", x->detail);
        add_str(o, "response_xml", x->response_xml);
        add_str(o, "signature_hex", x->signature_hex);
        add_str(o, "address", x->address);
        add_time(o, "received", x->received);
        return o;
}

int mp_registry_responses_json(struct mp_registry *reg, unsigned limit, json_object **ret) {
        struct mp_store *st = mp_registry_store(reg);
        struct mp_response_rec *recs = NULL;
        json_object *arr;
        size_t n = 0;
        int r;

        r = st->ops->responses(st, limit ? limit : 20, &recs, &n);
        if (r < 0)
                return r;
        arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                json_object_array_add(arr, response_json(&recs[i]));
        mp_response_recs_free(recs, n);
        if (!arr)
                return -ENOMEM;
        *ret = arr;
        return 0;
}

static json_object *key_event_json(const struct mp_key_event_rec *e) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "client_id", e->client_id);
        add_str(o, "kind", e->kind);
        add_str(o, "old_fingerprint", e->old_fingerprint);
        add_str(o, "new_fingerprint", e->new_fingerprint);
        add_str(o, "reason", e->reason);
        add_str(o, "hostname", e->hostname);
        add_str(o, "address", e->address);
        /* seconds since the epoch, as GET /v1/key-events has always said */
        add_int(o, "at", e->at);
        return o;
}

int mp_registry_key_events_json(struct mp_registry *reg, json_object **ret) {
        struct mp_store *st = mp_registry_store(reg);
        struct mp_key_event_rec *recs = NULL;
        json_object *arr;
        size_t n = 0;
        int r;

        r = st->ops->key_events(st, &recs, &n);
        if (r < 0)
                return r;
        arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                json_object_array_add(arr, key_event_json(&recs[i]));
        mp_key_event_recs_free(recs, n);
        if (!arr)
                return -ENOMEM;
        *ret = arr;
        return 0;
}
