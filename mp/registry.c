/* SPDX-License-Identifier: Apache-2.0 */
/* The sign-in policy and the server's record calls, over mp/store.h. */
#include "mp/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "mp/audit.h"

/* The session epoch of each device this node signed in, by ClientID: the
 * writes made on a device's behalf are guarded by it (a node that no
 * longer holds the device records nothing for it). */
struct epoch_entry {
        struct epoch_entry *next;
        uint64_t epoch;
        char client_id[];
};

struct mp_registry {
        struct mp_store *st;
        char *node_id;
        struct epoch_entry **epochs;
        size_t n_buckets, n_epochs;
};

static size_t hash_id(const char *s, size_t n_buckets) {
        size_t h = 5381;

        while (*s)
                h = h * 33 + (unsigned char)*s++;
        return h % n_buckets;
}

static struct epoch_entry *epoch_find(struct mp_registry *reg, const char *client_id) {
        if (!reg->n_buckets)
                return NULL;
        for (struct epoch_entry *e = reg->epochs[hash_id(client_id, reg->n_buckets)]; e; e = e->next)
                if (strcmp(e->client_id, client_id) == 0)
                        return e;
        return NULL;
}

static int epoch_grow(struct mp_registry *reg) {
        size_t n = reg->n_buckets ? reg->n_buckets * 2 : 256;
        struct epoch_entry **b = calloc(n, sizeof(*b));

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < reg->n_buckets; i++)
                while (reg->epochs[i]) {
                        struct epoch_entry *e = reg->epochs[i];
                        size_t h = hash_id(e->client_id, n);

                        reg->epochs[i] = e->next;
                        e->next = b[h];
                        b[h] = e;
                }
        free(reg->epochs);
        reg->epochs = b;
        reg->n_buckets = n;
        return 0;
}

static int epoch_set(struct mp_registry *reg, const char *client_id, uint64_t epoch) {
        struct epoch_entry *e = epoch_find(reg, client_id);
        size_t h, len;

        if (e) {
                e->epoch = epoch;
                return 0;
        }
        if (reg->n_epochs >= reg->n_buckets && epoch_grow(reg) < 0)
                return -ENOMEM;
        len = strlen(client_id) + 1;
        e = malloc(sizeof(*e) + len);
        if (!e)
                return -ENOMEM;
        memcpy(e->client_id, client_id, len);
        e->epoch = epoch;
        h = hash_id(client_id, reg->n_buckets);
        e->next = reg->epochs[h];
        reg->epochs[h] = e;
        reg->n_epochs++;
        return 0;
}

static void epochs_free(struct mp_registry *reg) {
        for (size_t i = 0; i < reg->n_buckets; i++)
                while (reg->epochs[i]) {
                        struct epoch_entry *e = reg->epochs[i];
                        reg->epochs[i] = e->next;
                        free(e);
                }
        free(reg->epochs);
}

/* -ESTALE when another node (or a later sign-in) holds the device now. */
static int guard(struct mp_registry *reg, const char *client_id) {
        struct epoch_entry *e = client_id ? epoch_find(reg, client_id) : NULL;
        int r;

        if (!e)
                return -ESTALE;
        r = reg->st->ops->presence_check(reg->st, client_id, reg->node_id, e->epoch);
        if (r == -ESTALE)
                log_info("'%s' is now held by another node or session (epoch %llu here): not recorded",
                         client_id, (unsigned long long)e->epoch);
        return r;
}

const char *mp_approval_mode_name(enum mp_approval_mode m) {
        switch (m) {
        case MP_APPROVAL_AUTO:
                return "auto";
        case MP_APPROVAL_MANUAL:
                return "manual";
        case MP_APPROVAL_TOKEN:
                return "token";
        }
        return "unknown";
}

int mp_approval_mode_from_string(const char *s, enum mp_approval_mode *ret) {
        if (!s)
                return -EINVAL;
        if (strcmp(s, "auto") == 0)
                *ret = MP_APPROVAL_AUTO;
        else if (strcmp(s, "manual") == 0)
                *ret = MP_APPROVAL_MANUAL;
        else if (strcmp(s, "token") == 0)
                *ret = MP_APPROVAL_TOKEN;
        else
                return -EINVAL;
        return 0;
}

