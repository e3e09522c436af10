/* SPDX-License-Identifier: Apache-2.0 */
/* The PostgreSQL engine's statements (mp/store.h's table). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "mp/store-pg.h"
#include "mp/store.h"

#define PG(st) ((struct pg_store *)(st))

DEFINE_TRIVIAL_CLEANUP_FUNC(PGresult *, PQclear)

static int pg_device_get(struct mp_store *st, const char *client_id, enum mp_device_status *ret_status,
                         char **ret_key, char **ret_fingerprint) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        _cleanup_(freep) char *key = NULL, *fpr = NULL;
        struct pg_args a = {};
        bool oom = false;
        int r;

        pg_arg_str(&a, client_id);
        r = pg_exec(PG(st), "device lookup",
                    "SELECT status, public_key, fingerprint FROM devices WHERE client_id = $1", &a, &res);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -ENOENT;
        if (ret_key)
                key = pg_str(res, 0, 1, &oom);
        if (ret_fingerprint)
                fpr = pg_str(res, 0, 2, &oom);
        if (oom)
                return -ENOMEM;
        if (ret_status)
                *ret_status = (enum mp_device_status)pg_i64(res, 0, 0);
        if (ret_key)
                *ret_key = TAKE_PTR(key);
        if (ret_fingerprint)
                *ret_fingerprint = TAKE_PTR(fpr);
        return 0;
}

static int pg_device_insert(struct mp_store *st, const struct mp_device_new *d) {
        struct pg_args a = {};

        pg_arg_str(&a, d->client_id);
        pg_arg_str(&a, d->hostname);
        pg_arg_str(&a, d->version);
        pg_arg_str(&a, d->public_key);
        pg_arg_str(&a, d->fingerprint);
        pg_arg_i64(&a, d->status);
        pg_arg_i64(&a, d->now);
        pg_arg_str(&a, d->address);
        return pg_write(
                PG(st), "device insert",
                "INSERT INTO devices (client_id, hostname, version, public_key, fingerprint, status, "
                "first_seen, last_seen, address) VALUES ($1, $2, $3, $4, $5, $6::int, $7::bigint, "
                "$7::bigint, $8)",
                &a, NULL);
}

static int pg_device_seen(struct mp_store *st, const char *client_id, time_t now, const char *address,
                          const char *hostname, const char *version) {
        struct pg_args a = {};

        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, now);
        pg_arg_str(&a, address);
        pg_arg_str(&a, hostname);
        pg_arg_str(&a, version);
        return pg_write(PG(st), "device last-seen",
                        "UPDATE devices SET last_seen = $2::bigint, address = coalesce($3, address), "
                        "hostname = coalesce($4, hostname), version = coalesce($5, version) "
                        "WHERE client_id = $1",
                        &a, NULL);
}

static int pg_device_set_status(struct mp_store *st, const char *client_id, enum mp_device_status status) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, status);
        r = pg_write(PG(st), "device status", "UPDATE devices SET status = $2::int WHERE client_id = $1", &a,
                     &res);
        if (r < 0)
                return r;
        return strcmp(PQcmdTuples(res), "0") == 0 ? -ENOENT : 0;
}

static int pg_device_by_fingerprint(struct mp_store *st, const char *fingerprint, char **ret_client_id) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        bool oom = false;
        int r;

        pg_arg_str(&a, fingerprint);
        r = pg_exec(PG(st), "device by fingerprint",
                    "SELECT client_id FROM devices WHERE fingerprint = $1 AND status = 0 "
                    "ORDER BY last_seen DESC LIMIT 1",
                    &a, &res);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -ENOENT;
        *ret_client_id = pg_str(res, 0, 0, &oom);
        return *ret_client_id ? 0 : -ENOMEM;
}

static int pg_conflict_record(struct mp_store *st, const struct mp_conflict_new *c) {
        struct pg_args a = {};

        pg_arg_str(&a, c->client_id);
        pg_arg_str(&a, c->known_fingerprint);
        pg_arg_str(&a, c->offered_fingerprint);
        pg_arg_str(&a, c->offered_key);
        pg_arg_str(&a, c->hostname);
        pg_arg_str(&a, c->address);
        pg_arg_i64(&a, c->now);
        pg_arg_str(&a, c->kind);
        pg_arg_str(&a, c->established_hostname);
        pg_arg_str(&a, c->established_address);
        return pg_write(
                PG(st), "conflict record",
                "INSERT INTO conflicts (client_id, known_fingerprint, offered_fingerprint, offered_key, "
                "hostname, address, first_seen, last_seen, count, kind, established_hostname, "
                "established_address) VALUES ($1, $2, $3, $4, $5, $6, $7::bigint, $7::bigint, 1, $8, "
                "$9, $10) ON CONFLICT (client_id, offered_fingerprint) DO UPDATE SET "
                "last_seen = EXCLUDED.last_seen, count = conflicts.count + 1, "
                "hostname = EXCLUDED.hostname, address = EXCLUDED.address, kind = EXCLUDED.kind, "
                "established_hostname = EXCLUDED.established_hostname, "
                "established_address = EXCLUDED.established_address",
                &a, NULL);
}

/* Runs a read and hands each row to fill (slot i of a calloc'd array). */
typedef int (*pg_fill_fn)(PGresult *res, int row, void *arr);

