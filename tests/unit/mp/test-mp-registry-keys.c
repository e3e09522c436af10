/* SPDX-License-Identifier: Apache-2.0 */
/* The key rotation records (issue #15; PROTOCOL-v1 7.2, 7.3) through the
 * registry and the store's ops, on SQLite and, under
 * tests/integration/mp-pg/pg-run.sh (ctest test-mp-registry-keys-pg), on a
 * throwaway PostgreSQL: site key serials sent and confirmed, the rebind of
 * a ClientID to its new key, key events, the session epoch guard, and the
 * schema migration that adds the tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "mp/registry.h"
#include "mp/store.h"
#include "mp/util.h"

#define ID_A "11111111-2222-3333-4444-555555555555"
#define ID_B "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"

static const char *pg_url(void) {
        const char *u = getenv("TETHER_TEST_PG");

        return u && *u ? u : NULL;
}

static void pg_sql(const char *sql) {
        PGconn *c = PQconnectdb(pg_url());
        PGresult *res;

        assert_int_equal(PQstatus(c), CONNECTION_OK);
        res = PQexec(c, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
                fail_msg("%s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(c);
}

static void pg_wipe(void) {
        pg_sql("SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
}

static void sqlite_sql(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        char *err = NULL;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
                fail_msg("%s: %s", sql, err ? err : "?");
        sqlite3_close(db);
}

/* A database path of its own (SQLite file, or the wiped PostgreSQL). */
static void db_path(char dir[], char *path, size_t size) {
        assert_non_null(mkdtemp(dir));
        snprintf(path, size, "%s/db", dir);
        if (pg_url()) {
                pg_wipe();
                snprintf(path, size, "%s", pg_url());
        }
}

static void rm_dir(const char *dir) {
        char cmd[256];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static int setup(void **state) {
        struct mp_registry *reg = NULL;

        if (pg_url())
                pg_wipe();
        assert_int_equal(mp_registry_open(pg_url() ? pg_url() : ":memory:", &reg), 0);
        *state = reg;
        return 0;
}

static int teardown(void **state) {
        mp_registry_free(*state);
        return 0;
}

static struct mp_signin_request req_for(const char *id, const char *key) {
        struct mp_signin_request r = {
                .client_id = id,
                .hostname = "host",
                .version = "0.1",
                .public_key = key,
                .fingerprint = key, /* any stable text serves here */
                .address = "127.0.0.1",
                .now = 1000,
        };
        return r;
}

static void signin(struct mp_registry *reg, const char *id, const char *key,
                   enum mp_signin_verdict expected) {
        struct mp_approval_policy pol = {.mode = MP_APPROVAL_AUTO};
        struct mp_signin_request req = req_for(id, key);
        enum mp_signin_verdict v;

        assert_int_equal(mp_registry_signin(reg, &pol, &req, &v, NULL), 0);
        assert_int_equal(v, expected);
}

static const char *field(json_object *row, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(row, key, &v) || json_object_is_type(v, json_type_null))
                return NULL;
        return json_object_get_string(v);
}

static void counts_are(struct mp_registry *reg, uint64_t c1, uint64_t c2, uint64_t c3) {
        uint64_t counts[3] = {99, 99, 99};

        assert_int_equal(mp_registry_commit(reg), 0);
        assert_int_equal(mp_registry_site_key_counts(reg, counts, 3), 0);
        assert_int_equal(counts[0], c1);
        assert_int_equal(counts[1], c2);
        assert_int_equal(counts[2], c3);
}

/* A confirm by serial N answered on the connection, or a new sign-in after
 * it, counts the device for N; never backwards to an older sent serial. */
static void test_site_key_serials(void **state) {
        struct mp_registry *reg = *state;

        signin(reg, ID_A, "KA", MP_SIGNIN_APPROVED);
        signin(reg, ID_B, "KB", MP_SIGNIN_APPROVED);
        counts_are(reg, 0, 0, 0);
        /* sent 1, not yet answered: nothing confirmed */
        assert_int_equal(mp_registry_site_key_sent(reg, ID_A, 1, 1001), 0);
        counts_are(reg, 0, 0, 0);
        /* answered on the connection */
        assert_int_equal(mp_registry_site_key_confirmed(reg, ID_A, 1, 1002), 0);
        counts_are(reg, 1, 0, 0);
        /* B: sent 1, then signs in again and is sent 2: it took 1 */
        assert_int_equal(mp_registry_site_key_sent(reg, ID_B, 1, 1003), 0);
        assert_int_equal(mp_registry_site_key_sent(reg, ID_B, 2, 1004), 0);
        counts_are(reg, 2, 0, 0);
        /* B signs in again after the confirm by 2: it took 2 */
        assert_int_equal(mp_registry_site_key_sent(reg, ID_B, 2, 1005), 0);
        counts_are(reg, 1, 1, 0);
        /* and again: nothing changes */
        assert_int_equal(mp_registry_site_key_sent(reg, ID_B, 2, 1006), 0);
        counts_are(reg, 1, 1, 0);
        /* A answers a broadcast by 3; a later sign-in sent 2 keeps 3 */
        assert_int_equal(mp_registry_site_key_confirmed(reg, ID_A, 3, 1007), 0);
        counts_are(reg, 0, 1, 1);
        assert_int_equal(mp_registry_site_key_sent(reg, ID_A, 2, 1008), 0);
        assert_int_equal(mp_registry_site_key_confirmed(reg, ID_A, 3, 1009), 0);
        counts_are(reg, 0, 1, 1);
        /* a serial beyond the chain the caller asks about is not counted */
        assert_int_equal(mp_registry_site_key_confirmed(reg, ID_B, 7, 1010), 0);
        counts_are(reg, 0, 0, 1);
}