const char *mp_device_status_name(enum mp_device_status s) {
        switch (s) {
        case MP_DEVICE_APPROVED:
                return "approved";
        case MP_DEVICE_PENDING:
                return "pending";
        case MP_DEVICE_REJECTED:
                return "rejected";
        }
        return "unknown";
}

const char *mp_target_state_name(enum mp_target_state s) {
        switch (s) {
        case MP_TARGET_PENDING:
                return "pending";
        case MP_TARGET_DELIVERED:
                return "delivered";
        case MP_TARGET_ACKNOWLEDGED:
                return "acknowledged";
        case MP_TARGET_ANSWERED:
                return "answered";
        case MP_TARGET_EXPIRED:
                return "expired";
        }
        return "unknown";
}

const char *mp_signin_verdict_name(enum mp_signin_verdict v) {
        switch (v) {
        case MP_SIGNIN_APPROVED:
                return "Approved";
        case MP_SIGNIN_PENDING:
                return "Pending";
        case MP_SIGNIN_REJECTED:
                return "Rejected";
        case MP_SIGNIN_CONFLICT:
                return "Conflict";
        }
        return "unknown";
}

struct mp_store *mp_registry_store(struct mp_registry *reg) {
        return reg->st;
}

int mp_registry_open(const char *spec, struct mp_registry **ret) {
        struct mp_registry *reg;
        int r;

        reg = calloc(1, sizeof(*reg));
        if (!reg)
                return -ENOMEM;
        reg->node_id = strdup("local");
        if (!reg->node_id) {
                free(reg);
                return -ENOMEM;
        }
        r = mp_store_open(spec, &reg->st);
        if (r < 0) {
                free(reg->node_id);
                free(reg);
                return r;
        }
        *ret = reg;
        return 0;
}

struct mp_registry *mp_registry_free(struct mp_registry *reg) {
        if (!reg)
                return NULL;
        mp_store_free(reg->st);
        epochs_free(reg);
        free(reg->node_id);
        free(reg);
        return NULL;
}

int mp_registry_set_node(struct mp_registry *reg, const char *node_id) {
        char *t;

        if (!node_id || !*node_id)
                return -EINVAL;
        t = strdup(node_id);
        if (!t)
                return -ENOMEM;
        free(reg->node_id);
        reg->node_id = t;
        return 0;
}

const char *mp_registry_node(const struct mp_registry *reg) {
        return reg->node_id;
}

int mp_registry_epoch(struct mp_registry *reg, const char *client_id, uint64_t *ret) {
        struct epoch_entry *e = epoch_find(reg, client_id);

        if (!e)
                return -ENOENT;
        *ret = e->epoch;
        return 0;
}

int mp_registry_commit(struct mp_registry *reg) {
        return reg->st->ops->commit(reg->st);
}

bool mp_registry_dirty(const struct mp_registry *reg) {
        return reg->st->ops->dirty(reg->st);
}

static bool token_matches(const char *expected, const char *given) {
        size_t n;

        if (!expected || !*expected || !given)
                return false;
        n = strlen(expected);
        if (strlen(given) != n)
                return false;
        return CRYPTO_memcmp(expected, given, n) == 0;
}

int mp_registry_device(struct mp_registry *reg, const char *client_id, enum mp_device_status *ret_status,
                       char **ret_key) {
        return reg->st->ops->device_get(reg->st, client_id, ret_status, ret_key, NULL);
}

int mp_registry_touch(struct mp_registry *reg, const char *client_id, time_t now, const char *address) {
        struct epoch_entry *e;
        int r = guard(reg, client_id);

        if (r >= 0)
                r = reg->st->ops->device_seen(reg->st, client_id, now, address, NULL, NULL);
        e = r >= 0 ? epoch_find(reg, client_id) : NULL;
        /* the session ends here (the server's one call) */
        return e ? reg->st->ops->presence_release(reg->st, client_id, reg->node_id, e->epoch) : r;
}

int mp_registry_online_ids(struct mp_registry *reg, char ***ret_ids, size_t *ret_n) {
        return reg->st->ops->online_ids(reg->st, ret_ids, ret_n);
}