static int pg_rows(struct mp_store *st, const char *what, const char *sql, const struct pg_args *a,
                   pg_fill_fn fill, size_t elem, void *ret_arr, size_t *ret_n) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        char *arr;
        int n, r;

        *(void **)ret_arr = NULL;
        *ret_n = 0;
        r = pg_exec(PG(st), what, sql, a, &res);
        if (r < 0)
                return r;
        n = PQntuples(res);
        arr = calloc(n ? (size_t)n : 1, elem);
        if (!arr)
                return -ENOMEM;
        *(void **)ret_arr = arr;
        *ret_n = (size_t)n;
        for (int i = 0; i < n; i++) {
                r = fill(res, i, arr + (size_t)i * elem);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int fill_device(PGresult *res, int i, void *p) {
        struct mp_device_rec *d = p;
        bool oom = false;

        d->client_id = pg_str(res, i, 0, &oom);
        d->hostname = pg_str(res, i, 1, &oom);
        d->version = pg_str(res, i, 2, &oom);
        d->status = (enum mp_device_status)pg_i64(res, i, 3);
        d->fingerprint = pg_str(res, i, 4, &oom);
        d->first_seen = pg_i64(res, i, 5);
        d->last_seen = pg_i64(res, i, 6);
        d->address = pg_str(res, i, 7, &oom);
        d->conflict = pg_str(res, i, 8, &oom);
        d->node = pg_str(res, i, 9, &oom);
        return oom ? -ENOMEM : 0;
}

static int pg_devices(struct mp_store *st, struct mp_device_rec **ret, size_t *ret_n) {
        int r = pg_rows(st, "device list",
                        "SELECT client_id, hostname, version, status, fingerprint, first_seen, last_seen, "
                        "address, (SELECT string_agg(DISTINCT kind, ',') FROM conflicts c "
                        "WHERE c.client_id = d.client_id), "
                        "(SELECT node_id FROM presence p WHERE p.client_id = d.client_id AND p.online) "
                        "FROM devices d ORDER BY client_id",
                        NULL, fill_device, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_device_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int fill_conflict(PGresult *res, int i, void *p) {
        struct mp_conflict_rec *c = p;
        bool oom = false;

        c->client_id = pg_str(res, i, 0, &oom);
        c->kind = pg_str(res, i, 1, &oom);
        c->known_fingerprint = pg_str(res, i, 2, &oom);
        c->offered_fingerprint = pg_str(res, i, 3, &oom);
        c->hostname = pg_str(res, i, 4, &oom);
        c->address = pg_str(res, i, 5, &oom);
        c->established_hostname = pg_str(res, i, 6, &oom);
        c->established_address = pg_str(res, i, 7, &oom);
        c->first_seen = pg_i64(res, i, 8);
        c->last_seen = pg_i64(res, i, 9);
        c->count = pg_i64(res, i, 10);
        return oom ? -ENOMEM : 0;
}

static int pg_conflicts(struct mp_store *st, struct mp_conflict_rec **ret, size_t *ret_n) {
        int r = pg_rows(st, "conflict list",
                        "SELECT client_id, kind, known_fingerprint, offered_fingerprint, hostname, address, "
                        "established_hostname, established_address, first_seen, last_seen, count "
                        "FROM conflicts ORDER BY last_seen DESC",
                        NULL, fill_conflict, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_conflict_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int fill_id(PGresult *res, int i, void *p) {
        bool oom = false;

        *(char **)p = pg_str(res, i, 0, &oom);
        return *(char **)p ? 0 : -ENOMEM;
}

static int pg_approved_ids(struct mp_store *st, char ***ret_ids, size_t *ret_n) {
        int r = pg_rows(st, "approved devices",
                        "SELECT client_id FROM devices WHERE status = 0 ORDER BY client_id", NULL, fill_id,
                        sizeof(char *), ret_ids, ret_n);
        if (r < 0) {
                mp_strv_free(*ret_ids, *ret_n);
                *ret_ids = NULL;
        }
        return r;
}

static int pg_push_reserve(struct mp_store *st, uint64_t *ret_push_id, uint64_t *ret_task_id) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        int r;

        /* Sequences: every node of a site draws from the same two. */
        r = pg_write(
                PG(st), "push reserve",
                "INSERT INTO pushes (push_id, task_id) VALUES (nextval('push_ids'), nextval('task_ids')) "
                "RETURNING push_id, task_id",
                NULL, &res);
        if (r < 0)
                return r;
        *ret_push_id = (uint64_t)pg_i64(res, 0, 0);
        *ret_task_id = (uint64_t)pg_i64(res, 0, 1);
        return 0;
}

static int pg_push_store(struct mp_store *st, const struct mp_push_rec *p, const uint8_t *frame,
                         size_t len) {
        struct pg_args a = {};

        pg_arg_i64(&a, (int64_t)p->push_id);
        pg_arg_str(&a, p->task_guid);
        pg_arg_i64(&a, p->task_type);
        pg_arg_str(&a, p->task_param ? p->task_param : "");
        pg_arg_i64(&a, p->created);
        pg_arg_i64(&a, p->expires);
        pg_arg_bin(&a, frame, len);
        pg_arg_str(&a, p->origin_node);
        return pg_write(PG(st), "push store",
                        "UPDATE pushes SET task_guid = $2, task_type = $3::bigint, task_param = $4, "
                        "created = $5::bigint, expires = $6::bigint, frame = $7::bytea, origin_node = $8 "
                        "WHERE push_id = $1::bigint",
                        &a, NULL);
}

static int pg_target_add(struct mp_store *st, uint64_t push_id, const char *client_id, time_t now) {
        struct pg_args a = {};

        pg_arg_i64(&a, (int64_t)push_id);
        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, now);
        return pg_write(PG(st), "target add",
                        "INSERT INTO targets (push_id, client_id, state, updated) "
                        "VALUES ($1::bigint, $2, 0, $3::bigint) ON CONFLICT DO NOTHING",
                        &a, NULL);
}

static int pg_target_advance(struct mp_store *st, uint64_t push_id, const char *task_guid,
                             const char *client_id, enum mp_target_state state, time_t now) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        if (task_guid)
                pg_arg_str(&a, task_guid);
        else
                pg_arg_i64(&a, (int64_t)push_id);
        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, state);
        pg_arg_i64(&a, now);
        r = pg_write(
                PG(st), "target advance",
                task_guid ? "UPDATE targets SET state = $3::int, updated = $4::bigint WHERE client_id = $2 "
                            "AND push_id IN (SELECT push_id FROM pushes WHERE task_guid = $1) "
                            "AND (state < $3::int OR ($3::int = 3 AND state = 4)) AND state <> 3"
                          : "UPDATE targets SET state = $3::int, updated = $4::bigint WHERE client_id = $2 "
                            "AND push_id = $1::bigint "
                            "AND (state < $3::int OR ($3::int = 3 AND state = 4)) AND state <> 3",
                &a, &res);
        if (r < 0)
                return r;
        return strcmp(PQcmdTuples(res), "0") == 0 ? 0 : 1;
}

static int pg_expire(struct mp_store *st, time_t now) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_i64(&a, now);
        r = pg_write(PG(st), "expiry",
                     /* every node sweeps: rows another node is sweeping are skipped,
                      * not waited for (no lock order to deadlock on) */
                     "UPDATE targets SET state = 4, updated = $1::bigint WHERE (client_id, push_id) IN "
                     "(SELECT t.client_id, t.push_id FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                     "WHERE t.state IN (0, 1) AND p.expires <= $1::bigint FOR UPDATE OF t SKIP LOCKED)",
                     &a, &res);
        if (r < 0)
                return r;
        return (int)strtol(PQcmdTuples(res), NULL, 10);
}

