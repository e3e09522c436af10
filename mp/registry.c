/* SPDX-License-Identifier: Apache-2.0 */
#include "mp/registry.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "mp/util.h"
#include "transport/message.h"

/* Statements are prepared once and reused: a fan-out to 10,000 devices runs
 * the same few statements tens of thousands of times. */
enum stmt_id {
        ST_DEVICE_GET,
        ST_DEVICE_INSERT,
        ST_DEVICE_SEEN,
        ST_DEVICE_STATUS,
        ST_DEVICE_BY_FPR,
        ST_CONFLICT_UPSERT,
        ST_DUPLICATE_UPSERT,
        ST_PUSH_MAX,
        ST_PUSH_RESERVE,
        ST_PUSH_STORE,
        ST_TARGET_ADD,
        ST_TARGET_ADVANCE,
        ST_TARGET_ADVANCE_GUID,
        ST_EXPIRE,
        ST_UNDELIVERED,
        ST_RESPONSE_INSERT,
        _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
        [ST_DEVICE_GET] = "SELECT status, public_key FROM devices WHERE client_id = ?1",
        [ST_DEVICE_INSERT] =
                "INSERT INTO devices (client_id, hostname, version, public_key, fingerprint, "
                "status, first_seen, last_seen, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        [ST_DEVICE_SEEN] = "UPDATE devices SET last_seen = ?2, address = coalesce(?3, address), "
                           "hostname = coalesce(?4, hostname), version = coalesce(?5, version) "
                           "WHERE client_id = ?1",
        [ST_DEVICE_STATUS] = "UPDATE devices SET status = ?2 WHERE client_id = ?1",
        [ST_DEVICE_BY_FPR] = "SELECT client_id FROM devices WHERE fingerprint = ?1 AND status = 0 "
                             "ORDER BY last_seen DESC LIMIT 1",
        [ST_CONFLICT_UPSERT] =
                "INSERT INTO conflicts (client_id, known_fingerprint, offered_fingerprint, offered_key, "
                "hostname, address, first_seen, last_seen, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, "
                "1) "
                "ON CONFLICT (client_id, offered_fingerprint) DO UPDATE SET last_seen = ?7, "
                "count = count + 1, hostname = ?5, address = ?6",
        /* A duplicate identity offers the bound key itself, so its row
         * (client_id, offered_fingerprint = the bound one) never meets a
         * key conflict's row. */
        [ST_DUPLICATE_UPSERT] =
                "INSERT INTO conflicts (client_id, known_fingerprint, offered_fingerprint, offered_key, "
                "hostname, address, first_seen, last_seen, count, kind, established_hostname, "
                "established_address) VALUES (?1, ?2, ?2, NULL, ?3, ?4, ?7, ?7, 1, 'duplicate-identity', "
                "?5, ?6) "
                "ON CONFLICT (client_id, offered_fingerprint) DO UPDATE SET last_seen = ?7, "
                "count = count + 1, hostname = ?3, address = ?4, kind = 'duplicate-identity', "
                "established_hostname = ?5, established_address = ?6",
        [ST_PUSH_MAX] = "SELECT coalesce(max(push_id), 0), coalesce(max(task_id), 0) FROM pushes",
        [ST_PUSH_RESERVE] = "INSERT INTO pushes (push_id, task_id) VALUES (?1, ?2)",
        [ST_PUSH_STORE] = "UPDATE pushes SET task_guid = ?2, task_type = ?3, task_param = ?4, created = ?5, "
                          "expires = ?6, frame = ?7 WHERE push_id = ?1",
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
                "detail, "
                "body, signature, address, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

struct mp_registry {
        sqlite3 *db;
        sqlite3_stmt *stmts[_ST_MAX];
        bool in_transaction;
        uint64_t next_push_id;
        uint64_t next_task_id;
};

static const char schema[] =
        "CREATE TABLE IF NOT EXISTS devices ("
        " client_id TEXT PRIMARY KEY, hostname TEXT, version TEXT, public_key TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, first_seen INTEGER, last_seen INTEGER,"
        " address TEXT);"
        "CREATE INDEX IF NOT EXISTS devices_fpr ON devices (fingerprint);"
        "CREATE TABLE IF NOT EXISTS conflicts ("
        " client_id TEXT NOT NULL, known_fingerprint TEXT, offered_fingerprint TEXT NOT NULL,"
        " offered_key TEXT, hostname TEXT, address TEXT, first_seen INTEGER, last_seen INTEGER,"
        " count INTEGER NOT NULL, kind TEXT NOT NULL DEFAULT 'key', established_hostname TEXT,"
        " established_address TEXT, PRIMARY KEY (client_id, offered_fingerprint));"
        "CREATE TABLE IF NOT EXISTS pushes ("
        " push_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, task_guid TEXT, task_type INTEGER,"
        " task_param TEXT, created INTEGER, expires INTEGER, frame BLOB);"
        "CREATE INDEX IF NOT EXISTS pushes_guid ON pushes (task_guid);"
        "CREATE TABLE IF NOT EXISTS targets ("
        " push_id INTEGER NOT NULL, client_id TEXT NOT NULL, state INTEGER NOT NULL, updated INTEGER,"
        " PRIMARY KEY (client_id, push_id));"
        "CREATE INDEX IF NOT EXISTS targets_push ON targets (push_id);"
        "CREATE TABLE IF NOT EXISTS responses ("
        " client_id TEXT NOT NULL, task_guid TEXT NOT NULL, push_id INTEGER, task_id INTEGER,"
        " return_code INTEGER, detail TEXT, body BLOB, signature BLOB, address TEXT, received INTEGER,"
        " PRIMARY KEY (client_id, task_guid));"
        "CREATE INDEX IF NOT EXISTS responses_received ON responses (received);";

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

static int sql_error(struct mp_registry *reg, const char *what) {
        log_debug("registry: %s: %s", what, sqlite3_errmsg(reg->db));
        return -EIO;
}

static int exec_sql(struct mp_registry *reg, const char *sql) {
        char *err = NULL;

        if (sqlite3_exec(reg->db, sql, NULL, NULL, &err) != SQLITE_OK) {
                log_debug("registry: '%s': %s", sql, err ? err : "?");
                sqlite3_free(err);
                return -EIO;
        }
        return 0;
}

/* Returns the cached statement, reset and with no bindings. */
static int stmt_get(struct mp_registry *reg, enum stmt_id id, sqlite3_stmt **ret) {
        sqlite3_stmt *s = reg->stmts[id];

        if (!s) {
                if (sqlite3_prepare_v3(reg->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) !=
                    SQLITE_OK)
                        return sql_error(reg, "prepare");
                reg->stmts[id] = s;
        }
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        *ret = s;
        return 0;
}

static int begin_write(struct mp_registry *reg) {
        int r;

        if (reg->in_transaction)
                return 0;
        r = exec_sql(reg, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        reg->in_transaction = true;
        return 0;
}

int mp_registry_commit(struct mp_registry *reg) {
        int r;

        if (!reg->in_transaction)
                return 0;
        r = exec_sql(reg, "COMMIT");
        if (r < 0)
                return r;
        reg->in_transaction = false;
        return 0;
}

bool mp_registry_dirty(const struct mp_registry *reg) {
        return reg->in_transaction;
}

static int step_done(struct mp_registry *reg, sqlite3_stmt *s) {
        int rc = sqlite3_step(s);

        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
                return sql_error(reg, "step");
        return 0;
}

/* Databases made before duplicate identities were recorded lack the
 * conflicts table's last three columns. */
static int upgrade_conflicts(struct mp_registry *reg) {
        sqlite3_stmt *q = NULL;

        if (sqlite3_prepare_v2(reg->db,
                               "SELECT kind, established_hostname, established_address FROM conflicts", -1,
                               &q, NULL) == SQLITE_OK) {
                sqlite3_finalize(q);
                return 0;
        }
        log_debug("registry: adding the conflict kind columns");
        return exec_sql(reg, "ALTER TABLE conflicts ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';"
                             "ALTER TABLE conflicts ADD COLUMN established_hostname TEXT;"
                             "ALTER TABLE conflicts ADD COLUMN established_address TEXT;");
}

int mp_registry_open(const char *path, struct mp_registry **ret) {
        struct mp_registry *reg;
        sqlite3_stmt *s;
        int r;

        reg = calloc(1, sizeof(*reg));
        if (!reg)
                return -ENOMEM;
        if (sqlite3_open_v2(path, &reg->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = sql_error(reg, "open");
                goto fail;
        }
        /* WAL with synchronous=FULL: a commit is on disk when it returns, so
         * nothing the MP has acknowledged is lost on SIGKILL or power loss. */
        r = exec_sql(reg, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;");
        if (r < 0)
                goto fail;
        sqlite3_busy_timeout(reg->db, 5000);
        r = exec_sql(reg, schema);
        if (r < 0)
                goto fail;
        r = upgrade_conflicts(reg);
        if (r < 0)
                goto fail;
        r = mp_registry_keys_schema(reg);
        if (r < 0)
                goto fail;

        r = stmt_get(reg, ST_PUSH_MAX, &s);
        if (r < 0)
                goto fail;
        if (sqlite3_step(s) != SQLITE_ROW) {
                r = sql_error(reg, "max push");
                goto fail;
        }
        reg->next_push_id = (uint64_t)sqlite3_column_int64(s, 0) + 1;
        reg->next_task_id = (uint64_t)sqlite3_column_int64(s, 1) + 1;
        sqlite3_reset(s);

        *ret = reg;
        return 0;
fail:
        mp_registry_free(reg);
        return r;
}

struct mp_registry *mp_registry_free(struct mp_registry *reg) {
        if (!reg)
                return NULL;
        if (reg->db) {
                (void)mp_registry_commit(reg);
                for (size_t i = 0; i < _ST_MAX; i++)
                        sqlite3_finalize(reg->stmts[i]);
                sqlite3_close(reg->db);
        }
        free(reg);
        return NULL;
}

static int bind_text(sqlite3_stmt *s, int idx, const char *v) {
        if (!v)
                return sqlite3_bind_null(s, idx) == SQLITE_OK ? 0 : -EIO;
        return sqlite3_bind_text(s, idx, v, -1, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
}

static int bind_i64(sqlite3_stmt *s, int idx, int64_t v) {
        return sqlite3_bind_int64(s, idx, v) == SQLITE_OK ? 0 : -EIO;
}

static int bind_blob(sqlite3_stmt *s, int idx, const void *v, size_t len) {
        if (!v)
                return sqlite3_bind_null(s, idx) == SQLITE_OK ? 0 : -EIO;
        return sqlite3_bind_blob64(s, idx, v, len, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
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
        sqlite3_stmt *s;
        int r, rc;

        r = stmt_get(reg, ST_DEVICE_GET, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, client_id) < 0)
                return -EIO;
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
                sqlite3_reset(s);
                return -ENOENT;
        }
        if (rc != SQLITE_ROW) {
                r = sql_error(reg, "device");
                sqlite3_reset(s);
                return r;
        }
        if (ret_key) {
                const char *k = (const char *)sqlite3_column_text(s, 1);
                char *copy = strdup(k ? k : "");
                if (!copy) {
                        sqlite3_reset(s);
                        return -ENOMEM;
                }
                *ret_key = copy;
        }
        if (ret_status)
                *ret_status = (enum mp_device_status)sqlite3_column_int(s, 0);
        sqlite3_reset(s);
        return 0;
}

int mp_registry_touch(struct mp_registry *reg, const char *client_id, time_t now, const char *address) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_DEVICE_SEEN, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, client_id) < 0 || bind_i64(s, 2, now) < 0 || bind_text(s, 3, address) < 0)
                return -EIO;
        return step_done(reg, s);
}

static int record_conflict(struct mp_registry *reg, const struct mp_signin_request *req,
                           const char *known_key) {
        _cleanup_(freep) char *known_fpr = NULL;
        sqlite3_stmt *s;
        int r;

        (void)known_key;
        r = begin_write(reg);
        if (r < 0)
                return r;
        {
                /* The known key's fingerprint is in the devices row. */
                sqlite3_stmt *q;
                if (sqlite3_prepare_v2(reg->db, "SELECT fingerprint FROM devices WHERE client_id = ?1", -1,
                                       &q, NULL) != SQLITE_OK)
                        return sql_error(reg, "prepare");
                sqlite3_bind_text(q, 1, req->client_id, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
                        known_fpr = strdup((const char *)sqlite3_column_text(q, 0));
                sqlite3_finalize(q);
        }
        r = stmt_get(reg, ST_CONFLICT_UPSERT, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, req->client_id) < 0 || bind_text(s, 2, known_fpr) < 0 ||
            bind_text(s, 3, req->fingerprint) < 0 || bind_text(s, 4, req->public_key) < 0 ||
            bind_text(s, 5, req->hostname) < 0 || bind_text(s, 6, req->address) < 0 ||
            bind_i64(s, 7, req->now) < 0)
                return -EIO;
        return step_done(reg, s);
}

int mp_registry_record_duplicate(struct mp_registry *reg, const struct mp_duplicate_record *rec) {
        sqlite3_stmt *s;
        int r;

        if (!rec->client_id || !rec->fingerprint)
                return -EINVAL;
        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_DUPLICATE_UPSERT, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, rec->client_id) < 0 || bind_text(s, 2, rec->fingerprint) < 0 ||
            bind_text(s, 3, rec->hostname) < 0 || bind_text(s, 4, rec->address) < 0 ||
            bind_text(s, 5, rec->established_hostname) < 0 ||
            bind_text(s, 6, rec->established_address) < 0 || bind_i64(s, 7, rec->now) < 0)
                return -EIO;
        return step_done(reg, s);
}