int mp_registry_record_duplicate(struct mp_registry *reg, const struct mp_duplicate_record *rec) {
        struct mp_conflict_new c;

        if (!rec->client_id || !rec->fingerprint)
                return -EINVAL;
        c = (struct mp_conflict_new){
                .client_id = rec->client_id,
                .kind = "duplicate-identity",
                .known_fingerprint = rec->fingerprint,
                .offered_fingerprint = rec->fingerprint,
                .hostname = rec->hostname,
                .address = rec->address,
                .established_hostname = rec->established_hostname,
                .established_address = rec->established_address,
                .now = rec->now,
        };
        return reg->st->ops->conflict_record(reg->st, &c);
}

static enum mp_device_status new_device_status(const struct mp_approval_policy *policy,
                                               const struct mp_signin_request *req) {
        switch (policy->mode) {
        case MP_APPROVAL_AUTO:
                return MP_DEVICE_APPROVED;
        case MP_APPROVAL_TOKEN:
                return token_matches(policy->token, req->enrolment_token) ? MP_DEVICE_APPROVED
                                                                          : MP_DEVICE_PENDING;
        case MP_APPROVAL_MANUAL:
        default:
                return MP_DEVICE_PENDING;
        }
}

/* This node holds the device now, in a new session epoch. */
static int claim(struct mp_registry *reg, const struct mp_signin_request *req) {
        uint64_t epoch;
        int r;

        r = reg->st->ops->presence_claim(reg->st, req->client_id, reg->node_id, req->now, &epoch);
        return r < 0 ? r : epoch_set(reg, req->client_id, epoch);
}

/* A known ClientID: the same key gets its status and last-seen; another key
 * is a conflict, recorded, and the binding is kept. */
static int signin_known(struct mp_registry *reg, const struct mp_signin_request *req, const char *known_key,
                        const char *known_fpr, enum mp_device_status status, enum mp_signin_verdict *ret) {
        int r;

        /* Keys are compared in their canonical DER form, base64'd by the
         * same encoder, so a string comparison is exact. */
        if (strcmp(known_key, req->public_key) != 0) {
                struct mp_conflict_new c = {
                        .client_id = req->client_id,
                        .kind = "key",
                        .known_fingerprint = known_fpr,
                        .offered_fingerprint = req->fingerprint,
                        .offered_key = req->public_key,
                        .hostname = req->hostname,
                        .address = req->address,
                        .now = req->now,
                };
                r = reg->st->ops->conflict_record(reg->st, &c);
                if (r < 0)
                        return r;
                *ret = MP_SIGNIN_CONFLICT;
                return 0;
        }
        r = reg->st->ops->device_seen(reg->st, req->client_id, req->now, req->address, req->hostname,
                                      req->version);
        if (r >= 0)
                r = claim(reg, req);
        if (r < 0)
                return r;
        *ret = status == MP_DEVICE_APPROVED  ? MP_SIGNIN_APPROVED
               : status == MP_DEVICE_PENDING ? MP_SIGNIN_PENDING
                                             : MP_SIGNIN_REJECTED;
        return 0;
}

int mp_registry_signin(struct mp_registry *reg, const struct mp_approval_policy *policy,
                       const struct mp_signin_request *req, enum mp_signin_verdict *ret, bool *ret_new) {
        _cleanup_(freep) char *known_key = NULL, *known_fpr = NULL;
        enum mp_device_status status;
        struct mp_device_new dev;
        int r;

        if (!req->client_id || !req->public_key || !req->fingerprint)
                return -EINVAL;
        r = reg->st->ops->device_get(reg->st, req->client_id, &status, &known_key, &known_fpr);
        if (r < 0 && r != -ENOENT)
                return r;
        if (ret_new)
                *ret_new = false;
        if (r == 0)
                return signin_known(reg, req, known_key, known_fpr, status, ret);

        dev = (struct mp_device_new){
                .client_id = req->client_id,
                .hostname = req->hostname,
                .version = req->version,
                .public_key = req->public_key,
                .fingerprint = req->fingerprint,
                .status = new_device_status(policy, req),
                .address = req->address,
                .now = req->now,
        };
        r = reg->st->ops->device_insert(reg->st, &dev);
        if (r >= 0)
                r = claim(reg, req);
        if (r < 0)
                return r;
        *ret = dev.status == MP_DEVICE_APPROVED ? MP_SIGNIN_APPROVED : MP_SIGNIN_PENDING;
        if (ret_new)
                *ret_new = true;
        return 0;
}