static int fill_frame(PGresult *res, int i, void *p) {
        struct mp_frame_rec *f = p;
        bool oom = false;

        f->push_id = (uint64_t)pg_i64(res, i, 0);
        f->frame = pg_bytes(res, i, 1, &f->len, &oom);
        return oom ? -ENOMEM : 0;
}

static int pg_undelivered(struct mp_store *st, const char *client_id, time_t now, struct mp_frame_rec **ret,
                          size_t *ret_n) {
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, now);
        r = pg_rows(st, "undelivered pushes",
                    "SELECT p.push_id, p.frame FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                    "WHERE t.client_id = $1 AND t.state IN (0, 1) AND p.expires > $2::bigint "
                    "AND p.frame IS NOT NULL ORDER BY p.push_id",
                    &a, fill_frame, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_frame_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int pg_response_insert(struct mp_store *st, const struct mp_response_record *rec,
                              bool *ret_inserted) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, rec->client_id);
        pg_arg_str(&a, rec->task_guid);
        pg_arg_i64(&a, (int64_t)rec->push_id);
        pg_arg_i64(&a, (int64_t)rec->task_id);
        pg_arg_i64(&a, rec->return_code);
        pg_arg_str(&a, rec->detail ? rec->detail : "");
        pg_arg_bin(&a, rec->body, rec->body_len);
        pg_arg_bin(&a, rec->sig, rec->sig_len);
        pg_arg_str(&a, rec->address);
        pg_arg_i64(&a, rec->received);
        r = pg_write(
                PG(st), "response store",
                "INSERT INTO responses (client_id, task_guid, push_id, task_id, return_code, detail, body, "
                "signature, address, received) VALUES ($1, $2, $3::bigint, $4::bigint, $5::bigint, $6, "
                "$7::bytea, $8::bytea, $9, $10::bigint) ON CONFLICT DO NOTHING",
                &a, &res);
        if (r < 0)
                return r;
        *ret_inserted = strcmp(PQcmdTuples(res), "0") != 0;
        return 0;
}

