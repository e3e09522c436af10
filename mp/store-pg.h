/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Inside the PostgreSQL engine: the connection half (mp/store-pg.c), the
 * statements (mp/store-pg-ops.c) and the key rotation ones
 * (mp/store-pg-keys.c). Not for use outside those files. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

struct pg_store;
struct mp_store;
struct mp_store_ops;
typedef void (*mp_store_hint_cb)(const char *channel, const char *payload, void *userdata);

/* Statement parameters: text (strings, integers) or binary (bytea). */
#define PG_MAX_ARGS 12
struct pg_args {
        int n;
        const char *v[PG_MAX_ARGS];
        int len[PG_MAX_ARGS];
        int fmt[PG_MAX_ARGS];
        char buf[PG_MAX_ARGS][24];
};

void pg_arg_str(struct pg_args *a, const char *v); /* NULL is SQL NULL */
void pg_arg_i64(struct pg_args *a, int64_t v);
void pg_arg_bin(struct pg_args *a, const void *v, size_t len); /* NULL is SQL NULL */

/* Runs one statement (a NULL a: text that may hold several). *ret, when
 * asked for, is the caller's to PQclear. pg_write opens the transaction
 * first. -ENOTCONN: the connection is down; -ECONNABORTED: the open
 * transaction was lost and commit() has not said so yet. */
int pg_exec(struct pg_store *s, const char *what, const char *sql, const struct pg_args *a, PGresult **ret);
int pg_begin(struct pg_store *s); /* opens the transaction, if not open */
int pg_write(struct pg_store *s, const char *what, const char *sql, const struct pg_args *a, PGresult **ret);

/* Column readers; NULL columns are NULL, 0 or an empty length. */
char *pg_str(PGresult *res, int row, int col, bool *oom);
int64_t pg_i64(PGresult *res, int row, int col);
uint8_t *pg_bytes(PGresult *res, int row, int col, size_t *ret_len, bool *oom);

/* The statements' table, in mp/store-pg-ops.c. */
const struct mp_store_ops *pg_ops(void);
/* The parts of the table that live with the connection. */
void pg_free(struct mp_store *st);
int pg_commit(struct mp_store *st);
bool pg_dirty(const struct mp_store *st);
int pg_listen_fd(struct mp_store *st);
int pg_listen_drain(struct mp_store *st, mp_store_hint_cb cb, void *userdata);

/* mp/store.h's key rotation ops (mp/store-pg-keys.c). */
struct mp_key_event_new;
struct mp_key_event_rec;
int pg_site_key_sent(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
int pg_site_key_confirmed(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
int pg_site_key_counts(struct mp_store *st, uint64_t *counts, size_t n);
int pg_device_rebind(struct mp_store *st, const char *client_id, const char *old_key, const char *new_key,
                     const char *new_fingerprint);
int pg_key_event_insert(struct mp_store *st, const struct mp_key_event_new *ev);
int pg_key_events(struct mp_store *st, struct mp_key_event_rec **ret, size_t *ret_n);

/* mp/store-pg-admin.c: the console's tables (schema version 5). */
#include <time.h>
struct mp_doc_rec;
struct mp_audit_rec;
#define pg_admin_schema_v5                                                                                  \
        "CREATE TABLE IF NOT EXISTS console_docs (kind TEXT NOT NULL, name TEXT NOT NULL,"                  \
        " body TEXT NOT NULL, updated BIGINT, PRIMARY KEY (kind, name));"                                   \
        "CREATE TABLE IF NOT EXISTS audit (seq BIGINT PRIMARY KEY, time BIGINT NOT NULL, actor TEXT,"       \
        " address TEXT, action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, detail TEXT,"             \
        " prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
int pg_doc_put(struct mp_store *st, const char *kind, const char *name, const char *body, time_t now);
int pg_doc_get(struct mp_store *st, const char *kind, const char *name, char **ret_body);
int pg_doc_delete(struct mp_store *st, const char *kind, const char *name);
int pg_docs(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n);
int pg_audit_append(struct mp_store *st, const struct mp_audit_rec *rec);
int pg_audit_list(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                  size_t *ret_n);
int pg_audit_last(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]);
