/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite engine of mp/store.h: one node, WAL with synchronous=FULL. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "mp/store-sqlite.h"
#include "mp/store.h"

/* Statements are prepared once and reused: a fan-out to 10,000 devices runs
 * the same few statements tens of thousands of times. */
enum stmt_id {
        ST_DEVICE_GET,
        ST_DEVICE_INSERT,
        ST_DEVICE_SEEN,
        ST_DEVICE_STATUS,
        ST_DEVICE_BY_FPR,
        ST_CONFLICT_UPSERT,
        ST_PUSH_MAX,
        ST_PUSH_RESERVE,
        ST_PUSH_STORE,
        ST_TARGET_ADD,
        ST_TARGET_ADVANCE,
        ST_TARGET_ADVANCE_GUID,
        ST_EXPIRE,
        ST_UNDELIVERED,
        ST_RESPONSE_INSERT,
        ST_PRESENCE_CHECK,
        _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
        /* before every write made for a device: cached like the writes */
        [ST_PRESENCE_CHECK] = "SELECT 1 FROM presence WHERE client_id = ?1 AND node_id = ?2 AND epoch = ?3",
        [ST_DEVICE_GET] = "SELECT status, public_key, fingerprint FROM devices WHERE client_id = ?1",
        [ST_DEVICE_INSERT] =
                "INSERT INTO devices (client_id, hostname, version, public_key, fingerprint, "
                "status, first_seen, last_seen, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        [ST_DEVICE_SEEN] = "UPDATE devices SET last_seen = ?2, address = coalesce(?3, address), "
                           "hostname = coalesce(?4, hostname), version = coalesce(?5, version) "
                           "WHERE client_id = ?1",
        [ST_DEVICE_STATUS] = "UPDATE devices SET status = ?2 WHERE client_id = ?1",
        [ST_DEVICE_BY_FPR] = "SELECT client_id FROM devices WHERE fingerprint = ?1 AND status = 0 "
                             "ORDER BY last_seen DESC LIMIT 1",
        /* A duplicate identity offers the bound key itself, so its row
         * (client_id, offered_fingerprint = the bound one) never meets a
         * key conflict's row. */
        [ST_CONFLICT_UPSERT] =
                "INSERT INTO conflicts (client_id, known_fingerprint, offered_fingerprint, offered_key, "
                "hostname, address, first_seen, last_seen, count, kind, established_hostname, "
                "established_address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, ?8, ?9, ?10) "
                "ON CONFLICT (client_id, offered_fingerprint) DO UPDATE SET last_seen = ?7, "
                "count = count + 1, hostname = ?5, address = ?6, kind = ?8, "
                "established_hostname = ?9, established_address = ?10",
        [ST_PUSH_MAX] = "SELECT coalesce(max(push_id), 0), coalesce(max(task_id), 0) FROM pushes",
        [ST_PUSH_RESERVE] = "INSERT INTO pushes (push_id, task_id) VALUES (?1, ?2)",
        [ST_PUSH_STORE] = "UPDATE pushes SET task_guid = ?2, task_type = ?3, task_param = ?4, created = ?5, "
                          "expires = ?6, frame = ?7, origin_node = ?8 WHERE push_id = ?1",
        [ST_TARGET_ADD] = "INSERT OR IGNORE INTO targets (push_id, client_id, state, updated) "
                          "VALUES (?1, ?2, 0, ?3)",
        [ST_TARGET_ADVANCE] =
                "UPDATE targets SET state = ?3, updated = ?4 WHERE push_id = ?1 AND client_id = ?2 "
                "AND (state < ?3 OR (?3 = 3 AND state = 4)) AND NOT (state = 3)",
        [ST_TARGET_ADVANCE_GUID] =
                "UPDATE targets SET state = ?3, updated = ?4 WHERE client_id = ?2 AND push_id IN "
                "(SELECT push_id FROM pushes WHERE task_guid = ?1) "
                "AND (state < ?3 OR (?3 = 3 AND state = 4)) AND NOT (state = 3)",
        [ST_EXPIRE] = "UPDATE targets SET state = 4, updated = ?1 WHERE state IN (0, 1) AND push_id IN "
                      "(SELECT push_id FROM pushes WHERE expires <= ?1)",
        [ST_UNDELIVERED] = "SELECT p.push_id, p.frame FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                           "WHERE t.client_id = ?1 AND t.state IN (0, 1) AND p.expires > ?2 "
                           "AND p.frame IS NOT NULL ORDER BY p.push_id",
        [ST_RESPONSE_INSERT] =
                "INSERT OR IGNORE INTO responses (client_id, task_guid, push_id, task_id, return_code, "
                "detail, body, signature, address, received) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

struct sqlite_store {
        struct mp_store base;
        sqlite3 *db;
        sqlite3_stmt *stmts[_ST_MAX];
        bool in_transaction;
        uint64_t next_push_id;
        uint64_t next_task_id;
};

#define SQ(st) ((struct sqlite_store *)(st))

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

static int sql_error(struct sqlite_store *s, const char *what) {
        return sqlite_error(s->db, what);
}

static int exec_sql(struct sqlite_store *s, const char *sql) {
        return sqlite_exec(s->db, sql);
}

/* Returns the cached statement, reset and with no bindings. */
static int stmt_get(struct sqlite_store *s, enum stmt_id id, sqlite3_stmt **ret) {
        sqlite3_stmt *q = s->stmts[id];

        if (!q) {
                if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q, NULL) !=
                    SQLITE_OK)
                        return sql_error(s, "prepare");
                s->stmts[id] = q;
        }
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        *ret = q;
        return 0;
}