static int fill_target(PGresult *res, int i, void *p) {
        struct mp_target_rec *t = p;
        bool oom = false;
        size_t len;

        t->client_id = pg_str(res, i, 0, &oom);
        t->state = (enum mp_target_state)pg_i64(res, i, 1);
        t->updated = pg_i64(res, i, 2);
        t->answered = !PQgetisnull(res, i, 3);
        if (t->answered) {
                t->return_code = (uint32_t)pg_i64(res, i, 3);
                t->detail = pg_str(res, i, 4, &oom);
                t->response_xml = (char *)pg_bytes(res, i, 5, &len, &oom);
                t->signature_hex = pg_str(res, i, 6, &oom);
                t->received = pg_i64(res, i, 7);
        }
        return oom ? -ENOMEM : 0;
}

static int push_row(struct mp_store *st, uint64_t push_id, struct mp_push_rec *ret) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        bool oom = false;
        int r;

        pg_arg_i64(&a, (int64_t)push_id);
        r = pg_exec(PG(st), "push lookup",
                    "SELECT push_id, task_id, task_guid, task_type, task_param, created, expires "
                    "FROM pushes WHERE push_id = $1::bigint AND frame IS NOT NULL",
                    &a, &res);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -ENOENT;
        *ret = (struct mp_push_rec){
                .push_id = (uint64_t)pg_i64(res, 0, 0),
                .task_id = (uint64_t)pg_i64(res, 0, 1),
                .task_guid = pg_str(res, 0, 2, &oom),
                .task_type = (uint32_t)pg_i64(res, 0, 3),
                .task_param = pg_str(res, 0, 4, &oom),
                .created = pg_i64(res, 0, 5),
                .expires = pg_i64(res, 0, 6),
        };
        if (oom) {
                mp_push_rec_done(ret);
                return -ENOMEM;
        }
        return 0;
}