/* A rollover moves the binding once; the event is kept; a second rebind
 * from the old key is stale and records nothing. */
static void test_rebind(void **state) {
        struct mp_registry *reg = *state;
        struct mp_signin_request req = req_for(ID_A, "KA2");
        _cleanup_(json_object_putp) json_object *events = NULL;
        _cleanup_(freep) char *key = NULL, *by_fpr = NULL;
        json_object *e;

        signin(reg, ID_A, "KA1", MP_SIGNIN_APPROVED);
        assert_int_equal(mp_registry_commit(reg), 0);
        req.now = 2000;
        assert_int_equal(mp_registry_rebind(reg, &req, "KA1", "FPR-KA1"), 0);
        assert_int_equal(mp_registry_commit(reg), 0);
        assert_int_equal(mp_registry_device(reg, ID_A, NULL, &key), 0);
        assert_string_equal(key, "KA2");
        assert_int_equal(mp_registry_device_by_fingerprint(reg, "KA2", &by_fpr), 0);
        assert_string_equal(by_fpr, ID_A);
        /* the new key signs in as the device, no conflict */
        signin(reg, ID_A, "KA2", MP_SIGNIN_APPROVED);

        /* should fail: the binding is KA2 now, not KA1 */
        req.public_key = req.fingerprint = "KA3";
        assert_int_equal(mp_registry_rebind(reg, &req, "KA1", "FPR-KA1"), -ESTALE);
        /* should fail: an unknown ClientID has no binding to move */
        req.client_id = ID_B;
        assert_int_equal(mp_registry_rebind(reg, &req, "KA1", "FPR-KA1"), -ESTALE);
        assert_int_equal(mp_registry_commit(reg), 0);

        assert_int_equal(mp_registry_key_events_json(reg, &events), 0);
        assert_int_equal(json_object_array_length(events), 1);
        e = json_object_array_get_idx(events, 0);
        assert_string_equal(field(e, "client_id"), ID_A);
        assert_string_equal(field(e, "kind"), "rotation");
        assert_string_equal(field(e, "old_fingerprint"), "FPR-KA1");
        assert_string_equal(field(e, "new_fingerprint"), "KA2");
        assert_null(field(e, "reason"));
        assert_string_equal(field(e, "hostname"), "host");
        assert_string_equal(field(e, "address"), "127.0.0.1");
        assert_int_equal(json_object_get_int64(json_object_object_get(e, "at")), 2000);

        /* the console's audit log has the rotation too, and only it */
        struct mp_store *st = mp_registry_store(reg);
        struct mp_audit_rec *recs = NULL;
        size_t n = 0;
        assert_int_equal(st->ops->audit_list(st, 0, 0, &recs, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(recs[0].action, "device.key-rotation");
        assert_string_equal(recs[0].target, ID_A);
        assert_string_equal(recs[0].outcome, "ok");
        assert_string_equal(recs[0].detail, "key FPR-KA1 -> KA2");
        assert_string_equal(recs[0].address, "127.0.0.1");
        assert_int_equal(recs[0].time, 2000);
        mp_audit_recs_free(recs, n);
}

/* Refused rollovers are listed with their reason, newest first. */
static void test_key_events_newest_first(void **state) {
        struct mp_registry *reg = *state;
        struct mp_signin_request req = req_for(ID_A, "KX");
        _cleanup_(json_object_putp) json_object *events = NULL;

        signin(reg, ID_A, "KA", MP_SIGNIN_APPROVED);
        req.now = 3000;
        assert_int_equal(mp_registry_key_event(reg, &req, "OLD1", "rollover-refused", "first reason"), 0);
        req.now = 3001;
        assert_int_equal(mp_registry_key_event(reg, &req, "OLD2", "rollover-refused", "second reason"), 0);
        /* should fail: no kind */
        assert_int_equal(mp_registry_key_event(reg, &req, "OLD3", NULL, "x"), -EINVAL);
        assert_int_equal(mp_registry_commit(reg), 0);
        assert_int_equal(mp_registry_key_events_json(reg, &events), 0);
        assert_int_equal(json_object_array_length(events), 2);
        assert_string_equal(field(json_object_array_get_idx(events, 0), "reason"), "second reason");
        assert_string_equal(field(json_object_array_get_idx(events, 0), "old_fingerprint"), "OLD2");
        assert_string_equal(field(json_object_array_get_idx(events, 1), "reason"), "first reason");
        assert_string_equal(field(json_object_array_get_idx(events, 1), "kind"), "rollover-refused");
        /* the binding is untouched */
        _cleanup_(freep) char *key = NULL;
        assert_int_equal(mp_registry_device(reg, ID_A, NULL, &key), 0);
        assert_string_equal(key, "KA");
}

/* The site key writes made during a session are the holder's only: once
 * another node signed the device in, the first records nothing. */
static void test_site_key_guarded_by_epoch(void **state) {
        char dir[] = "/tmp/test-mp-registry-keys-XXXXXX", path[256];
        struct mp_registry *n1 = NULL, *n2 = NULL;

        (void)state;
        db_path(dir, path, sizeof(path));
        assert_int_equal(mp_registry_open(path, &n1), 0);
        assert_int_equal(mp_registry_set_node(n1, "node-1"), 0);
        assert_int_equal(mp_registry_open(path, &n2), 0);
        assert_int_equal(mp_registry_set_node(n2, "node-2"), 0);
        /* should fail: node 1 never signed A in */
        assert_int_equal(mp_registry_site_key_sent(n1, ID_A, 1, 1000), -ESTALE);
        signin(n1, ID_A, "KA", MP_SIGNIN_APPROVED);
        assert_int_equal(mp_registry_site_key_sent(n1, ID_A, 1, 1001), 0);
        assert_int_equal(mp_registry_commit(n1), 0);
        signin(n2, ID_A, "KA", MP_SIGNIN_APPROVED);
        assert_int_equal(mp_registry_commit(n2), 0);
        /* should fail: node 2 holds A now */
        assert_int_equal(mp_registry_site_key_confirmed(n1, ID_A, 1, 1002), -ESTALE);
        assert_int_equal(mp_registry_site_key_sent(n1, ID_A, 2, 1002), -ESTALE);
        assert_int_equal(mp_registry_commit(n1), 0);
        counts_are(n2, 0, 0, 0);
        assert_int_equal(mp_registry_site_key_confirmed(n2, ID_A, 1, 1003), 0);
        assert_int_equal(mp_registry_commit(n2), 0);
        counts_are(n1, 1, 0, 0);
        mp_registry_free(n1);
        mp_registry_free(n2);
        rm_dir(dir);
}

/* A database at schema version 3 (before key rotation was in the store)
 * gains the tables; so does one of tether-mp before the store, which may
 * have made them already. */
static void test_schema_migrated(void **state) {
        char dir[] = "/tmp/test-mp-registry-keys-XXXXXX", path[256];
        struct mp_registry *reg = NULL;
        struct mp_signin_request req = req_for(ID_A, "KA2");

        (void)state;
        db_path(dir, path, sizeof(path));
        assert_int_equal(mp_registry_open(path, &reg), 0);
        signin(reg, ID_A, "KA", MP_SIGNIN_APPROVED);
        mp_registry_free(reg);
        if (pg_url())
                pg_sql("DROP TABLE device_site_keys; DROP TABLE key_events; "
                       "UPDATE schema_version SET version = 3");
        else
                sqlite_sql(path, "DROP TABLE device_site_keys; DROP TABLE key_events; "
                                 "UPDATE schema_version SET version = 3");
        assert_int_equal(mp_registry_open(path, &reg), 0);
        assert_int_equal(mp_registry_rebind(reg, &req, "KA", "FPR-KA"), 0);
        mp_registry_free(reg);
        if (!pg_url()) {
                /* tether-mp before the store: no schema_version nor the
                 * tables of several nodes, but the key tables are there */
                sqlite_sql(path, "DROP TABLE schema_version; DROP TABLE presence; DROP TABLE nodes; "
                                 "DROP INDEX targets_open; ALTER TABLE pushes DROP COLUMN origin_node");
                assert_int_equal(mp_registry_open(path, &reg), 0);
                _cleanup_(json_object_putp) json_object *events = NULL;
                assert_int_equal(mp_registry_key_events_json(reg, &events), 0);
                assert_int_equal(json_object_array_length(events), 1);
                mp_registry_free(reg);
        }
        rm_dir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_site_key_serials, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rebind, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_events_newest_first, setup, teardown),
                cmocka_unit_test(test_site_key_guarded_by_epoch),
                cmocka_unit_test(test_schema_migrated),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