int mp_registry_signin(struct mp_registry *reg, const struct mp_approval_policy *policy,
                       const struct mp_signin_request *req, enum mp_signin_verdict *ret, bool *ret_new) {
        _cleanup_(freep) char *known_key = NULL;
        enum mp_device_status status;
        sqlite3_stmt *s;
        int r;

        if (!req->client_id || !req->public_key || !req->fingerprint)
                return -EINVAL;

        r = mp_registry_device(reg, req->client_id, &status, &known_key);
        if (r < 0 && r != -ENOENT)
                return r;

        if (r == 0) {
                /* Keys are compared in their canonical DER form, base64'd by
                 * the same encoder, so a string comparison is exact. */
                if (strcmp(known_key, req->public_key) != 0) {
                        r = record_conflict(reg, req, known_key);
                        if (r < 0)
                                return r;
                        *ret = MP_SIGNIN_CONFLICT;
                        if (ret_new)
                                *ret_new = false;
                        return 0;
                }
                r = begin_write(reg);
                if (r < 0)
                        return r;
                r = stmt_get(reg, ST_DEVICE_SEEN, &s);
                if (r < 0)
                        return r;
                if (bind_text(s, 1, req->client_id) < 0 || bind_i64(s, 2, req->now) < 0 ||
                    bind_text(s, 3, req->address) < 0 || bind_text(s, 4, req->hostname) < 0 ||
                    bind_text(s, 5, req->version) < 0)
                        return -EIO;
                r = step_done(reg, s);
                if (r < 0)
                        return r;
                *ret = status == MP_DEVICE_APPROVED  ? MP_SIGNIN_APPROVED
                       : status == MP_DEVICE_PENDING ? MP_SIGNIN_PENDING
                                                     : MP_SIGNIN_REJECTED;
                if (ret_new)
                        *ret_new = false;
                return 0;
        }

        switch (policy->mode) {
        case MP_APPROVAL_AUTO:
                status = MP_DEVICE_APPROVED;
                break;
        case MP_APPROVAL_TOKEN:
                status = token_matches(policy->token, req->enrolment_token) ? MP_DEVICE_APPROVED
                                                                            : MP_DEVICE_PENDING;
                break;
        case MP_APPROVAL_MANUAL:
        default:
                status = MP_DEVICE_PENDING;
                break;
        }

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_DEVICE_INSERT, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, req->client_id) < 0 || bind_text(s, 2, req->hostname) < 0 ||
            bind_text(s, 3, req->version) < 0 || bind_text(s, 4, req->public_key) < 0 ||
            bind_text(s, 5, req->fingerprint) < 0 || bind_i64(s, 6, status) < 0 ||
            bind_i64(s, 7, req->now) < 0 || bind_text(s, 8, req->address) < 0)
                return -EIO;
        r = step_done(reg, s);
        if (r < 0)
                return r;
        *ret = status == MP_DEVICE_APPROVED ? MP_SIGNIN_APPROVED : MP_SIGNIN_PENDING;
        if (ret_new)
                *ret_new = true;
        return 0;
}