static int begin_write(struct sqlite_store *s) {
        int r;

        if (s->in_transaction)
                return 0;
        r = exec_sql(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        s->in_transaction = true;
        return 0;
}

/* A write statement, with the transaction opened first. */
static int write_stmt(struct sqlite_store *s, enum stmt_id id, sqlite3_stmt **ret) {
        int r = begin_write(s);

        return r < 0 ? r : stmt_get(s, id, ret);
}

int sqlite_store_begin(struct mp_store *st, sqlite3 **ret_db) {
        int r = begin_write(SQ(st));

        if (r >= 0)
                *ret_db = SQ(st)->db;
        return r;
}

sqlite3 *sqlite_store_db(struct mp_store *st) {
        return SQ(st)->db;
}

static int sq_commit(struct mp_store *st) {
        struct sqlite_store *s = SQ(st);
        int r;

        if (!s->in_transaction)
                return 0;
        r = exec_sql(s, "COMMIT");
        if (r < 0)
                return r;
        s->in_transaction = false;
        return 0;
}

static bool sq_dirty(const struct mp_store *st) {
        return ((const struct sqlite_store *)st)->in_transaction;
}

static int step_done(struct sqlite_store *s, sqlite3_stmt *q) {
        int rc = sqlite3_step(q);

        sqlite3_reset(q);
        if (rc != SQLITE_DONE)
                return sql_error(s, "step");
        return 0;
}

static int bind_text(sqlite3_stmt *q, int idx, const char *v) {
        if (!v)
                return sqlite3_bind_null(q, idx) == SQLITE_OK ? 0 : -EIO;
        return sqlite3_bind_text(q, idx, v, -1, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
}

static int bind_i64(sqlite3_stmt *q, int idx, int64_t v) {
        return sqlite3_bind_int64(q, idx, v) == SQLITE_OK ? 0 : -EIO;
}

static int bind_blob(sqlite3_stmt *q, int idx, const void *v, size_t len) {
        if (!v)
                return sqlite3_bind_null(q, idx) == SQLITE_OK ? 0 : -EIO;
        return sqlite3_bind_blob64(q, idx, v, len, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
}

char *col_str(sqlite3_stmt *q, int i, bool *oom) {
        const unsigned char *t = sqlite3_column_text(q, i);
        char *d;

        if (!t)
                return NULL;
        d = strndup((const char *)t, (size_t)sqlite3_column_bytes(q, i));
        if (!d)
                *oom = true;
        return d;
}

static int load_next_ids(struct sqlite_store *s) {
        sqlite3_stmt *q;
        int r;

        r = stmt_get(s, ST_PUSH_MAX, &q);
        if (r < 0)
                return r;
        if (sqlite3_step(q) != SQLITE_ROW)
                return sql_error(s, "max push");
        s->next_push_id = (uint64_t)sqlite3_column_int64(q, 0) + 1;
        s->next_task_id = (uint64_t)sqlite3_column_int64(q, 1) + 1;
        sqlite3_reset(q);
        return 0;
}

static void sq_free(struct mp_store *st) {
        struct sqlite_store *s = SQ(st);

        if (s->db) {
                (void)sq_commit(st);
                for (size_t i = 0; i < _ST_MAX; i++)
                        sqlite3_finalize(s->stmts[i]);
                sqlite3_close(s->db);
        }
        free(s);
}

static int sq_device_get(struct mp_store *st, const char *client_id, enum mp_device_status *ret_status,
                         char **ret_key, char **ret_fingerprint) {
        struct sqlite_store *s = SQ(st);
        _cleanup_(freep) char *key = NULL, *fpr = NULL;
        sqlite3_stmt *q;
        bool oom = false;
        int r, rc;

        r = stmt_get(s, ST_DEVICE_GET, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, client_id) < 0)
                return -EIO;
        rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
                r = rc == SQLITE_DONE ? -ENOENT : sql_error(s, "device");
                sqlite3_reset(q);
                return r;
        }
        if (ret_status)
                *ret_status = (enum mp_device_status)sqlite3_column_int(q, 0);
        if (ret_key)
                key = col_str(q, 1, &oom);
        if (ret_fingerprint)
                fpr = col_str(q, 2, &oom);
        sqlite3_reset(q);
        if (oom)
                return -ENOMEM;
        if (ret_key)
                *ret_key = TAKE_PTR(key);
        if (ret_fingerprint)
                *ret_fingerprint = TAKE_PTR(fpr);
        return 0;
}

static int sq_device_insert(struct mp_store *st, const struct mp_device_new *d) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_DEVICE_INSERT, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, d->client_id) < 0 || bind_text(q, 2, d->hostname) < 0 ||
            bind_text(q, 3, d->version) < 0 || bind_text(q, 4, d->public_key) < 0 ||
            bind_text(q, 5, d->fingerprint) < 0 || bind_i64(q, 6, d->status) < 0 ||
            bind_i64(q, 7, d->now) < 0 || bind_text(q, 8, d->address) < 0)
                return -EIO;
        return step_done(s, q);
}

