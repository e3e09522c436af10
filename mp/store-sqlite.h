/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Inside the SQLite engine: mp/store-sqlite.c (writes, schema) and
 * mp/store-sqlite-read.c (list reads). Not for use outside those files.
 * Record arrays returned are the caller's (mp/store.h's *_free). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sqlite3.h>

struct mp_device_rec;
struct mp_conflict_rec;
struct mp_push_rec;
struct mp_target_rec;
struct mp_response_rec;

/* A text column as a new string (NULL for NULL); *oom set on failure. */
char *col_str(sqlite3_stmt *q, int i, bool *oom);

int sqlite_read_devices(sqlite3 *db, struct mp_device_rec **ret, size_t *ret_n);
int sqlite_read_conflicts(sqlite3 *db, struct mp_conflict_rec **ret, size_t *ret_n);
int sqlite_read_approved_ids(sqlite3 *db, char ***ret_ids, size_t *ret_n);
int sqlite_read_push(sqlite3 *db, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                     struct mp_target_rec **ret_targets, size_t *ret_n);
int sqlite_read_responses(sqlite3 *db, unsigned limit, struct mp_response_rec **ret, size_t *ret_n);

/* For mp/store-sqlite-admin.c: the handle, and opening the write
 * transaction that commit() ends. */
struct mp_store;
struct mp_doc_rec;
struct mp_audit_rec;
sqlite3 *sqlite_db(struct mp_store *st);
int sqlite_begin_write(struct mp_store *st);

/* mp/store-sqlite-admin.c: the console's tables (schema version 2). */
extern const char sqlite_admin_schema_v2[];
int sqlite_doc_put(struct mp_store *st, const char *kind, const char *name, const char *body, time_t now);
int sqlite_doc_get(struct mp_store *st, const char *kind, const char *name, char **ret_body);
int sqlite_doc_delete(struct mp_store *st, const char *kind, const char *name);
int sqlite_docs(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n);
int sqlite_audit_append(struct mp_store *st, const struct mp_audit_rec *rec);
int sqlite_audit_list(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                      size_t *ret_n);
int sqlite_audit_last(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]);