int mp_registry_set_status(struct mp_registry *reg, const char *client_id, enum mp_device_status status) {
        sqlite3_stmt *s;
        int r;

        r = mp_registry_device(reg, client_id, NULL, NULL);
        if (r < 0)
                return r;
        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_DEVICE_STATUS, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, client_id) < 0 || bind_i64(s, 2, status) < 0)
                return -EIO;
        return step_done(reg, s);
}

int mp_registry_device_by_fingerprint(struct mp_registry *reg, const char *fingerprint,
                                      char **ret_client_id) {
        sqlite3_stmt *s;
        char *id;
        int r, rc;

        r = stmt_get(reg, ST_DEVICE_BY_FPR, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, fingerprint) < 0)
                return -EIO;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(s);
                return rc == SQLITE_DONE ? -ENOENT : sql_error(reg, "by fingerprint");
        }
        id = strdup((const char *)sqlite3_column_text(s, 0));
        sqlite3_reset(s);
        if (!id)
                return -ENOMEM;
        *ret_client_id = id;
        return 0;
}

static json_object *column_json(sqlite3_stmt *s, int col) {
        switch (sqlite3_column_type(s, col)) {
        case SQLITE_INTEGER:
                return json_object_new_int64(sqlite3_column_int64(s, col));
        case SQLITE_NULL:
                return NULL;
        default:
                return json_object_new_string_len((const char *)sqlite3_column_text(s, col),
                                                  sqlite3_column_bytes(s, col));
        }
}

