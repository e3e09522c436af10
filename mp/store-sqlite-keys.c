/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite engine's key rotation ops (mp/store.h; PROTOCOL-v1 7.2, 7.3):
 * the site key serials each device was sent and confirmed, the rebind of a
 * device to its new key, and the key events. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include <sqlite3.h>

#include "common/cleanup.h"
#include "mp/store-sqlite.h"
#include "mp/store.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

static int bind_text(sqlite3_stmt *q, int idx, const char *v) {
        if (!v)
                return sqlite3_bind_null(q, idx) == SQLITE_OK ? 0 : -EIO;
        return sqlite3_bind_text(q, idx, v, -1, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
}

/* Runs one write statement in the open transaction, with text or integer
 * arguments ('t' or 'i' in kinds, in order). *ret_changes may be NULL. */
static int keys_write(struct mp_store *st, const char *sql, int *ret_changes, const char *kinds, ...) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        sqlite3 *db = NULL;
        va_list ap;
        int r;

        r = sqlite_store_begin(st, &db);
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
                return sqlite_error(db, "prepare");
        va_start(ap, kinds);
        for (int i = 0; kinds[i] && r >= 0; i++)
                r = kinds[i] == 't'
                            ? bind_text(q, i + 1, va_arg(ap, const char *))
                            : (sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t)) == SQLITE_OK ? 0 : -EIO);
        va_end(ap);
        if (r < 0)
                return r;
        if (sqlite3_step(q) != SQLITE_DONE)
                return sqlite_error(db, "key rotation write");
        if (ret_changes)
                *ret_changes = sqlite3_changes(db);
        return 0;
}

/* One statement each, so that the read and the write cannot part. */
int sqlite_site_key_sent(struct mp_store *st, const char *client_id, uint32_t serial, time_t now) {
        return keys_write(st,
                          "INSERT INTO device_site_keys (client_id, sent_serial, confirmed_serial, updated) "
                          "VALUES (?1, ?2, 0, ?3) ON CONFLICT (client_id) DO UPDATE SET "
                          "confirmed_serial = CASE WHEN device_site_keys.sent_serial > "
                          "device_site_keys.confirmed_serial THEN device_site_keys.sent_serial "
                          "ELSE device_site_keys.confirmed_serial END, "
                          "sent_serial = excluded.sent_serial, updated = excluded.updated "
                          "WHERE NOT (device_site_keys.sent_serial = excluded.sent_serial AND "
                          "device_site_keys.confirmed_serial = device_site_keys.sent_serial)",
                          NULL, "tii", client_id, (int64_t)serial, (int64_t)now);
}

int sqlite_site_key_confirmed(struct mp_store *st, const char *client_id, uint32_t serial, time_t now) {
        return keys_write(st,
                          "INSERT INTO device_site_keys (client_id, sent_serial, confirmed_serial, updated) "
                          "VALUES (?1, ?2, ?2, ?3) ON CONFLICT (client_id) DO UPDATE SET "
                          "sent_serial = CASE WHEN device_site_keys.sent_serial > excluded.sent_serial "
                          "THEN device_site_keys.sent_serial ELSE excluded.sent_serial END, "
                          "confirmed_serial = excluded.confirmed_serial, updated = excluded.updated "
                          "WHERE device_site_keys.confirmed_serial <> excluded.confirmed_serial",
                          NULL, "tii", client_id, (int64_t)serial, (int64_t)now);
}

int sqlite_site_key_counts(struct mp_store *st, uint64_t *counts, size_t n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *q = NULL;
        sqlite3 *db = sqlite_store_db(st);
        int rc;

        memset(counts, 0, n * sizeof(*counts));
        if (sqlite3_prepare_v2(db,
                               "SELECT confirmed_serial, count(*) FROM device_site_keys "
                               "GROUP BY confirmed_serial",
                               -1, &q, NULL) != SQLITE_OK)
                return sqlite_error(db, "prepare");
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                int64_t serial = sqlite3_column_int64(q, 0);

                if (serial >= 1 && (uint64_t)serial <= n)
                        counts[serial - 1] = (uint64_t)sqlite3_column_int64(q, 1);
        }
        return rc == SQLITE_DONE ? 0 : sqlite_error(db, "site key counts");
}

int sqlite_device_rebind(struct mp_store *st, const char *client_id, const char *old_key,
                         const char *new_key, const char *new_fingerprint) {
        int changes = 0, r;

        r = keys_write(st,
                       "UPDATE devices SET public_key = ?2, fingerprint = ?3 WHERE client_id = ?1 AND "
                       "public_key = ?4",
                       &changes, "tttt", client_id, new_key, new_fingerprint, old_key);
        if (r < 0)
                return r;
        return changes == 1 ? 0 : -ESTALE;
}

int sqlite_key_event_insert(struct mp_store *st, const struct mp_key_event_new *ev) {
        return keys_write(
                st,
                "INSERT INTO key_events (client_id, kind, old_fingerprint, new_fingerprint, reason, "
                "hostname, address, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                NULL, "ttttttti", ev->client_id, ev->kind, ev->old_fingerprint, ev->new_fingerprint,
                ev->reason, ev->hostname, ev->address, (int64_t)ev->at);
}

int sqlite_key_events(struct mp_store *st, struct mp_key_event_rec **ret, size_t *ret_n) {
        return sqlite_read_key_events(sqlite_store_db(st), ret, ret_n);
}