static int pg_push_get(struct mp_store *st, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                       struct mp_target_rec **ret_targets, size_t *ret_n) {
        struct pg_args a = {};
        int r;

        r = push_row(st, push_id, ret);
        if (r < 0)
                return r;
        pg_arg_i64(&a, (int64_t)push_id);
        pg_arg_i64(&a, now);
        /* A target that was never delivered or acknowledged before its push
         * expired is shown expired even before the sweep has marked it. */
        r = pg_rows(st, "push targets",
                    "SELECT t.client_id, CASE WHEN t.state IN (0, 1) AND p.expires <= $2::bigint "
                    "THEN 4 ELSE t.state END, t.updated, r.return_code, r.detail, r.body, "
                    "upper(encode(r.signature, 'hex')), r.received "
                    "FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                    "LEFT JOIN responses r ON r.client_id = t.client_id AND r.task_guid = p.task_guid "
                    "WHERE t.push_id = $1::bigint ORDER BY t.client_id",
                    &a, fill_target, sizeof(**ret_targets), ret_targets, ret_n);
        if (r < 0) {
                mp_target_recs_free(*ret_targets, *ret_n);
                *ret_targets = NULL;
                mp_push_rec_done(ret);
        }
        return r;
}

static int fill_response(PGresult *res, int i, void *p) {
        struct mp_response_rec *x = p;
        bool oom = false;
        size_t len;

        x->client_id = pg_str(res, i, 0, &oom);
        x->task_guid = pg_str(res, i, 1, &oom);
        x->push_id = (uint64_t)pg_i64(res, i, 2);
        x->task_id = (uint64_t)pg_i64(res, i, 3);
        x->return_code = (uint32_t)pg_i64(res, i, 4);
        x->detail = pg_str(res, i, 5, &oom);
        x->response_xml = (char *)pg_bytes(res, i, 6, &len, &oom);
        x->signature_hex = pg_str(res, i, 7, &oom);
        x->address = pg_str(res, i, 8, &oom);
        x->received = pg_i64(res, i, 9);
        return oom ? -ENOMEM : 0;
}

static int pg_responses(struct mp_store *st, unsigned limit, struct mp_response_rec **ret, size_t *ret_n) {
        struct pg_args a = {};
        int r;

        pg_arg_i64(&a, limit);
        r = pg_rows(st, "response list",
                    "SELECT client_id, task_guid, push_id, task_id, return_code, detail, body, "
                    "upper(encode(signature, 'hex')), address, received "
                    "FROM responses ORDER BY received DESC, seq DESC LIMIT $1::bigint",
                    &a, fill_response, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_response_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int pg_presence_claim(struct mp_store *st, const char *client_id, const char *node_id, time_t now,
                             uint64_t *ret_epoch) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, client_id);
        pg_arg_str(&a, node_id);
        pg_arg_i64(&a, now);
        r = pg_write(
                PG(st), "presence",
                "INSERT INTO presence (client_id, node_id, epoch, since) VALUES ($1, $2, 1, $3::bigint) "
                "ON CONFLICT (client_id) DO UPDATE SET node_id = EXCLUDED.node_id, "
                "epoch = presence.epoch + 1, since = EXCLUDED.since, online = true RETURNING epoch",
                &a, &res);
        if (r < 0)
                return r;
        *ret_epoch = (uint64_t)pg_i64(res, 0, 0);
        return 0;
}

