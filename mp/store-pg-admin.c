/* SPDX-License-Identifier: Apache-2.0 */
/* The PostgreSQL engine's console records (mp/store.h, schema version 5):
 * named JSON documents and the hash-chained audit log. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "mp/store-pg.h"
#include "mp/store.h"

#define PG(st) ((struct pg_store *)(st))

DEFINE_TRIVIAL_CLEANUP_FUNC(PGresult *, PQclear)

int pg_doc_put(struct mp_store *st, const char *kind, const char *name, const char *body, time_t now) {
        struct pg_args a = {};

        pg_arg_str(&a, kind);
        pg_arg_str(&a, name);
        pg_arg_str(&a, body);
        pg_arg_i64(&a, now);
        return pg_write(
                PG(st), "console document",
                "INSERT INTO console_docs (kind, name, body, updated) VALUES ($1, $2, $3, $4::bigint) "
                "ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                &a, NULL);
}

int pg_doc_get(struct mp_store *st, const char *kind, const char *name, char **ret_body) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        bool oom = false;
        int r;

        pg_arg_str(&a, kind);
        pg_arg_str(&a, name);
        r = pg_exec(PG(st), "console document",
                    "SELECT body FROM console_docs WHERE kind = $1 AND name = $2", &a, &res);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -ENOENT;
        *ret_body = pg_str(res, 0, 0, &oom);
        return *ret_body ? 0 : -ENOMEM;
}

int pg_doc_delete(struct mp_store *st, const char *kind, const char *name) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, kind);
        pg_arg_str(&a, name);
        r = pg_write(PG(st), "console document", "DELETE FROM console_docs WHERE kind = $1 AND name = $2",
                     &a, &res);
        if (r < 0)
                return r;
        return strcmp(PQcmdTuples(res), "0") == 0 ? -ENOENT : 0;
}

int pg_docs(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct mp_doc_rec *arr;
        struct pg_args a = {};
        bool oom = false;
        int n, r;

        pg_arg_str(&a, kind);
        r = pg_exec(PG(st), "console documents",
                    "SELECT name, body, updated FROM console_docs WHERE kind = $1 ORDER BY name", &a, &res);
        if (r < 0)
                return r;
        n = PQntuples(res);
        arr = calloc(n ? (size_t)n : 1, sizeof(*arr));
        if (!arr)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                arr[i].name = pg_str(res, i, 0, &oom);
                arr[i].body = pg_str(res, i, 1, &oom);
                arr[i].updated = pg_i64(res, i, 2);
        }
        if (oom) {
                mp_doc_recs_free(arr, (size_t)n);
                return -ENOMEM;
        }
        *ret = arr;
        *ret_n = (size_t)n;
        return 0;
}

/* ON CONFLICT DO NOTHING and a count rather than a failed INSERT: a seq
 * taken by another node must not abort the group's open transaction. */
int pg_audit_append(struct mp_store *st, const struct mp_audit_rec *rec) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_i64(&a, rec->seq);
        pg_arg_i64(&a, rec->time);
        pg_arg_str(&a, rec->actor);
        pg_arg_str(&a, rec->address);
        pg_arg_str(&a, rec->action);
        pg_arg_str(&a, rec->target);
        pg_arg_str(&a, rec->outcome);
        pg_arg_str(&a, rec->detail);
        pg_arg_str(&a, rec->prev_hash);
        pg_arg_str(&a, rec->hash);
        r = pg_write(
                PG(st), "audit record",
                "INSERT INTO audit (seq, time, actor, address, action, target, outcome, detail, prev_hash, "
                "hash) VALUES ($1::bigint, $2::bigint, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (seq) DO NOTHING",
                &a, &res);
        if (r < 0)
                return r;
        return strcmp(PQcmdTuples(res), "0") == 0 ? -EEXIST : 0;
}

int pg_audit_list(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                  size_t *ret_n) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct mp_audit_rec *arr;
        struct pg_args a = {};
        bool oom = false;
        int n, r;

        pg_arg_i64(&a, after);
        pg_arg_i64(&a, limit ? (int64_t)limit : INT64_MAX);
        r = pg_exec(PG(st), "audit list",
                    "SELECT seq, time, actor, address, action, target, outcome, detail, prev_hash, hash "
                    "FROM audit WHERE seq > $1::bigint ORDER BY seq LIMIT $2::bigint",
                    &a, &res);
        if (r < 0)
                return r;
        n = PQntuples(res);
        arr = calloc(n ? (size_t)n : 1, sizeof(*arr));
        if (!arr)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                arr[i].seq = pg_i64(res, i, 0);
                arr[i].time = pg_i64(res, i, 1);
                arr[i].actor = pg_str(res, i, 2, &oom);
                arr[i].address = pg_str(res, i, 3, &oom);
                arr[i].action = pg_str(res, i, 4, &oom);
                arr[i].target = pg_str(res, i, 5, &oom);
                arr[i].outcome = pg_str(res, i, 6, &oom);
                arr[i].detail = pg_str(res, i, 7, &oom);
                arr[i].prev_hash = pg_str(res, i, 8, &oom);
                arr[i].hash = pg_str(res, i, 9, &oom);
        }
        if (oom) {
                mp_audit_recs_free(arr, (size_t)n);
                return -ENOMEM;
        }
        *ret = arr;
        *ret_n = (size_t)n;
        return 0;
}

int pg_audit_last(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        const char *h;
        int r;

        r = pg_exec(PG(st), "audit last", "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", NULL,
                    &res);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0) {
                *ret_seq = 0;
                memset(ret_hash, '0', 64);
                ret_hash[64] = 0;
                return 0;
        }
        h = PQgetvalue(res, 0, 1);
        if (!h || strlen(h) != 64)
                return -EIO;
        *ret_seq = pg_i64(res, 0, 0);
        memcpy(ret_hash, h, 65);
        return 0;
}
