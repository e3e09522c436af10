/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite engine's console records (mp/store.h, schema version 5):
 * named JSON documents and the hash-chained audit log. These are rare
 * statements (a login, an administrator's action), so they are prepared
 * per call rather than cached. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/log.h"
#include "mp/store-sqlite.h"
#include "mp/store.h"

const char sqlite_admin_schema_v5[] =
        "CREATE TABLE IF NOT EXISTS console_docs (kind TEXT NOT NULL, name TEXT NOT NULL,"
        " body TEXT NOT NULL, updated INTEGER, PRIMARY KEY (kind, name));"
        "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, actor TEXT,"
        " address TEXT, action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, detail TEXT,"
        " prev_hash TEXT NOT NULL, hash TEXT NOT NULL);";

static int prepare(struct mp_store *st, bool write, const char *sql, sqlite3_stmt **ret) {
        sqlite3 *db = sqlite_store_db(st);
        int r;

        if (write) {
                r = sqlite_store_begin(st, &db);
                if (r < 0)
                        return r;
        }
        if (sqlite3_prepare_v2(db, sql, -1, ret, NULL) != SQLITE_OK) {
                log_debug("store: sqlite: prepare '%.60s': %s", sql, sqlite3_errmsg(db));
                return -EIO;
        }
        return 0;
}

static int bind_texts(sqlite3_stmt *q, const char *const *v, int n) {
        for (int i = 0; i < n; i++)
                if (sqlite3_bind_text(q, i + 1, v[i], -1, SQLITE_TRANSIENT) != SQLITE_OK)
                        return -EIO;
        return 0;
}

/* Steps a write to its end; returns the rows changed. */
static int finish_write(sqlite3_stmt *q) {
        int rc = sqlite3_step(q), changes = sqlite3_changes(sqlite3_db_handle(q));

        sqlite3_finalize(q);
        if (rc == SQLITE_CONSTRAINT)
                return -EEXIST;
        return rc == SQLITE_DONE ? changes : -EIO;
}

static char *dup_col(sqlite3_stmt *q, int i, bool *oom) {
        return col_str(q, i, oom);
}

int sqlite_doc_put(struct mp_store *st, const char *kind, const char *name, const char *body, time_t now) {
        const char *v[] = {kind, name, body};
        sqlite3_stmt *q = NULL;
        int r;

        r = prepare(
                st, true,
                "INSERT INTO console_docs (kind, name, body, updated) VALUES (?1, ?2, ?3, ?4) "
                "ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                &q);
        if (r < 0)
                return r;
        if (bind_texts(q, v, 3) < 0 || sqlite3_bind_int64(q, 4, now) != SQLITE_OK) {
                sqlite3_finalize(q);
                return -EIO;
        }
        r = finish_write(q);
        return r < 0 ? r : 0;
}

int sqlite_doc_get(struct mp_store *st, const char *kind, const char *name, char **ret_body) {
        const char *v[] = {kind, name};
        sqlite3_stmt *q = NULL;
        bool oom = false;
        char *body;
        int r, rc;

        r = prepare(st, false, "SELECT body FROM console_docs WHERE kind = ?1 AND name = ?2", &q);
        if (r < 0)
                return r;
        if (bind_texts(q, v, 2) < 0) {
                sqlite3_finalize(q);
                return -EIO;
        }
        rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(q);
                return rc == SQLITE_DONE ? -ENOENT : -EIO;
        }
        body = dup_col(q, 0, &oom);
        sqlite3_finalize(q);
        if (oom || !body) {
                free(body);
                return -ENOMEM;
        }
        *ret_body = body;
        return 0;
}

int sqlite_doc_delete(struct mp_store *st, const char *kind, const char *name) {
        const char *v[] = {kind, name};
        sqlite3_stmt *q = NULL;
        int r;

        r = prepare(st, true, "DELETE FROM console_docs WHERE kind = ?1 AND name = ?2", &q);
        if (r < 0)
                return r;
        if (bind_texts(q, v, 2) < 0) {
                sqlite3_finalize(q);
                return -EIO;
        }
        r = finish_write(q);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int sqlite_docs(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n) {
        struct mp_doc_rec *arr = NULL;
        size_t n = 0, cap = 0;
        sqlite3_stmt *q = NULL;
        bool oom = false;
        int r, rc;

        r = prepare(st, false, "SELECT name, body, updated FROM console_docs WHERE kind = ?1 ORDER BY name",
                    &q);
        if (r < 0)
                return r;
        if (bind_texts(q, &kind, 1) < 0) {
                sqlite3_finalize(q);
                return -EIO;
        }
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                r = mp_store_grow(&arr, sizeof(*arr), n, &cap);
                if (r < 0)
                        break;
                arr[n].name = dup_col(q, 0, &oom);
                arr[n].body = dup_col(q, 1, &oom);
                arr[n++].updated = sqlite3_column_int64(q, 2);
        }
        sqlite3_finalize(q);
        if (r >= 0 && oom)
                r = -ENOMEM;
        if (r >= 0 && rc != SQLITE_DONE)
                r = -EIO;
        if (r < 0) {
                mp_doc_recs_free(arr, n);
                return r;
        }
        *ret = arr;
        *ret_n = n;
        return 0;
}

int sqlite_audit_append(struct mp_store *st, const struct mp_audit_rec *a) {
        const char *v[] = {a->actor,   a->address, a->action,    a->target,
                           a->outcome, a->detail,  a->prev_hash, a->hash};
        sqlite3_stmt *q = NULL;
        int r;

        r = prepare(
                st, true,
                "INSERT INTO audit (actor, address, action, target, outcome, detail, prev_hash, hash, seq, "
                "time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &q);
        if (r < 0)
                return r;
        if (bind_texts(q, v, 8) < 0 || sqlite3_bind_int64(q, 9, a->seq) != SQLITE_OK ||
            sqlite3_bind_int64(q, 10, a->time) != SQLITE_OK) {
                sqlite3_finalize(q);
                return -EIO;
        }
        r = finish_write(q);
        return r < 0 ? r : 0;
}

static int fill_audit(sqlite3_stmt *q, struct mp_audit_rec *a) {
        bool oom = false;

        a->seq = sqlite3_column_int64(q, 0);
        a->time = sqlite3_column_int64(q, 1);
        a->actor = dup_col(q, 2, &oom);
        a->address = dup_col(q, 3, &oom);
        a->action = dup_col(q, 4, &oom);
        a->target = dup_col(q, 5, &oom);
        a->outcome = dup_col(q, 6, &oom);
        a->detail = dup_col(q, 7, &oom);
        a->prev_hash = dup_col(q, 8, &oom);
        a->hash = dup_col(q, 9, &oom);
        return oom ? -ENOMEM : 0;
}

int sqlite_audit_list(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                      size_t *ret_n) {
        struct mp_audit_rec *arr = NULL;
        size_t n = 0, cap = 0;
        sqlite3_stmt *q = NULL;
        int r, rc;

        r = prepare(st, false,
                    "SELECT seq, time, actor, address, action, target, outcome, detail, prev_hash, hash "
                    "FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    &q);
        if (r < 0)
                return r;
        if (sqlite3_bind_int64(q, 1, after) != SQLITE_OK ||
            sqlite3_bind_int64(q, 2, limit ? (int64_t)limit : -1) != SQLITE_OK) {
                sqlite3_finalize(q);
                return -EIO;
        }
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                r = mp_store_grow(&arr, sizeof(*arr), n, &cap);
                if (r < 0)
                        break;
                r = fill_audit(q, &arr[n++]);
                if (r < 0)
                        break;
        }
        sqlite3_finalize(q);
        if (r >= 0 && rc != SQLITE_DONE)
                r = -EIO;
        if (r < 0) {
                mp_audit_recs_free(arr, n);
                return r;
        }
        *ret = arr;
        *ret_n = n;
        return 0;
}

int sqlite_audit_last(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]) {
        sqlite3_stmt *q = NULL;
        const unsigned char *h;
        int r, rc;

        r = prepare(st, false, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &q);
        if (r < 0)
                return r;
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE) {
                *ret_seq = 0;
                memset(ret_hash, '0', 64);
                ret_hash[64] = 0;
                r = 0;
        } else if (rc == SQLITE_ROW && (h = sqlite3_column_text(q, 1)) && strlen((const char *)h) == 64) {
                *ret_seq = sqlite3_column_int64(q, 0);
                memcpy(ret_hash, h, 65);
                r = 0;
        } else
                r = -EIO;
        sqlite3_finalize(q);
        return r;
}