/* Runs a read-only query and turns each row into an object keyed by the
 * column names; the hooks below rename enum columns. */
typedef void (*row_fixup_fn)(json_object *row);

static int query_json(struct mp_registry *reg, const char *sql, int n_args, int64_t arg1, int64_t arg2,
                      row_fixup_fn fixup, json_object **ret) {
        sqlite3_stmt *s = NULL;
        json_object *arr;
        int rc;

        if (sqlite3_prepare_v2(reg->db, sql, -1, &s, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        if (n_args >= 1)
                sqlite3_bind_int64(s, 1, arg1);
        if (n_args >= 2)
                sqlite3_bind_int64(s, 2, arg2);
        arr = json_object_new_array();
        if (!arr) {
                sqlite3_finalize(s);
                return -ENOMEM;
        }
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                json_object *row = json_object_new_object();
                int n = sqlite3_column_count(s);

                if (!row)
                        goto oom;
                for (int i = 0; i < n; i++) {
                        json_object *v = column_json(s, i);
                        if (v)
                                json_object_object_add(row, sqlite3_column_name(s, i), v);
                }
                if (fixup)
                        fixup(row);
                json_object_array_add(arr, row);
        }
        if (rc != SQLITE_DONE) {
                json_object_put(arr);
                rc = sql_error(reg, "query");
                sqlite3_finalize(s);
                return rc;
        }
        sqlite3_finalize(s);
        *ret = arr;
        return 0;
oom:
        json_object_put(arr);
        sqlite3_finalize(s);
        return -ENOMEM;
}

static void timestamp_field(json_object *row, const char *key) {
        json_object *v;
        char ts[TETHER_TIMESTAMP_LEN];

        if (!json_object_object_get_ex(row, key, &v) || !json_object_is_type(v, json_type_int))
                return;
        if (tether_timestamp_format((time_t)json_object_get_int64(v), ts) < 0)
                return;
        json_object_object_add(row, key, json_object_new_string(ts));
}

static void device_fixup(json_object *row) {
        json_object *v;

        if (json_object_object_get_ex(row, "status", &v))
                json_object_object_add(
                        row, "status",
                        json_object_new_string(mp_device_status_name(json_object_get_int(v))));
        timestamp_field(row, "first_seen");
        timestamp_field(row, "last_seen");
}

int mp_registry_devices_json(struct mp_registry *reg, json_object **ret) {
        return query_json(
                reg,
                "SELECT client_id, hostname, version, status, fingerprint, first_seen, last_seen, address, "
                "(SELECT group_concat(DISTINCT kind) FROM conflicts c WHERE c.client_id = "
                "devices.client_id) "
                "AS conflict "
                "FROM devices ORDER BY client_id",
                0, 0, 0, device_fixup, ret);
}

static void conflict_fixup(json_object *row) {
        timestamp_field(row, "first_seen");
        timestamp_field(row, "last_seen");
}

int mp_registry_conflicts_json(struct mp_registry *reg, json_object **ret) {
        return query_json(
                reg,
                "SELECT client_id, kind, known_fingerprint, offered_fingerprint, hostname, address, "
                "established_hostname, established_address, first_seen, last_seen, count "
                "FROM conflicts ORDER BY last_seen DESC",
                0, 0, 0, conflict_fixup, ret);
}

int mp_registry_approved_ids(struct mp_registry *reg, char ***ret_ids, size_t *ret_n) {
        sqlite3_stmt *s = NULL;
        char **ids = NULL;
        size_t n = 0, cap = 0;
        int rc;

        if (sqlite3_prepare_v2(reg->db, "SELECT client_id FROM devices WHERE status = 0 ORDER BY client_id",
                               -1, &s, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        char **t = realloc(ids, ncap * sizeof(*ids));
                        if (!t)
                                goto oom;
                        ids = t;
                        cap = ncap;
                }
                ids[n] = strdup((const char *)sqlite3_column_text(s, 0));
                if (!ids[n])
                        goto oom;
                n++;
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
                for (size_t i = 0; i < n; i++)
                        free(ids[i]);
                free(ids);
                return -EIO;
        }
        *ret_ids = ids;
        *ret_n = n;
        return 0;
oom:
        sqlite3_finalize(s);
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
        return -ENOMEM;
}

int mp_registry_push_reserve(struct mp_registry *reg, uint64_t *ret_push_id, uint64_t *ret_task_id) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_PUSH_RESERVE, &s);
        if (r < 0)
                return r;
        if (bind_i64(s, 1, (int64_t)reg->next_push_id) < 0 || bind_i64(s, 2, (int64_t)reg->next_task_id) < 0)
                return -EIO;
        r = step_done(reg, s);
        if (r < 0)
                return r;
        *ret_push_id = reg->next_push_id++;
        *ret_task_id = reg->next_task_id++;
        return 0;
}