static int pg_presence_check(struct mp_store *st, const char *client_id, const char *node_id,
                             uint64_t epoch) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, client_id);
        pg_arg_str(&a, node_id);
        pg_arg_i64(&a, (int64_t)epoch);
        r = pg_write(PG(st), "presence check",
                     "SELECT 1 FROM presence WHERE client_id = $1 AND node_id = $2 AND epoch = $3::bigint "
                     "FOR SHARE",
                     &a, &res);
        if (r < 0)
                return r;
        return PQntuples(res) > 0 ? 0 : -ESTALE;
}

static int pg_presence_release(struct mp_store *st, const char *client_id, const char *node_id,
                               uint64_t epoch) {
        struct pg_args a = {};

        pg_arg_str(&a, client_id);
        pg_arg_str(&a, node_id);
        pg_arg_i64(&a, (int64_t)epoch);
        return pg_write(PG(st), "presence release",
                        "UPDATE presence SET online = false WHERE client_id = $1 AND node_id = $2 "
                        "AND epoch = $3::bigint",
                        &a, NULL);
}

static int pg_online_ids(struct mp_store *st, char ***ret_ids, size_t *ret_n) {
        int r = pg_rows(st, "online devices",
                        "SELECT d.client_id FROM devices d JOIN presence p ON p.client_id = d.client_id "
                        "WHERE d.status = 0 AND p.online ORDER BY d.client_id",
                        NULL, fill_id, sizeof(char *), ret_ids, ret_n);
        if (r < 0) {
                mp_strv_free(*ret_ids, *ret_n);
                *ret_ids = NULL;
        }
        return r;
}

static int pg_node_heartbeat(struct mp_store *st, const char *node_id, time_t now, unsigned stale_after,
                             unsigned *ret_live) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, node_id);
        pg_arg_i64(&a, now);
        pg_arg_i64(&a, stale_after);
        /* one statement, in the open transaction if there is one; the count
         * sees this node's row in any case */
        r = pg_write(PG(st), "node heartbeat",
                     "WITH beat AS (INSERT INTO nodes (node_id, seen) VALUES ($1, $2::bigint) "
                     "ON CONFLICT (node_id) DO UPDATE SET seen = EXCLUDED.seen RETURNING node_id) "
                     "SELECT count(*) + 1 FROM nodes WHERE seen > $2::bigint - $3::bigint AND node_id <> $1",
                     &a, &res);
        if (r < 0)
                return r;
        *ret_live = (unsigned)pg_i64(res, 0, 0);
        return 0;
}

static int pg_notify(struct mp_store *st, const char *channel, const char *payload) {
        struct pg_args a = {};

        pg_arg_str(&a, channel);
        pg_arg_str(&a, payload ? payload : "");
        /* delivered at commit, and only then */
        return pg_write(PG(st), "hint", "SELECT pg_notify($1, $2)", &a, NULL);
}

/* A text[] literal of GUID-like ids; anything else is refused. */
static char *ids_array(char *const *ids, size_t n) {
        size_t len = 3;
        char *t, *p;

        for (size_t i = 0; i < n; i++) {
                if (strspn(ids[i], "0123456789abcdefABCDEF-") != strlen(ids[i]))
                        return NULL;
                len += strlen(ids[i]) + 1;
        }
        t = p = malloc(len);
        if (!t)
                return NULL;
        *p++ = '{';
        for (size_t i = 0; i < n; i++) {
                size_t l = strlen(ids[i]);
                if (i)
                        *p++ = ',';
                memcpy(p, ids[i], l);
                p += l;
        }
        *p++ = '}';
        *p = 0;
        return t;
}