int mp_registry_set_status(struct mp_registry *reg, const char *client_id, enum mp_device_status status) {
        _cleanup_(freep) char *payload = NULL;
        int r;

        r = reg->st->ops->device_set_status(reg->st, client_id, status);
        if (r < 0)
                return r;
        /* the node holding the device tells it (this one does itself) */
        if (asprintf(&payload, "%s %s", reg->node_id, client_id) < 0)
                return -ENOMEM;
        return reg->st->ops->notify(reg->st, "tether_device", payload);
}

int mp_registry_device_by_fingerprint(struct mp_registry *reg, const char *fingerprint,
                                      char **ret_client_id) {
        return reg->st->ops->device_by_fingerprint(reg->st, fingerprint, ret_client_id);
}

int mp_registry_approved_ids(struct mp_registry *reg, char ***ret_ids, size_t *ret_n) {
        return reg->st->ops->approved_ids(reg->st, ret_ids, ret_n);
}

int mp_registry_push_reserve(struct mp_registry *reg, uint64_t *ret_push_id, uint64_t *ret_task_id) {
        return reg->st->ops->push_reserve(reg->st, ret_push_id, ret_task_id);
}

int mp_registry_push_store(struct mp_registry *reg, uint64_t push_id, uint64_t task_id,
                           const char *task_guid, uint32_t task_type, const char *task_param, time_t created,
                           time_t expires, const uint8_t *frame, size_t frame_len) {
        struct mp_push_rec p = {
                .push_id = push_id,
                .task_id = task_id,
                .task_guid = (char *)task_guid,
                .task_type = task_type,
                .task_param = (char *)task_param,
                .created = created,
                .expires = expires,
                .origin_node = reg->node_id,
        };
        int r;

        r = reg->st->ops->push_store(reg->st, &p, frame, frame_len);
        /* the hint leaves at commit, with the targets added after this */
        return r < 0 ? r : reg->st->ops->notify(reg->st, "tether_push", reg->node_id);
}

int mp_registry_target_add(struct mp_registry *reg, uint64_t push_id, const char *client_id, time_t now) {
        return reg->st->ops->target_add(reg->st, push_id, client_id, now);
}

int mp_registry_target_advance(struct mp_registry *reg, uint64_t push_id, const char *client_id,
                               enum mp_target_state state, time_t now) {
        int r = guard(reg, client_id);

        return r < 0 ? r : reg->st->ops->target_advance(reg->st, push_id, NULL, client_id, state, now);
}

int mp_registry_target_advance_guid(struct mp_registry *reg, const char *task_guid, const char *client_id,
                                    enum mp_target_state state, time_t now) {
        int r;

        if (!task_guid)
                return -EINVAL;
        r = guard(reg, client_id);
        return r < 0 ? r : reg->st->ops->target_advance(reg->st, 0, task_guid, client_id, state, now);
}

int mp_registry_expire(struct mp_registry *reg, time_t now) {
        return reg->st->ops->expire(reg->st, now);
}