int mp_registry_push_store(struct mp_registry *reg, uint64_t push_id, uint64_t task_id,
                           const char *task_guid, uint32_t task_type, const char *task_param, time_t created,
                           time_t expires, const uint8_t *frame, size_t frame_len) {
        sqlite3_stmt *s;
        int r;

        (void)task_id;
        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_PUSH_STORE, &s);
        if (r < 0)
                return r;
        if (bind_i64(s, 1, (int64_t)push_id) < 0 || bind_text(s, 2, task_guid) < 0 ||
            bind_i64(s, 3, task_type) < 0 || bind_text(s, 4, task_param ? task_param : "") < 0 ||
            bind_i64(s, 5, created) < 0 || bind_i64(s, 6, expires) < 0 ||
            bind_blob(s, 7, frame, frame_len) < 0)
                return -EIO;
        return step_done(reg, s);
}

int mp_registry_target_add(struct mp_registry *reg, uint64_t push_id, const char *client_id, time_t now) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_TARGET_ADD, &s);
        if (r < 0)
                return r;
        if (bind_i64(s, 1, (int64_t)push_id) < 0 || bind_text(s, 2, client_id) < 0 ||
            bind_i64(s, 3, now) < 0)
                return -EIO;
        return step_done(reg, s);
}

static int advance(struct mp_registry *reg, enum stmt_id id, sqlite3_int64 push_id, const char *guid,
                   const char *client_id, enum mp_target_state state, time_t now) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, id, &s);
        if (r < 0)
                return r;
        if ((guid ? bind_text(s, 1, guid) : bind_i64(s, 1, push_id)) < 0 || bind_text(s, 2, client_id) < 0 ||
            bind_i64(s, 3, state) < 0 || bind_i64(s, 4, now) < 0)
                return -EIO;
        r = step_done(reg, s);
        if (r < 0)
                return r;
        return sqlite3_changes(reg->db) > 0 ? 1 : 0;
}