static int fill_take(PGresult *res, int i, void *p) {
        struct mp_frame_rec *f = p;
        bool oom = false;

        f->push_id = (uint64_t)pg_i64(res, i, 0);
        f->client_id = pg_str(res, i, 1, &oom);
        f->frame = pg_bytes(res, i, 2, &f->len, &oom);
        return oom ? -ENOMEM : 0;
}

static int pg_targets_take(struct mp_store *st, const char *node_id, char *const *ids, size_t n_ids,
                           time_t now, unsigned limit, struct mp_frame_rec **ret, size_t *ret_n) {
        _cleanup_(freep) char *arr = ids_array(ids, n_ids);
        struct pg_args a = {};
        int r;

        *ret = NULL;
        *ret_n = 0;
        if (!arr)
                return -EINVAL;
        pg_arg_str(&a, node_id);
        pg_arg_str(&a, arr);
        pg_arg_i64(&a, now);
        pg_arg_i64(&a, limit);
        /* the rows stay locked until commit: the frames are queued, and
         * marked delivered, in the same transaction */
        r = pg_begin(PG(st));
        if (r >= 0)
                r = pg_rows(st, "take targets",
                            "SELECT t.push_id, t.client_id, p.frame FROM targets t "
                            "JOIN pushes p ON p.push_id = t.push_id "
                            "JOIN presence pr ON pr.client_id = t.client_id "
                            "WHERE t.state = 0 AND t.client_id = ANY($2::text[]) AND pr.node_id = $1 "
                            "AND p.expires > $3::bigint AND p.frame IS NOT NULL "
                            "AND p.origin_node IS DISTINCT FROM $1 "
                            "ORDER BY t.push_id LIMIT $4::bigint FOR UPDATE OF t SKIP LOCKED",
                            &a, fill_take, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_frame_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static const struct mp_store_ops ops = {
        .name = "postgresql",
        .free = pg_free,
        .commit = pg_commit,
        .dirty = pg_dirty,
        .device_get = pg_device_get,
        .device_insert = pg_device_insert,
        .device_seen = pg_device_seen,
        .device_set_status = pg_device_set_status,
        .device_by_fingerprint = pg_device_by_fingerprint,
        .conflict_record = pg_conflict_record,
        .devices = pg_devices,
        .conflicts = pg_conflicts,
        .approved_ids = pg_approved_ids,
        .push_reserve = pg_push_reserve,
        .push_store = pg_push_store,
        .target_add = pg_target_add,
        .target_advance = pg_target_advance,
        .expire = pg_expire,
        .undelivered = pg_undelivered,
        .response_insert = pg_response_insert,
        .push_get = pg_push_get,
        .responses = pg_responses,
        .presence_claim = pg_presence_claim,
        .presence_check = pg_presence_check,
        .presence_release = pg_presence_release,
        .online_ids = pg_online_ids,
        .node_heartbeat = pg_node_heartbeat,
        .notify = pg_notify,
        .targets_take = pg_targets_take,
        .listen_fd = pg_listen_fd,
        .listen_drain = pg_listen_drain,
        .site_key_sent = pg_site_key_sent,
        .site_key_confirmed = pg_site_key_confirmed,
        .site_key_counts = pg_site_key_counts,
        .device_rebind = pg_device_rebind,
        .key_event_insert = pg_key_event_insert,
        .key_events = pg_key_events,
        /* the console's records, mp/store-pg-admin.c */
        .doc_put = pg_doc_put,
        .doc_get = pg_doc_get,
        .doc_delete = pg_doc_delete,
        .docs = pg_docs,
        .audit_append = pg_audit_append,
        .audit_list = pg_audit_list,
        .audit_last = pg_audit_last,
};

const struct mp_store_ops *pg_ops(void) {
        return &ops;
}