int mp_registry_undelivered(struct mp_registry *reg, const char *client_id, time_t now, mp_push_frame_cb cb,
                            void *userdata) {
        struct mp_frame_rec *rows = NULL;
        size_t n = 0;
        int r;

        /* Read first: the callback may write to the same tables. */
        r = reg->st->ops->undelivered(reg->st, client_id, now, &rows, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = cb(rows[i].push_id, rows[i].frame, rows[i].len, userdata);
        mp_frame_recs_free(rows, n);
        return r < 0 ? r : (int)n;
}

int mp_registry_response_store(struct mp_registry *reg, const struct mp_response_record *rec,
                               bool *ret_duplicate) {
        bool inserted = false;
        int r;

        r = guard(reg, rec->client_id);
        if (r < 0)
                return r;
        r = reg->st->ops->response_insert(reg->st, rec, &inserted);
        if (r < 0)
                return r;
        *ret_duplicate = !inserted;
        if (!inserted)
                return 0;
        r = mp_registry_target_advance_guid(reg, rec->task_guid, rec->client_id, MP_TARGET_ANSWERED,
                                            rec->received);
        return r < 0 ? r : 0;
}

int mp_registry_take(struct mp_registry *reg, char *const *ids, size_t n_ids, time_t now, unsigned limit,
                     mp_take_cb cb, void *userdata) {
        struct mp_frame_rec *rows = NULL;
        size_t n = 0;
        int r;

        if (n_ids == 0)
                return 0;
        r = reg->st->ops->targets_take(reg->st, reg->node_id, ids, n_ids, now, limit, &rows, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = cb(rows[i].push_id, rows[i].client_id, &rows[i].frame, rows[i].len, userdata);
        mp_frame_recs_free(rows, n);
        return r < 0 ? r : (int)n;
}

int mp_registry_node_heartbeat(struct mp_registry *reg, time_t now, unsigned stale_after,
                               unsigned *ret_live) {
        return reg->st->ops->node_heartbeat(reg->st, reg->node_id, now, stale_after, ret_live);
}

int mp_registry_listen_fd(struct mp_registry *reg) {
        return reg->st->ops->listen_fd(reg->st);
}

int mp_registry_listen_drain(struct mp_registry *reg, mp_store_hint_cb cb, void *userdata) {
        return reg->st->ops->listen_drain(reg->st, cb, userdata);
}

/* ---- Key rotation (issue #15) ------------------------------------------ */

int mp_registry_site_key_sent(struct mp_registry *reg, const char *client_id, uint32_t serial, time_t now) {
        int r = guard(reg, client_id);

        return r < 0 ? r : reg->st->ops->site_key_sent(reg->st, client_id, serial, now);
}

int mp_registry_site_key_confirmed(struct mp_registry *reg, const char *client_id, uint32_t serial,
                                   time_t now) {
        int r = guard(reg, client_id);

        return r < 0 ? r : reg->st->ops->site_key_confirmed(reg->st, client_id, serial, now);
}

int mp_registry_site_key_counts(struct mp_registry *reg, uint64_t *counts, size_t n) {
        return reg->st->ops->site_key_counts(reg->st, counts, n);
}

int mp_registry_key_event(struct mp_registry *reg, const struct mp_signin_request *req,
                          const char *old_fingerprint, const char *kind, const char *why) {
        struct mp_key_event_new ev = {
                .client_id = req->client_id,
                .kind = kind,
                .old_fingerprint = old_fingerprint,
                .new_fingerprint = req->fingerprint,
                .reason = why,
                .hostname = req->hostname,
                .address = req->address,
                .at = req->now,
        };

        char detail[256];
        struct mp_audit_entry audit = {
                .actor = "device",
                .address = req->address,
                .action = why ? "device.key-rollover-refused" : "device.key-rotation",
                .target = req->client_id,
                .outcome = why ? "denied" : "ok",
                .detail = why ? why : detail,
                .now = req->now,
        };
        int r;

        if (!req->client_id || !kind)
                return -EINVAL;
        r = reg->st->ops->key_event_insert(reg->st, &ev);
        if (r < 0)
                return r;
        /* The console's audit log records it too (issue #15), in the same
         * transaction as the key event. */
        snprintf(detail, sizeof(detail), "key %s -> %s", old_fingerprint ? old_fingerprint : "-",
                 req->fingerprint ? req->fingerprint : "-");
        return mp_audit_append(reg->st, &audit, NULL);
}

/* Before the sign-in that claims the device, as its first binding is: the
 * update itself is conditional on the old key, so of two nodes rebinding
 * the same ClientID only one moves it. */
int mp_registry_rebind(struct mp_registry *reg, const struct mp_signin_request *req, const char *old_key,
                       const char *old_fingerprint) {
        int r;

        if (!req->client_id || !req->public_key || !req->fingerprint || !old_key)
                return -EINVAL;
        r = reg->st->ops->device_rebind(reg->st, req->client_id, old_key, req->public_key, req->fingerprint);
        if (r < 0)
                return r;
        return mp_registry_key_event(reg, req, old_fingerprint, "rotation", NULL);
}