static int sq_device_seen(struct mp_store *st, const char *client_id, time_t now, const char *address,
                          const char *hostname, const char *version) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_DEVICE_SEEN, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, client_id) < 0 || bind_i64(q, 2, now) < 0 || bind_text(q, 3, address) < 0 ||
            bind_text(q, 4, hostname) < 0 || bind_text(q, 5, version) < 0)
                return -EIO;
        return step_done(s, q);
}

static int sq_device_set_status(struct mp_store *st, const char *client_id, enum mp_device_status status) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_DEVICE_STATUS, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, client_id) < 0 || bind_i64(q, 2, status) < 0)
                return -EIO;
        r = step_done(s, q);
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

static int sq_device_by_fingerprint(struct mp_store *st, const char *fingerprint, char **ret_client_id) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        bool oom = false;
        char *id;
        int r, rc;

        r = stmt_get(s, ST_DEVICE_BY_FPR, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, fingerprint) < 0)
                return -EIO;
        rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(q);
                return rc == SQLITE_DONE ? -ENOENT : sql_error(s, "by fingerprint");
        }
        id = col_str(q, 0, &oom);
        sqlite3_reset(q);
        if (!id)
                return -ENOMEM;
        *ret_client_id = id;
        return 0;
}

static int sq_conflict_record(struct mp_store *st, const struct mp_conflict_new *c) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_CONFLICT_UPSERT, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, c->client_id) < 0 || bind_text(q, 2, c->known_fingerprint) < 0 ||
            bind_text(q, 3, c->offered_fingerprint) < 0 || bind_text(q, 4, c->offered_key) < 0 ||
            bind_text(q, 5, c->hostname) < 0 || bind_text(q, 6, c->address) < 0 ||
            bind_i64(q, 7, c->now) < 0 || bind_text(q, 8, c->kind) < 0 ||
            bind_text(q, 9, c->established_hostname) < 0 || bind_text(q, 10, c->established_address) < 0)
                return -EIO;
        return step_done(s, q);
}

static int sq_push_reserve(struct mp_store *st, uint64_t *ret_push_id, uint64_t *ret_task_id) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_PUSH_RESERVE, &q);
        if (r < 0)
                return r;
        if (bind_i64(q, 1, (int64_t)s->next_push_id) < 0 || bind_i64(q, 2, (int64_t)s->next_task_id) < 0)
                return -EIO;
        r = step_done(s, q);
        if (r < 0)
                return r;
        *ret_push_id = s->next_push_id++;
        *ret_task_id = s->next_task_id++;
        return 0;
}

