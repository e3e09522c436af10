/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite engine's schema: its versions and their migrations. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <sqlite3.h>

#include "common/log.h"
#include "mp/store-sqlite.h"
#include "mp/store.h"

int sqlite_error(sqlite3 *db, const char *what) {
        log_debug("store: sqlite: %s: %s", what, sqlite3_errmsg(db));
        return -EIO;
}

int sqlite_exec(sqlite3 *db, const char *sql) {
        char *err = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                log_debug("store: sqlite: '%.80s': %s", sql, err ? err : "?");
                sqlite3_free(err);
                return -EIO;
        }
        return 0;
}

/* Schema version 1: the tables as tether-mp 0.1 made them (created only
 * where missing, so databases from before schema_version existed carry on). */
static const char schema_v1[] =
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

/* Schema version 2: which node holds each device, with its session epoch;
 * which node wrote each push. */
static const char schema_v2[] =
        "CREATE TABLE presence (client_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, epoch INTEGER NOT NULL,"
        " since INTEGER, online INTEGER NOT NULL DEFAULT 1);"
        "ALTER TABLE pushes ADD COLUMN origin_node TEXT;"
        "CREATE INDEX targets_open ON targets (client_id) WHERE state = 0;";

/* Schema version 3: the nodes alive, to share the site's push rate. */
static const char schema_v3[] = "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, seen INTEGER NOT NULL);";

/* Schema version 4: key rotation (PROTOCOL-v1 7.2, 7.3), the site key
 * each device confirmed and the device key events. IF NOT EXISTS: a
 * database of tether-mp before the store (schema version 0) may have them. */
static const char schema_v4[] =
        "CREATE TABLE IF NOT EXISTS device_site_keys ("
        " client_id TEXT PRIMARY KEY, sent_serial INTEGER NOT NULL, confirmed_serial INTEGER NOT NULL,"
        " updated INTEGER);"
        "CREATE TABLE IF NOT EXISTS key_events ("
        " id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, kind TEXT NOT NULL, old_fingerprint TEXT,"
        " new_fingerprint TEXT, reason TEXT, hostname TEXT, address TEXT, at INTEGER);";

/* Databases made before duplicate identities were recorded lack the
 * conflicts table's last three columns. */
static int upgrade_conflicts(sqlite3 *db) {
        sqlite3_stmt *q = NULL;

        if (sqlite3_prepare_v2(db, "SELECT kind, established_hostname, established_address FROM conflicts",
                               -1, &q, NULL) == SQLITE_OK) {
                sqlite3_finalize(q);
                return 0;
        }
        log_debug("store: sqlite: adding the conflict kind columns");
        return sqlite_exec(db, "ALTER TABLE conflicts ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';"
                               "ALTER TABLE conflicts ADD COLUMN established_hostname TEXT;"
                               "ALTER TABLE conflicts ADD COLUMN established_address TEXT;");
}

static int read_version(sqlite3 *db, int *ret) {
        sqlite3_stmt *q = NULL;
        int r = 0;

        if (sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &q, NULL) !=
            SQLITE_OK)
                return sqlite_error(db, "schema version");
        if (sqlite3_step(q) == SQLITE_ROW)
                *ret = sqlite3_column_int(q, 0);
        else
                r = sqlite_error(db, "schema version");
        sqlite3_finalize(q);
        return r;
}

/* Brings the schema to MP_STORE_SCHEMA_VERSION, one version per
 * transaction; refuses a newer one. */
int sqlite_migrate(sqlite3 *db, const char *path) {
        int version = 0, r;

        r = sqlite_exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
        if (r >= 0)
                r = read_version(db, &version);
        if (r < 0)
                return r;
        r = mp_store_check_version("SQLite", path, version);
        if (r < 0 || version >= MP_STORE_SCHEMA_VERSION)
                return r;
        r = sqlite_exec(db, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        if (version < 1) {
                r = sqlite_exec(db, schema_v1);
                if (r >= 0)
                        r = upgrade_conflicts(db);
        }
        if (r >= 0 && version < 2)
                r = sqlite_exec(db, schema_v2);
        if (r >= 0 && version < 3)
                r = sqlite_exec(db, schema_v3);
        if (r >= 0 && version < 4)
                r = sqlite_exec(db, schema_v4);
        /* 4 -> 5: the console's records (mp/store-sqlite-admin.c) */
        if (r >= 0 && version < 5)
                r = sqlite_exec(db, sqlite_admin_schema_v5);
        if (r >= 0)
                r = sqlite_exec(db, "DELETE FROM schema_version");
        if (r >= 0) {
                char sql[96];
                snprintf(sql, sizeof(sql), "INSERT INTO schema_version VALUES (%d)",
                         MP_STORE_SCHEMA_VERSION);
                r = sqlite_exec(db, sql);
        }
        if (r < 0) {
                (void)sqlite_exec(db, "ROLLBACK");
                return r;
        }
        log_debug("store: sqlite: %s at schema version %d", path, MP_STORE_SCHEMA_VERSION);
        return sqlite_exec(db, "COMMIT");
}