int mp_registry_target_advance(struct mp_registry *reg, uint64_t push_id, const char *client_id,
                               enum mp_target_state state, time_t now) {
        return advance(reg, ST_TARGET_ADVANCE, (sqlite3_int64)push_id, NULL, client_id, state, now);
}

int mp_registry_target_advance_guid(struct mp_registry *reg, const char *task_guid, const char *client_id,
                                    enum mp_target_state state, time_t now) {
        return advance(reg, ST_TARGET_ADVANCE_GUID, 0, task_guid, client_id, state, now);
}

int mp_registry_expire(struct mp_registry *reg, time_t now) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_EXPIRE, &s);
        if (r < 0)
                return r;
        if (bind_i64(s, 1, now) < 0)
                return -EIO;
        r = step_done(reg, s);
        if (r < 0)
                return r;
        return sqlite3_changes(reg->db);
}

int mp_registry_undelivered(struct mp_registry *reg, const char *client_id, time_t now, mp_push_frame_cb cb,
                            void *userdata) {
        sqlite3_stmt *s;
        int r, rc;

        r = stmt_get(reg, ST_UNDELIVERED, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, client_id) < 0 || bind_i64(s, 2, now) < 0)
                return -EIO;
        /* Collect first: the callback may write to the same tables. */
        struct row {
                uint64_t push_id;
                uint8_t *frame;
                size_t len;
        } *rows = NULL;
        size_t n = 0;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct row *t = realloc(rows, (n + 1) * sizeof(*rows));
                const void *blob = sqlite3_column_blob(s, 1);
                size_t len = (size_t)sqlite3_column_bytes(s, 1);

                if (!t) {
                        r = -ENOMEM;
                        break;
                }
                rows = t;
                rows[n].push_id = (uint64_t)sqlite3_column_int64(s, 0);
                rows[n].len = len;
                rows[n].frame = malloc(len ? len : 1);
                if (!rows[n].frame) {
                        r = -ENOMEM;
                        break;
                }
                memcpy(rows[n].frame, blob, len);
                n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sql_error(reg, "undelivered");
        sqlite3_reset(s);
        for (size_t i = 0; i < n; i++) {
                if (r >= 0) {
                        int q = cb(rows[i].push_id, rows[i].frame, rows[i].len, userdata);
                        if (q < 0)
                                r = q;
                }
                free(rows[i].frame);
        }
        free(rows);
        return r < 0 ? r : (int)n;
}

int mp_registry_response_store(struct mp_registry *reg, const struct mp_response_record *rec,
                               bool *ret_duplicate) {
        sqlite3_stmt *s;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        r = stmt_get(reg, ST_RESPONSE_INSERT, &s);
        if (r < 0)
                return r;
        if (bind_text(s, 1, rec->client_id) < 0 || bind_text(s, 2, rec->task_guid) < 0 ||
            bind_i64(s, 3, (int64_t)rec->push_id) < 0 || bind_i64(s, 4, (int64_t)rec->task_id) < 0 ||
            bind_i64(s, 5, rec->return_code) < 0 || bind_text(s, 6, rec->detail ? rec->detail : "") < 0 ||
            bind_blob(s, 7, rec->body, rec->body_len) < 0 || bind_blob(s, 8, rec->sig, rec->sig_len) < 0 ||
            bind_text(s, 9, rec->address) < 0 || bind_i64(s, 10, rec->received) < 0)
                return -EIO;
        r = step_done(reg, s);
        if (r < 0)
                return r;
        *ret_duplicate = sqlite3_changes(reg->db) == 0;
        if (*ret_duplicate)
                return 0;
        r = mp_registry_target_advance_guid(reg, rec->task_guid, rec->client_id, MP_TARGET_ANSWERED,
                                            rec->received);
        return r < 0 ? r : 0;
}

static void target_fixup(json_object *row) {
        json_object *v;

        if (json_object_object_get_ex(row, "state", &v))
                json_object_object_add(row, "state",
                                       json_object_new_string(mp_target_state_name(json_object_get_int(v))));
        if (json_object_object_get_ex(row, "return_code", &v))
                json_object_object_add(
                        row, "return_code_name",
                        json_object_new_string(tether_return_code_name(json_object_get_int(v))));
        timestamp_field(row, "updated");
        timestamp_field(row, "received");
}