static int sq_push_store(struct mp_store *st, const struct mp_push_rec *p, const uint8_t *frame,
                         size_t len) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_PUSH_STORE, &q);
        if (r < 0)
                return r;
        if (bind_i64(q, 1, (int64_t)p->push_id) < 0 || bind_text(q, 2, p->task_guid) < 0 ||
            bind_i64(q, 3, p->task_type) < 0 || bind_text(q, 4, p->task_param ? p->task_param : "") < 0 ||
            bind_i64(q, 5, p->created) < 0 || bind_i64(q, 6, p->expires) < 0 ||
            bind_blob(q, 7, frame, len) < 0 || bind_text(q, 8, p->origin_node) < 0)
                return -EIO;
        return step_done(s, q);
}

static int sq_target_add(struct mp_store *st, uint64_t push_id, const char *client_id, time_t now) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_TARGET_ADD, &q);
        if (r < 0)
                return r;
        if (bind_i64(q, 1, (int64_t)push_id) < 0 || bind_text(q, 2, client_id) < 0 ||
            bind_i64(q, 3, now) < 0)
                return -EIO;
        return step_done(s, q);
}

static int sq_target_advance(struct mp_store *st, uint64_t push_id, const char *task_guid,
                             const char *client_id, enum mp_target_state state, time_t now) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, task_guid ? ST_TARGET_ADVANCE_GUID : ST_TARGET_ADVANCE, &q);
        if (r < 0)
                return r;
        if ((task_guid ? bind_text(q, 1, task_guid) : bind_i64(q, 1, (int64_t)push_id)) < 0 ||
            bind_text(q, 2, client_id) < 0 || bind_i64(q, 3, state) < 0 || bind_i64(q, 4, now) < 0)
                return -EIO;
        r = step_done(s, q);
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) > 0 ? 1 : 0;
}

static int sq_expire(struct mp_store *st, time_t now) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_EXPIRE, &q);
        if (r < 0)
                return r;
        if (bind_i64(q, 1, now) < 0)
                return -EIO;
        r = step_done(s, q);
        if (r < 0)
                return r;
        return sqlite3_changes(s->db);
}

static int sq_undelivered(struct mp_store *st, const char *client_id, time_t now, struct mp_frame_rec **ret,
                          size_t *ret_n) {
        struct sqlite_store *s = SQ(st);
        struct mp_frame_rec *rows = NULL;
        size_t n = 0, cap = 0;
        sqlite3_stmt *q;
        int r, rc;

        r = stmt_get(s, ST_UNDELIVERED, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, client_id) < 0 || bind_i64(q, 2, now) < 0)
                return -EIO;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                size_t len = (size_t)sqlite3_column_bytes(q, 1);
                const void *blob = sqlite3_column_blob(q, 1);

                r = mp_store_grow(&rows, sizeof(*rows), n, &cap);
                if (r < 0)
                        break;
                rows[n].push_id = (uint64_t)sqlite3_column_int64(q, 0);
                rows[n].len = len;
                rows[n].frame = malloc(len ? len : 1);
                if (!rows[n++].frame) {
                        r = -ENOMEM;
                        break;
                }
                if (len)
                        memcpy(rows[n - 1].frame, blob, len);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sql_error(s, "undelivered");
        sqlite3_reset(q);
        if (r < 0) {
                mp_frame_recs_free(rows, n);
                return r;
        }
        *ret = rows;
        *ret_n = n;
        return 0;
}

static int sq_response_insert(struct mp_store *st, const struct mp_response_record *rec,
                              bool *ret_inserted) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r;

        r = write_stmt(s, ST_RESPONSE_INSERT, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, rec->client_id) < 0 || bind_text(q, 2, rec->task_guid) < 0 ||
            bind_i64(q, 3, (int64_t)rec->push_id) < 0 || bind_i64(q, 4, (int64_t)rec->task_id) < 0 ||
            bind_i64(q, 5, rec->return_code) < 0 || bind_text(q, 6, rec->detail ? rec->detail : "") < 0 ||
            bind_blob(q, 7, rec->body, rec->body_len) < 0 || bind_blob(q, 8, rec->sig, rec->sig_len) < 0 ||
            bind_text(q, 9, rec->address) < 0 || bind_i64(q, 10, rec->received) < 0)
                return -EIO;
        r = step_done(s, q);
        if (r < 0)
                return r;
        *ret_inserted = sqlite3_changes(s->db) > 0;
        return 0;
}

