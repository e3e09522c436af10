/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite engine's list reads (mp/store.h's devices, conflicts,
 * approved_ids, push_get, responses and key_events), apart from its writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "mp/store-sqlite.h"
#include "mp/store.h"

static int sql_error(sqlite3 *db, const char *what) {
        log_debug("store: sqlite: %s: %s", what, sqlite3_errmsg(db));
        return -EIO;
}

static int bind_i64(sqlite3_stmt *q, int idx, int64_t v) {
        return sqlite3_bind_int64(q, idx, v) == SQLITE_OK ? 0 : -EIO;
}

static int bind_text(sqlite3_stmt *q, int idx, const char *v) {
        return sqlite3_bind_text(q, idx, v, -1, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

/* Runs a one-off read query (up to two integer arguments) and hands each
 * row to fill, which stores it into slot n of *arr. */
typedef int (*row_fill_fn)(sqlite3_stmt *q, void *arr, size_t n);

static int query_rows(sqlite3 *db, const char *sql, int n_args, int64_t a1, int64_t a2, row_fill_fn fill,
                      size_t elem, void *ret_arr, size_t *ret_n) {
        sqlite3_stmt *q = NULL;
        void *arr = NULL;
        size_t n = 0, cap = 0;
        int r = 0, rc;

        *(void **)ret_arr = NULL;
        *ret_n = 0;
        if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
                return sql_error(db, "prepare");
        if ((n_args >= 1 && bind_i64(q, 1, a1) < 0) || (n_args >= 2 && bind_i64(q, 2, a2) < 0)) {
                sqlite3_finalize(q);
                return -EIO;
        }
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                r = mp_store_grow(&arr, elem, n, &cap);
                if (r < 0)
                        break;
                /* counted before fill so a half-filled row is freed too */
                r = fill(q, arr, n++);
                if (r < 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sql_error(db, "query");
        sqlite3_finalize(q);
        *(void **)ret_arr = arr;
        *ret_n = n;
        return r;
}

static int fill_device(sqlite3_stmt *q, void *arr, size_t n) {
        struct mp_device_rec *d = (struct mp_device_rec *)arr + n;
        bool oom = false;

        d->client_id = col_str(q, 0, &oom);
        d->hostname = col_str(q, 1, &oom);
        d->version = col_str(q, 2, &oom);
        d->status = (enum mp_device_status)sqlite3_column_int(q, 3);
        d->fingerprint = col_str(q, 4, &oom);
        d->first_seen = sqlite3_column_int64(q, 5);
        d->last_seen = sqlite3_column_int64(q, 6);
        d->address = col_str(q, 7, &oom);
        d->conflict = col_str(q, 8, &oom);
        d->node = col_str(q, 9, &oom);
        return oom ? -ENOMEM : 0;
}

int sqlite_read_devices(sqlite3 *db, struct mp_device_rec **ret, size_t *ret_n) {
        int r = query_rows(
                db,
                "SELECT client_id, hostname, version, status, fingerprint, first_seen, last_seen, "
                "address, (SELECT group_concat(DISTINCT kind) FROM conflicts c "
                "WHERE c.client_id = devices.client_id), (SELECT node_id FROM presence p "
                "WHERE p.client_id = devices.client_id AND p.online) FROM devices ORDER BY client_id",
                0, 0, 0, fill_device, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_device_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int fill_conflict(sqlite3_stmt *q, void *arr, size_t n) {
        struct mp_conflict_rec *c = (struct mp_conflict_rec *)arr + n;
        bool oom = false;

        c->client_id = col_str(q, 0, &oom);
        c->kind = col_str(q, 1, &oom);
        c->known_fingerprint = col_str(q, 2, &oom);
        c->offered_fingerprint = col_str(q, 3, &oom);
        c->hostname = col_str(q, 4, &oom);
        c->address = col_str(q, 5, &oom);
        c->established_hostname = col_str(q, 6, &oom);
        c->established_address = col_str(q, 7, &oom);
        c->first_seen = sqlite3_column_int64(q, 8);
        c->last_seen = sqlite3_column_int64(q, 9);
        c->count = sqlite3_column_int64(q, 10);
        return oom ? -ENOMEM : 0;
}

int sqlite_read_conflicts(sqlite3 *db, struct mp_conflict_rec **ret, size_t *ret_n) {
        int r = query_rows(
                db,
                "SELECT client_id, kind, known_fingerprint, offered_fingerprint, hostname, address, "
                "established_hostname, established_address, first_seen, last_seen, count "
                "FROM conflicts ORDER BY last_seen DESC",
                0, 0, 0, fill_conflict, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_conflict_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int fill_id(sqlite3_stmt *q, void *arr, size_t n) {
        bool oom = false;

        ((char **)arr)[n] = col_str(q, 0, &oom);
        return ((char **)arr)[n] ? 0 : -ENOMEM;
}

int sqlite_read_ids(sqlite3 *db, const char *sql, char ***ret_ids, size_t *ret_n) {
        int r = query_rows(db, sql, 0, 0, 0, fill_id, sizeof(char *), ret_ids, ret_n);
        if (r < 0) {
                mp_strv_free(*ret_ids, *ret_n);
                *ret_ids = NULL;
        }
        return r;
}

int sqlite_read_approved_ids(sqlite3 *db, char ***ret_ids, size_t *ret_n) {
        return sqlite_read_ids(db, "SELECT client_id FROM devices WHERE status = 0 ORDER BY client_id",
                               ret_ids, ret_n);
}

static int fill_target(sqlite3_stmt *q, void *arr, size_t n) {
        struct mp_target_rec *t = (struct mp_target_rec *)arr + n;
        bool oom = false;

        t->client_id = col_str(q, 0, &oom);
        t->state = (enum mp_target_state)sqlite3_column_int(q, 1);
        t->updated = sqlite3_column_int64(q, 2);
        t->answered = sqlite3_column_type(q, 3) != SQLITE_NULL;
        if (t->answered) {
                t->return_code = (uint32_t)sqlite3_column_int64(q, 3);
                t->detail = col_str(q, 4, &oom);
                t->response_xml = col_str(q, 5, &oom);
                t->signature_hex = col_str(q, 6, &oom);
                t->received = sqlite3_column_int64(q, 7);
        }
        return oom ? -ENOMEM : 0;
}

static int push_row(sqlite3 *db, uint64_t push_id, struct mp_push_rec *ret) {
        sqlite3_stmt *q = NULL;
        bool oom = false;
        int rc;

        if (sqlite3_prepare_v2(db,
                               "SELECT push_id, task_id, task_guid, task_type, task_param, created, expires "
                               "FROM pushes WHERE push_id = ?1 AND frame IS NOT NULL",
                               -1, &q, NULL) != SQLITE_OK)
                return sql_error(db, "prepare");
        sqlite3_bind_int64(q, 1, (sqlite3_int64)push_id);
        rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(q);
                return rc == SQLITE_DONE ? -ENOENT : sql_error(db, "push");
        }
        *ret = (struct mp_push_rec){
                .push_id = (uint64_t)sqlite3_column_int64(q, 0),
                .task_id = (uint64_t)sqlite3_column_int64(q, 1),
                .task_guid = col_str(q, 2, &oom),
                .task_type = (uint32_t)sqlite3_column_int64(q, 3),
                .task_param = col_str(q, 4, &oom),
                .created = sqlite3_column_int64(q, 5),
                .expires = sqlite3_column_int64(q, 6),
        };
        sqlite3_finalize(q);
        if (oom) {
                mp_push_rec_done(ret);
                return -ENOMEM;
        }
        return 0;
}

int sqlite_read_push(sqlite3 *db, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                     struct mp_target_rec **ret_targets, size_t *ret_n) {
        int r;

        r = push_row(db, push_id, ret);
        if (r < 0)
                return r;
        /* A target that was never delivered or acknowledged before its push
         * expired is shown expired even before the sweep has marked it. */
        r = query_rows(db,
                       "SELECT t.client_id, CASE WHEN t.state IN (0, 1) AND p.expires <= ?2 "
                       "THEN 4 ELSE t.state END, t.updated, r.return_code, r.detail, "
                       "CAST(r.body AS TEXT), hex(r.signature), r.received "
                       "FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                       "LEFT JOIN responses r ON r.client_id = t.client_id AND r.task_guid = p.task_guid "
                       "WHERE t.push_id = ?1 ORDER BY t.client_id",
                       2, (int64_t)push_id, (int64_t)now, fill_target, sizeof(**ret_targets), ret_targets,
                       ret_n);
        if (r < 0) {
                mp_target_recs_free(*ret_targets, *ret_n);
                *ret_targets = NULL;
                mp_push_rec_done(ret);
        }
        return r;
}

static int fill_response(sqlite3_stmt *q, void *arr, size_t n) {
        struct mp_response_rec *x = (struct mp_response_rec *)arr + n;
        bool oom = false;

        x->client_id = col_str(q, 0, &oom);
        x->task_guid = col_str(q, 1, &oom);
        x->push_id = (uint64_t)sqlite3_column_int64(q, 2);
        x->task_id = (uint64_t)sqlite3_column_int64(q, 3);
        x->return_code = (uint32_t)sqlite3_column_int64(q, 4);
        x->detail = col_str(q, 5, &oom);
        x->response_xml = col_str(q, 6, &oom);
        x->signature_hex = col_str(q, 7, &oom);
        x->address = col_str(q, 8, &oom);
        x->received = sqlite3_column_int64(q, 9);
        return oom ? -ENOMEM : 0;
}

int sqlite_read_responses(sqlite3 *db, unsigned limit, struct mp_response_rec **ret, size_t *ret_n) {
        int r = query_rows(db,
                           "SELECT client_id, task_guid, push_id, task_id, return_code, detail, "
                           "CAST(body AS TEXT), hex(signature), address, received "
                           "FROM responses ORDER BY received DESC, rowid DESC LIMIT ?1",
                           1, limit, 0, fill_response, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_response_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

static int fill_key_event(sqlite3_stmt *q, void *arr, size_t n) {
        struct mp_key_event_rec *e = (struct mp_key_event_rec *)arr + n;
        bool oom = false;

        e->client_id = col_str(q, 0, &oom);
        e->kind = col_str(q, 1, &oom);
        e->old_fingerprint = col_str(q, 2, &oom);
        e->new_fingerprint = col_str(q, 3, &oom);
        e->reason = col_str(q, 4, &oom);
        e->hostname = col_str(q, 5, &oom);
        e->address = col_str(q, 6, &oom);
        e->at = sqlite3_column_int64(q, 7);
        return oom ? -ENOMEM : 0;
}

int sqlite_read_key_events(sqlite3 *db, struct mp_key_event_rec **ret, size_t *ret_n) {
        int r = query_rows(db,
                           "SELECT client_id, kind, old_fingerprint, new_fingerprint, reason, hostname, "
                           "address, at FROM key_events ORDER BY id DESC",
                           0, 0, 0, fill_key_event, sizeof(**ret), ret, ret_n);
        if (r < 0) {
                mp_key_event_recs_free(*ret, *ret_n);
                *ret = NULL;
        }
        return r;
}

/* The ids as a JSON array, for json_each(): one parameter for any count. */
static char *ids_json(char *const *ids, size_t n) {
        json_object *arr = json_object_new_array();
        char *t;

        if (!arr)
                return NULL;
        for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, json_object_new_string(ids[i]));
        t = strdup(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
        json_object_put(arr);
        return t;
}

/* One node rarely meets a push another node wrote (a renamed node's older
 * pushes); the query is PostgreSQL's without the row locks. */
int sqlite_read_take(sqlite3 *db, const char *node_id, char *const *ids, size_t n_ids, time_t now,
                     unsigned limit, struct mp_frame_rec **ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        _cleanup_(freep) char *js = ids_json(ids, n_ids);
        struct mp_frame_rec *rows = NULL;
        size_t n = 0, cap = 0;
        bool oom = false;
        int r = 0, rc;

        if (!js)
                return -ENOMEM;
        if (sqlite3_prepare_v2(db,
                               "SELECT t.push_id, t.client_id, p.frame FROM targets t "
                               "JOIN pushes p ON p.push_id = t.push_id "
                               "JOIN presence pr ON pr.client_id = t.client_id "
                               "WHERE t.state = 0 AND t.client_id IN (SELECT value FROM json_each(?2)) "
                               "AND pr.node_id = ?1 AND p.expires > ?3 AND p.frame IS NOT NULL "
                               "AND p.origin_node IS NOT ?1 ORDER BY t.push_id LIMIT ?4",
                               -1, &q, NULL) != SQLITE_OK)
                return sql_error(db, "prepare");
        if (bind_text(q, 1, node_id) < 0 || bind_text(q, 2, js) < 0 || bind_i64(q, 3, now) < 0 ||
            bind_i64(q, 4, limit) < 0)
                return -EIO;
        while (r == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
                size_t len = (size_t)sqlite3_column_bytes(q, 2);

                r = mp_store_grow(&rows, sizeof(*rows), n, &cap);
                if (r < 0)
                        break;
                rows[n].push_id = (uint64_t)sqlite3_column_int64(q, 0);
                rows[n].client_id = col_str(q, 1, &oom);
                rows[n].frame = malloc(len ? len : 1);
                rows[n].len = len;
                if (oom || !rows[n++].frame)
                        r = -ENOMEM;
                else if (len)
                        memcpy(rows[n - 1].frame, sqlite3_column_blob(q, 2), len);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sql_error(db, "take targets");
        if (r < 0) {
                mp_frame_recs_free(rows, n);
                return r;
        }
        *ret = rows;
        *ret_n = n;
        return 0;
}