int mp_registry_push_json(struct mp_registry *reg, uint64_t push_id, time_t now, json_object **ret,
                          bool *ret_done) {
        _cleanup_(json_object_putp) json_object *obj = NULL, *targets = NULL;
        sqlite3_stmt *s = NULL;
        bool done = true;
        size_t n;
        int r, rc;

        if (sqlite3_prepare_v2(reg->db,
                               "SELECT push_id, task_id, task_guid, task_type, task_param, created, expires "
                               "FROM pushes WHERE push_id = ?1 AND frame IS NOT NULL",
                               -1, &s, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        sqlite3_bind_int64(s, 1, (sqlite3_int64)push_id);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(s);
                return rc == SQLITE_DONE ? -ENOENT : sql_error(reg, "push");
        }
        obj = json_object_new_object();
        if (!obj) {
                sqlite3_finalize(s);
                return -ENOMEM;
        }
        for (int i = 0; i < sqlite3_column_count(s); i++) {
                json_object *v = column_json(s, i);
                if (v)
                        json_object_object_add(obj, sqlite3_column_name(s, i), v);
        }
        sqlite3_finalize(s);
        timestamp_field(obj, "created");
        timestamp_field(obj, "expires");

        /* A target that was never delivered or acknowledged before its push
         * expired is shown expired even before the sweep has marked it. */
        r = query_json(reg,
                       "SELECT t.client_id, CASE WHEN t.state IN (0, 1) AND p.expires <= ?2 "
                       "THEN 4 ELSE t.state END AS state, t.updated, r.return_code, r.detail, "
                       "CAST(r.body AS TEXT) AS response_xml, hex(r.signature) AS signature_hex, r.received "
                       "FROM targets t JOIN pushes p ON p.push_id = t.push_id "
                       "LEFT JOIN responses r ON r.client_id = t.client_id AND r.task_guid = p.task_guid "
                       "WHERE t.push_id = ?1 ORDER BY t.client_id",
                       2, (int64_t)push_id, (int64_t)now, target_fixup, &targets);
        if (r < 0)
                return r;
        n = json_object_array_length(targets);
        int counts[5] = {0};
        for (size_t i = 0; i < n; i++) {
                json_object *row = json_object_array_get_idx(targets, i), *v;
                const char *st =
                        json_object_object_get_ex(row, "state", &v) ? json_object_get_string(v) : "";
                for (int k = 0; k < 5; k++)
                        if (strcmp(st, mp_target_state_name(k)) == 0)
                                counts[k]++;
                if (strcmp(st, "answered") != 0 && strcmp(st, "expired") != 0)
                        done = false;
        }
        json_object *summary = json_object_new_object();
        if (!summary)
                return -ENOMEM;
        for (int k = 0; k < 5; k++)
                json_object_object_add(summary, mp_target_state_name(k), json_object_new_int(counts[k]));
        json_object_object_add(obj, "counts", summary);
        json_object_object_add(obj, "total", json_object_new_int((int)n));
        json_object_object_add(obj, "done", json_object_new_boolean(done));
        json_object_object_add(obj, "targets", TAKE_PTR(targets));
        *ret = TAKE_PTR(obj);
        if (ret_done)
                *ret_done = done;
        return 0;
}

static void response_fixup(json_object *row) {
        json_object *v;

        if (json_object_object_get_ex(row, "return_code", &v))
                json_object_object_add(
                        row, "return_code_name",
                        json_object_new_string(tether_return_code_name(json_object_get_int(v))));
        timestamp_field(row, "received");
}

int mp_registry_responses_json(struct mp_registry *reg, unsigned limit, json_object **ret) {
        return query_json(
                reg,
                "SELECT client_id, task_guid, push_id, task_id, return_code, detail, "
                "CAST(body AS TEXT) AS response_xml, hex(signature) AS signature_hex, address, received "
                "FROM responses ORDER BY received DESC, rowid DESC LIMIT ?1",
                1, limit ? limit : 20, 0, response_fixup, ret);
}

/* ---- Key rotation (issue #15) -------------------------------------------
 * Two tables of their own, and nothing else of the registry changed but the
 * schema call in mp_registry_open() and the rebind of devices.public_key,
 * so that this block moves behind the store interface as one piece. */

static const char keys_schema[] =
        "CREATE TABLE IF NOT EXISTS device_site_keys ("
        " client_id TEXT PRIMARY KEY, sent_serial INTEGER NOT NULL, confirmed_serial INTEGER NOT NULL,"
        " updated INTEGER);"
        "CREATE TABLE IF NOT EXISTS key_events ("
        " id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, kind TEXT NOT NULL, old_fingerprint TEXT,"
        " new_fingerprint TEXT, reason TEXT, hostname TEXT, address TEXT, at INTEGER);";

int mp_registry_keys_schema(struct mp_registry *reg) {
        return exec_sql(reg, keys_schema);
}

/* Runs one write statement with text/integer arguments ("t"/"i" in kinds). */
static int keys_write(struct mp_registry *reg, const char *sql, const char *kinds, ...) {
        sqlite3_stmt *s = NULL;
        va_list ap;
        int r;

        r = begin_write(reg);
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(reg->db, sql, -1, &s, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        va_start(ap, kinds);
        for (int i = 0; kinds[i] && r >= 0; i++)
                r = kinds[i] == 't' ? bind_text(s, i + 1, va_arg(ap, const char *))
                                    : bind_i64(s, i + 1, va_arg(ap, int64_t));
        va_end(ap);
        if (r >= 0 && sqlite3_step(s) != SQLITE_DONE)
                r = sql_error(reg, "step");
        sqlite3_finalize(s);
        return r;
}

static int site_key_row(struct mp_registry *reg, const char *client_id, bool *found, int64_t *sent,
                        int64_t *confirmed) {
        sqlite3_stmt *q = NULL;

        *found = false;
        *sent = *confirmed = 0;
        if (sqlite3_prepare_v2(
                    reg->db,
                    "SELECT sent_serial, confirmed_serial FROM device_site_keys WHERE client_id = ?1", -1,
                    &q, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        if (bind_text(q, 1, client_id) < 0) {
                sqlite3_finalize(q);
                return -EIO;
        }
        if (sqlite3_step(q) == SQLITE_ROW) {
                *found = true;
                *sent = sqlite3_column_int64(q, 0);
                *confirmed = sqlite3_column_int64(q, 1);
        }
        sqlite3_finalize(q);
        return 0;
}

static int site_key_put(struct mp_registry *reg, const char *client_id, int64_t sent, int64_t confirmed,
                        time_t now) {
        return keys_write(reg,
                          "INSERT INTO device_site_keys (client_id, sent_serial, confirmed_serial, updated) "
                          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (client_id) DO UPDATE SET "
                          "sent_serial = ?2, confirmed_serial = ?3, updated = ?4",
                          "tiii", client_id, sent, confirmed, (int64_t)now);
}

int mp_registry_site_key_confirmed(struct mp_registry *reg, const char *client_id, uint32_t serial,
                                   time_t now) {
        int64_t sent, confirmed;
        bool found;
        int r;

        r = site_key_row(reg, client_id, &found, &sent, &confirmed);
        if (r < 0)
                return r;
        if (found && confirmed == (int64_t)serial)
                return 0;
        return site_key_put(reg, client_id, sent > serial ? sent : serial, serial, now);
}

int mp_registry_site_key_sent(struct mp_registry *reg, const char *client_id, uint32_t serial, time_t now) {
        int64_t sent = 0, confirmed = 0;
        bool found = false;
        int r;

        r = site_key_row(reg, client_id, &found, &sent, &confirmed);
        if (r < 0)
                return r;
        if (found && sent == (int64_t)serial && confirmed == sent)
                return 0;
        if (found && sent > confirmed)
                confirmed = sent;
        return site_key_put(reg, client_id, serial, confirmed, now);
}

int mp_registry_site_key_counts(struct mp_registry *reg, uint64_t *counts, size_t n) {
        sqlite3_stmt *q = NULL;
        int rc;

        memset(counts, 0, n * sizeof(*counts));
        if (sqlite3_prepare_v2(
                    reg->db,
                    "SELECT confirmed_serial, count(*) FROM device_site_keys GROUP BY confirmed_serial", -1,
                    &q, NULL) != SQLITE_OK)
                return sql_error(reg, "prepare");
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                int64_t serial = sqlite3_column_int64(q, 0);
                if (serial >= 1 && (uint64_t)serial <= n)
                        counts[serial - 1] = (uint64_t)sqlite3_column_int64(q, 1);
        }
        sqlite3_finalize(q);
        return rc == SQLITE_DONE ? 0 : sql_error(reg, "site key counts");
}

int mp_registry_rebind(struct mp_registry *reg, const struct mp_signin_request *req, const char *old_key,
                       const char *old_fingerprint) {
        int r;

        r = keys_write(reg,
                       "UPDATE devices SET public_key = ?2, fingerprint = ?3 WHERE client_id = ?1 AND "
                       "public_key = ?4",
                       "tttt", req->client_id, req->public_key, req->fingerprint, old_key);
        if (r < 0)
                return r;
        if (sqlite3_changes(reg->db) != 1)
                return -ESTALE;
        return keys_write(
                reg,
                "INSERT INTO key_events (client_id, kind, old_fingerprint, new_fingerprint, reason, "
                "hostname, address, at) VALUES (?1, 'rotation', ?2, ?3, NULL, ?4, ?5, ?6)",
                "ttttti", req->client_id, old_fingerprint, req->fingerprint, req->hostname, req->address,
                (int64_t)req->now);
}

int mp_registry_key_event(struct mp_registry *reg, const struct mp_signin_request *req,
                          const char *old_fingerprint, const char *kind, const char *why) {
        return keys_write(
                reg,
                "INSERT INTO key_events (client_id, kind, old_fingerprint, new_fingerprint, reason, "
                "hostname, address, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                "ttttttti", req->client_id, kind, old_fingerprint, req->fingerprint, why, req->hostname,
                req->address, (int64_t)req->now);
}

int mp_registry_key_events_json(struct mp_registry *reg, json_object **ret) {
        return query_json(
                reg,
                "SELECT client_id, kind, old_fingerprint, new_fingerprint, reason, hostname, address, "
                "at FROM key_events ORDER BY id DESC",
                0, 0, 0, NULL, ret);
}