/* One node: its own presence rows, kept so the session epochs guard writes
 * as they do with several nodes. */
static int sq_presence_claim(struct mp_store *st, const char *client_id, const char *node_id, time_t now,
                             uint64_t *ret_epoch) {
        struct sqlite_store *s = SQ(st);
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        int r = begin_write(s);

        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(
                    s->db,
                    "INSERT INTO presence (client_id, node_id, epoch, since) VALUES (?1, ?2, 1, ?3) "
                    "ON CONFLICT (client_id) DO UPDATE SET node_id = ?2, epoch = epoch + 1, "
                    "since = ?3, online = 1 RETURNING epoch",
                    -1, &q, NULL) != SQLITE_OK)
                return sql_error(s, "prepare");
        if (bind_text(q, 1, client_id) < 0 || bind_text(q, 2, node_id) < 0 || bind_i64(q, 3, now) < 0)
                return -EIO;
        if (sqlite3_step(q) != SQLITE_ROW)
                return sql_error(s, "presence");
        *ret_epoch = (uint64_t)sqlite3_column_int64(q, 0);
        return sqlite3_step(q) == SQLITE_DONE ? 0 : sql_error(s, "presence");
}

static int sq_presence_check(struct mp_store *st, const char *client_id, const char *node_id,
                             uint64_t epoch) {
        struct sqlite_store *s = SQ(st);
        sqlite3_stmt *q;
        int r, rc;

        r = stmt_get(s, ST_PRESENCE_CHECK, &q);
        if (r < 0)
                return r;
        if (bind_text(q, 1, client_id) < 0 || bind_text(q, 2, node_id) < 0 ||
            bind_i64(q, 3, (int64_t)epoch) < 0)
                return -EIO;
        rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc == SQLITE_ROW)
                return 0;
        return rc == SQLITE_DONE ? -ESTALE : sql_error(s, "presence check");
}

static int sq_presence_release(struct mp_store *st, const char *client_id, const char *node_id,
                               uint64_t epoch) {
        struct sqlite_store *s = SQ(st);
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        int r = begin_write(s);

        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(
                    s->db,
                    "UPDATE presence SET online = 0 WHERE client_id = ?1 AND node_id = ?2 AND epoch = ?3",
                    -1, &q, NULL) != SQLITE_OK)
                return sql_error(s, "prepare");
        if (bind_text(q, 1, client_id) < 0 || bind_text(q, 2, node_id) < 0 ||
            bind_i64(q, 3, (int64_t)epoch) < 0)
                return -EIO;
        return sqlite3_step(q) == SQLITE_DONE ? 0 : sql_error(s, "presence release");
}

static int sq_online_ids(struct mp_store *st, char ***ret_ids, size_t *ret_n) {
        return sqlite_read_ids(
                SQ(st)->db,
                "SELECT d.client_id FROM devices d JOIN presence p ON p.client_id = d.client_id "
                "WHERE d.status = 0 AND p.online ORDER BY d.client_id",
                ret_ids, ret_n);
}

/* One node: it is always the only one alive; the row is kept all the same. */
static int sq_node_heartbeat(struct mp_store *st, const char *node_id, time_t now, unsigned stale_after,
                             unsigned *ret_live) {
        struct sqlite_store *s = SQ(st);
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        int r = begin_write(s);

        (void)stale_after;
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(s->db,
                               "INSERT INTO nodes (node_id, seen) VALUES (?1, ?2) "
                               "ON CONFLICT (node_id) DO UPDATE SET seen = ?2",
                               -1, &q, NULL) != SQLITE_OK)
                return sql_error(s, "prepare");
        if (bind_text(q, 1, node_id) < 0 || bind_i64(q, 2, now) < 0)
                return -EIO;
        if (sqlite3_step(q) != SQLITE_DONE)
                return sql_error(s, "node heartbeat");
        *ret_live = 1;
        return 0;
}

static int sq_notify(struct mp_store *st, const char *channel, const char *payload) {
        (void)st, (void)channel, (void)payload;
        return 0; /* one node: nobody to tell */
}

