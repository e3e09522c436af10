/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Inside the SQLite engine: mp/store-sqlite.c (writes),
 * mp/store-sqlite-schema.c (migrations), mp/store-sqlite-read.c (list
 * reads) and mp/store-sqlite-keys.c (key rotation). Not for use outside those files.
 * Record arrays returned are the caller's (mp/store.h's *_free). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sqlite3.h>

struct mp_store;
struct mp_device_rec;
struct mp_conflict_rec;
struct mp_push_rec;
struct mp_target_rec;
struct mp_response_rec;

/* -EIO, the message logged at debug. */
int sqlite_error(sqlite3 *db, const char *what);
int sqlite_exec(sqlite3 *db, const char *sql);
/* Brings the schema to MP_STORE_SCHEMA_VERSION (mp/store-sqlite-schema.c);
 * refuses a newer one. */
int sqlite_migrate(sqlite3 *db, const char *path);

/* A text column as a new string (NULL for NULL); *oom set on failure. */
char *col_str(sqlite3_stmt *q, int i, bool *oom);

int sqlite_read_devices(sqlite3 *db, struct mp_device_rec **ret, size_t *ret_n);
int sqlite_read_conflicts(sqlite3 *db, struct mp_conflict_rec **ret, size_t *ret_n);
/* A one-column query of ClientIDs. */
int sqlite_read_ids(sqlite3 *db, const char *sql, char ***ret_ids, size_t *ret_n);
int sqlite_read_approved_ids(sqlite3 *db, char ***ret_ids, size_t *ret_n);
int sqlite_read_push(sqlite3 *db, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                     struct mp_target_rec **ret_targets, size_t *ret_n);
struct mp_frame_rec;
/* Pending targets of other nodes' pushes for ids held by node_id. */
int sqlite_read_take(sqlite3 *db, const char *node_id, char *const *ids, size_t n_ids, time_t now,
                     unsigned limit, struct mp_frame_rec **ret, size_t *ret_n);
int sqlite_read_responses(sqlite3 *db, unsigned limit, struct mp_response_rec **ret, size_t *ret_n);

/* The engine's connection, for the files beside store-sqlite.c; _begin
 * opens the write transaction first (commit() ends it). */
int sqlite_store_begin(struct mp_store *st, sqlite3 **ret_db);
sqlite3 *sqlite_store_db(struct mp_store *st);

struct mp_key_event_new;
struct mp_key_event_rec;
int sqlite_read_key_events(sqlite3 *db, struct mp_key_event_rec **ret, size_t *ret_n);
/* mp/store.h's key rotation ops (mp/store-sqlite-keys.c). */
int sqlite_site_key_sent(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
int sqlite_site_key_confirmed(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
int sqlite_site_key_counts(struct mp_store *st, uint64_t *counts, size_t n);
int sqlite_device_rebind(struct mp_store *st, const char *client_id, const char *old_key,
                         const char *new_key, const char *new_fingerprint);
int sqlite_key_event_insert(struct mp_store *st, const struct mp_key_event_new *ev);
int sqlite_key_events(struct mp_store *st, struct mp_key_event_rec **ret, size_t *ret_n);

struct mp_doc_rec;
struct mp_audit_rec;

/* mp/store-sqlite-admin.c: the console's tables (schema version 5). */
extern const char sqlite_admin_schema_v5[];
int sqlite_doc_put(struct mp_store *st, const char *kind, const char *name, const char *body, time_t now);
int sqlite_doc_get(struct mp_store *st, const char *kind, const char *name, char **ret_body);
int sqlite_doc_delete(struct mp_store *st, const char *kind, const char *name);
int sqlite_docs(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n);
int sqlite_audit_append(struct mp_store *st, const struct mp_audit_rec *rec);
int sqlite_audit_list(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                      size_t *ret_n);
int sqlite_audit_last(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]);