static int sq_targets_take(struct mp_store *st, const char *node_id, char *const *ids, size_t n_ids,
                           time_t now, unsigned limit, struct mp_frame_rec **ret, size_t *ret_n) {
        return sqlite_read_take(SQ(st)->db, node_id, ids, n_ids, now, limit, ret, ret_n);
}

static int sq_listen_fd(struct mp_store *st) {
        (void)st;
        return -EOPNOTSUPP;
}

static int sq_listen_drain(struct mp_store *st, mp_store_hint_cb cb, void *userdata) {
        (void)st, (void)cb, (void)userdata;
        return 0;
}

/* The reads that build lists, in mp/store-sqlite-read.c. */
static int sq_devices(struct mp_store *st, struct mp_device_rec **ret, size_t *ret_n) {
        return sqlite_read_devices(SQ(st)->db, ret, ret_n);
}

static int sq_conflicts(struct mp_store *st, struct mp_conflict_rec **ret, size_t *ret_n) {
        return sqlite_read_conflicts(SQ(st)->db, ret, ret_n);
}

static int sq_approved_ids(struct mp_store *st, char ***ret_ids, size_t *ret_n) {
        return sqlite_read_approved_ids(SQ(st)->db, ret_ids, ret_n);
}

static int sq_push_get(struct mp_store *st, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                       struct mp_target_rec **ret_targets, size_t *ret_n) {
        return sqlite_read_push(SQ(st)->db, push_id, now, ret, ret_targets, ret_n);
}

static int sq_responses(struct mp_store *st, unsigned limit, struct mp_response_rec **ret, size_t *ret_n) {
        return sqlite_read_responses(SQ(st)->db, limit, ret, ret_n);
}

static const struct mp_store_ops sqlite_ops = {
        .name = "sqlite",
        .free = sq_free,
        .commit = sq_commit,
        .dirty = sq_dirty,
        .device_get = sq_device_get,
        .device_insert = sq_device_insert,
        .device_seen = sq_device_seen,
        .device_set_status = sq_device_set_status,
        .device_by_fingerprint = sq_device_by_fingerprint,
        .conflict_record = sq_conflict_record,
        .devices = sq_devices,
        .conflicts = sq_conflicts,
        .approved_ids = sq_approved_ids,
        .push_reserve = sq_push_reserve,
        .push_store = sq_push_store,
        .target_add = sq_target_add,
        .target_advance = sq_target_advance,
        .expire = sq_expire,
        .undelivered = sq_undelivered,
        .response_insert = sq_response_insert,
        .push_get = sq_push_get,
        .responses = sq_responses,
        .presence_claim = sq_presence_claim,
        .presence_check = sq_presence_check,
        .presence_release = sq_presence_release,
        .online_ids = sq_online_ids,
        .node_heartbeat = sq_node_heartbeat,
        .notify = sq_notify,
        .targets_take = sq_targets_take,
        .listen_fd = sq_listen_fd,
        .listen_drain = sq_listen_drain,
        .site_key_sent = sqlite_site_key_sent,
        .site_key_confirmed = sqlite_site_key_confirmed,
        .site_key_counts = sqlite_site_key_counts,
        .device_rebind = sqlite_device_rebind,
        .key_event_insert = sqlite_key_event_insert,
        .key_events = sqlite_key_events,
        /* the console's records, mp/store-sqlite-admin.c */
        .doc_put = sqlite_doc_put,
        .doc_get = sqlite_doc_get,
        .doc_delete = sqlite_doc_delete,
        .docs = sqlite_docs,
        .audit_append = sqlite_audit_append,
        .audit_list = sqlite_audit_list,
        .audit_last = sqlite_audit_last,
};

int mp_store_open_sqlite(const char *path, struct mp_store **ret) {
        struct sqlite_store *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->base.ops = &sqlite_ops;
        if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = sql_error(s, "open");
                goto fail;
        }
        /* WAL with synchronous=FULL: a commit is on disk when it returns, so
         * nothing the MP has acknowledged is lost on SIGKILL or power loss. */
        r = exec_sql(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;");
        if (r < 0)
                goto fail;
        sqlite3_busy_timeout(s->db, 5000);
        r = sqlite_migrate(s->db, path);
        if (r >= 0)
                r = load_next_ids(s);
        if (r < 0)
                goto fail;
        *ret = &s->base;
        return 0;
fail:
        sq_free(&s->base);
        return r;
}
