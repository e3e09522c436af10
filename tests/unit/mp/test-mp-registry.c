/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "mp/registry.h"
#include "mp/util.h"

#define ID_A "11111111-2222-3333-4444-555555555555"
#define ID_B "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
#define GUID1 "A43DD1B3-A006-4604-B012-5529380B3B6F"

/* Under tests/integration/mp-pg/pg-run.sh (ctest test-mp-registry-pg)
 * TETHER_TEST_PG names a throwaway PostgreSQL and every test runs there;
 * otherwise on SQLite. */
static const char *pg_url(void) {
        const char *u = getenv("TETHER_TEST_PG");

        return u && *u ? u : NULL;
}

/* Runs SQL on the test's PostgreSQL over a connection of its own. */
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

/* Each test starts from an empty database. */
static void pg_wipe(void) {
        pg_sql("SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
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

static struct mp_signin_request req_for(const char *id, const char *key, const char *token) {
        struct mp_signin_request r = {
                .client_id = id,
                .hostname = "host",
                .version = "0.1",
                .public_key = key,
                .fingerprint = key, /* any stable text serves in these tests */
                .enrolment_token = token,
                .address = "127.0.0.1",
                .now = 1000,
        };
        return r;
}

static enum mp_signin_verdict signin(struct mp_registry *reg, enum mp_approval_mode mode, const char *token,
                                     const char *id, const char *key, const char *given, bool *is_new) {
        struct mp_approval_policy pol = {.mode = mode, .token = token};
        struct mp_signin_request req = req_for(id, key, given);
        enum mp_signin_verdict v;

        assert_int_equal(mp_registry_signin(reg, &pol, &req, &v, is_new), 0);
        return v;
}

static size_t array_len(json_object *o, const char *key) {
        json_object *arr = o;

        if (key)
                assert_true(json_object_object_get_ex(o, key, &arr));
        return json_object_array_length(arr);
}

static void test_auto_binds_first_key(void **state) {
        struct mp_registry *reg = *state;
        _cleanup_(json_object_putp) json_object *conflicts = NULL, *devices = NULL;
        enum mp_device_status st;
        _cleanup_(freep) char *key = NULL;
        bool is_new;

        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY1", NULL, &is_new),
                         MP_SIGNIN_APPROVED);
        assert_true(is_new);
        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY1", NULL, &is_new),
                         MP_SIGNIN_APPROVED);
        assert_false(is_new);
        /* a second key for the same ClientID: conflict, recorded, binding kept */
        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY2", NULL, &is_new),
                         MP_SIGNIN_CONFLICT);
        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY2", NULL, &is_new),
                         MP_SIGNIN_CONFLICT);
        assert_int_equal(mp_registry_device(reg, ID_A, &st, &key), 0);
        assert_string_equal(key, "KEY1");
        assert_int_equal(st, MP_DEVICE_APPROVED);
        assert_int_equal(mp_registry_conflicts_json(reg, &conflicts), 0);
        assert_int_equal(array_len(conflicts, NULL), 1); /* one row per offered key, with a count */
        json_object *row = json_object_array_get_idx(conflicts, 0), *v;
        assert_true(json_object_object_get_ex(row, "count", &v));
        assert_int_equal(json_object_get_int(v), 2);
        assert_true(json_object_object_get_ex(row, "known_fingerprint", &v));
        assert_string_equal(json_object_get_string(v), "KEY1");
        assert_int_equal(mp_registry_devices_json(reg, &devices), 0);
        assert_int_equal(array_len(devices, NULL), 1);
        assert_int_equal(mp_registry_commit(reg), 0);
        assert_false(mp_registry_dirty(reg));
}

static void test_manual_mode(void **state) {
        struct mp_registry *reg = *state;
        enum mp_device_status st;

        assert_int_equal(signin(reg, MP_APPROVAL_MANUAL, NULL, ID_A, "K", NULL, NULL), MP_SIGNIN_PENDING);
        assert_int_equal(signin(reg, MP_APPROVAL_MANUAL, NULL, ID_A, "K", NULL, NULL), MP_SIGNIN_PENDING);
        assert_int_equal(mp_registry_set_status(reg, ID_A, MP_DEVICE_APPROVED), 0);
        assert_int_equal(signin(reg, MP_APPROVAL_MANUAL, NULL, ID_A, "K", NULL, NULL), MP_SIGNIN_APPROVED);
        assert_int_equal(mp_registry_set_status(reg, ID_A, MP_DEVICE_REJECTED), 0);
        assert_int_equal(signin(reg, MP_APPROVAL_MANUAL, NULL, ID_A, "K", NULL, NULL), MP_SIGNIN_REJECTED);
        assert_int_equal(mp_registry_device(reg, ID_A, &st, NULL), 0);
        assert_int_equal(st, MP_DEVICE_REJECTED);
        /* unknown devices cannot be decided */
        assert_int_equal(mp_registry_set_status(reg, ID_B, MP_DEVICE_APPROVED), -ENOENT);
        assert_int_equal(mp_registry_device(reg, ID_B, &st, NULL), -ENOENT);
}

static void test_token_mode(void **state) {
        struct mp_registry *reg = *state;

        assert_int_equal(signin(reg, MP_APPROVAL_TOKEN, "s3cret", ID_A, "K1", "s3cret", NULL),
                         MP_SIGNIN_APPROVED);
        /* wrong, partial, longer or missing token: left pending */
        assert_int_equal(signin(reg, MP_APPROVAL_TOKEN, "s3cret", ID_B, "K2", "s3cre", NULL),
                         MP_SIGNIN_PENDING);
        assert_int_equal(signin(reg, MP_APPROVAL_TOKEN, "s3cret", "22222222-2222-3333-4444-555555555555",
                                "K3", "s3cret!", NULL),
                         MP_SIGNIN_PENDING);
        assert_int_equal(signin(reg, MP_APPROVAL_TOKEN, "s3cret", "33333333-2222-3333-4444-555555555555",
                                "K4", NULL, NULL),
                         MP_SIGNIN_PENDING);
        /* a server without a token approves nobody by token */
        assert_int_equal(
                signin(reg, MP_APPROVAL_TOKEN, "", "44444444-2222-3333-4444-555555555555", "K5", "", NULL),
                MP_SIGNIN_PENDING);
}

static void test_fingerprint_lookup_needs_approval(void **state) {
        struct mp_registry *reg = *state;
        _cleanup_(freep) char *id = NULL;

        assert_int_equal(signin(reg, MP_APPROVAL_MANUAL, NULL, ID_A, "FPR-A", NULL, NULL),
                         MP_SIGNIN_PENDING);
        assert_int_equal(mp_registry_device_by_fingerprint(reg, "FPR-A", &id), -ENOENT);
        assert_int_equal(mp_registry_set_status(reg, ID_A, MP_DEVICE_APPROVED), 0);
        assert_int_equal(mp_registry_device_by_fingerprint(reg, "FPR-A", &id), 0);
        assert_string_equal(id, ID_A);
}

static int count_cb(uint64_t push_id, const uint8_t *frame, size_t len, void *userdata) {
        int *n = userdata;

        assert_int_equal(len, 5);
        assert_memory_equal(frame, "FRAME", 5);
        (void)push_id;
        (*n)++;
        return 0;
}

static const char *target_state(json_object *push, const char *id) {
        json_object *targets, *v;

        assert_true(json_object_object_get_ex(push, "targets", &targets));
        for (size_t i = 0; i < json_object_array_length(targets); i++) {
                json_object *t = json_object_array_get_idx(targets, i);
                assert_true(json_object_object_get_ex(t, "client_id", &v));
                if (strcmp(json_object_get_string(v), id) == 0) {
                        assert_true(json_object_object_get_ex(t, "state", &v));
                        return json_object_get_string(v);
                }
        }
        fail_msg("no target %s", id);
        return NULL;
}

static void test_push_states_and_dedupe(void **state) {
        struct mp_registry *reg = *state;
        uint64_t push_id, task_id, push2, task2;
        int n = 0;
        bool dup, done;

        signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        signin(reg, MP_APPROVAL_AUTO, NULL, ID_B, "KB", NULL, NULL);
        assert_int_equal(mp_registry_push_reserve(reg, &push_id, &task_id), 0);
        assert_int_equal(mp_registry_push_reserve(reg, &push2, &task2), 0);
        assert_int_equal(push2, push_id + 1);
        assert_int_equal(mp_registry_push_store(reg, push_id, task_id, GUID1, 1, "", 1000, 5000,
                                                (const uint8_t *)"FRAME", 5),
                         0);
        assert_int_equal(mp_registry_target_add(reg, push_id, ID_A, 1000), 0);
        assert_int_equal(mp_registry_target_add(reg, push_id, ID_B, 1000), 0);

        assert_int_equal(mp_registry_undelivered(reg, ID_A, 1000, count_cb, &n), 1);
        assert_int_equal(n, 1);
        assert_int_equal(mp_registry_target_advance(reg, push_id, ID_A, MP_TARGET_DELIVERED, 1001), 1);
        assert_int_equal(mp_registry_target_advance_guid(reg, GUID1, ID_A, MP_TARGET_ACKNOWLEDGED, 1002), 1);
        /* never backwards */
        assert_int_equal(mp_registry_target_advance(reg, push_id, ID_A, MP_TARGET_DELIVERED, 1003), 0);
        /* acknowledged: no longer re-sent */
        n = 0;
        assert_int_equal(mp_registry_undelivered(reg, ID_A, 1000, count_cb, &n), 0);

        struct mp_response_record rec = {
                .client_id = ID_A,
                .task_guid = GUID1,
                .push_id = push_id,
                .task_id = task_id,
                .return_code = 1,
                .detail = "ok",
                .body = (const uint8_t *)"<BgbResponseMessage/>",
                .body_len = 21,
                .sig = (const uint8_t *)"\x01\x02",
                .sig_len = 2,
                .address = "127.0.0.1",
                .received = 1004,
        };
        assert_int_equal(mp_registry_response_store(reg, &rec, &dup), 0);
        assert_false(dup);
        rec.return_code = 2; /* a re-sent copy changes nothing */
        assert_int_equal(mp_registry_response_store(reg, &rec, &dup), 0);
        assert_true(dup);

        _cleanup_(json_object_putp) json_object *push = NULL, *responses = NULL;
        assert_int_equal(mp_registry_push_json(reg, push_id, 1005, &push, &done), 0);
        assert_false(done);
        assert_string_equal(target_state(push, ID_A), "answered");
        assert_string_equal(target_state(push, ID_B), "pending");
        assert_int_equal(mp_registry_responses_json(reg, 10, &responses), 0);
        assert_int_equal(array_len(responses, NULL), 1);
        json_object *v;
        assert_true(json_object_object_get_ex(json_object_array_get_idx(responses, 0), "return_code", &v));
        assert_int_equal(json_object_get_int(v), 1);
        assert_true(json_object_object_get_ex(json_object_array_get_idx(responses, 0), "response_xml", &v));
        assert_string_equal(json_object_get_string(v), "<BgbResponseMessage/>");

        /* expiry: B never got it */
        json_object_put(TAKE_PTR(push));
        assert_int_equal(mp_registry_push_json(reg, push_id, 6000, &push, &done), 0);
        assert_string_equal(target_state(push, ID_B), "expired");
        assert_true(done);
        n = 0;
        assert_int_equal(mp_registry_undelivered(reg, ID_B, 6000, count_cb, &n), 0);
        assert_int_equal(mp_registry_expire(reg, 6000), 1);
        assert_int_equal(mp_registry_expire(reg, 6000), 0);
        /* a late answer still overrides expiry */
        rec.client_id = ID_B;
        assert_int_equal(mp_registry_response_store(reg, &rec, &dup), 0);
        assert_false(dup);
        json_object_put(TAKE_PTR(push));
        assert_int_equal(mp_registry_push_json(reg, push_id, 6000, &push, &done), 0);
        assert_string_equal(target_state(push, ID_B), "answered");

        /* unknown push */
        json_object_put(TAKE_PTR(push));
        assert_int_equal(mp_registry_push_json(reg, 999, 6000, &push, &done), -ENOENT);
}

static void test_records_survive_reopen(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[128];
        struct mp_registry *reg = NULL;
        uint64_t push_id, task_id;
        enum mp_device_status st;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/db", dir);
        if (pg_url()) {
                pg_wipe();
                snprintf(path, sizeof(path), "%s", pg_url());
        }
        assert_int_equal(mp_registry_open(path, &reg), 0);
        signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        assert_int_equal(mp_registry_push_reserve(reg, &push_id, &task_id), 0);
        assert_int_equal(
                mp_registry_push_store(reg, push_id, task_id, GUID1, 1, "", 1, 2, (const uint8_t *)"F", 1),
                0);
        assert_int_equal(mp_registry_commit(reg), 0);
        mp_registry_free(reg);

        assert_int_equal(mp_registry_open(path, &reg), 0);
        assert_int_equal(mp_registry_device(reg, ID_A, &st, NULL), 0);
        assert_int_equal(st, MP_DEVICE_APPROVED);
        /* ids continue after the stored ones */
        uint64_t p2, t2;
        assert_int_equal(mp_registry_push_reserve(reg, &p2, &t2), 0);
        assert_int_equal(p2, push_id + 1);
        assert_int_equal(t2, task_id + 1);
        mp_registry_free(reg);

        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static const char *field(json_object *row, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(row, key, &v) || json_object_is_type(v, json_type_null))
                return NULL;
        return json_object_get_string(v);
}

static json_object *conflict_of_kind(json_object *arr, const char *kind) {
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *row = json_object_array_get_idx(arr, i);
                if (field(row, "kind") && strcmp(field(row, "kind"), kind) == 0)
                        return row;
        }
        return NULL;
}

/* Two devices behind one ClientID and key: one "duplicate-identity" row per
 * ClientID, with both sides' hostnames and peers, apart from key conflicts;
 * the device row is flagged. */
static void test_duplicate_identity(void **state) {
        struct mp_registry *reg = *state;
        _cleanup_(json_object_putp) json_object *conflicts = NULL, *devices = NULL;
        struct mp_duplicate_record rec = {
                .client_id = ID_A,
                .fingerprint = "KEY1",
                .hostname = "clone",
                .address = "192.0.2.2:40000",
                .established_hostname = "original",
                .established_address = "192.0.2.1:50000",
                .now = 2000,
        };
        json_object *row;

        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY1", NULL, NULL), MP_SIGNIN_APPROVED);
        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_B, "KEYB", NULL, NULL), MP_SIGNIN_APPROVED);
        assert_int_equal(mp_registry_devices_json(reg, &devices), 0);
        assert_null(field(json_object_array_get_idx(devices, 0), "conflict"));
        json_object_put(TAKE_PTR(devices));

        assert_int_equal(mp_registry_record_duplicate(reg, &rec), 0);
        rec.now = 2100;
        rec.address = "192.0.2.2:40001";
        assert_int_equal(mp_registry_record_duplicate(reg, &rec), 0);
        /* and a key conflict for the same ClientID: its own row */
        assert_int_equal(signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KEY2", NULL, NULL), MP_SIGNIN_CONFLICT);

        assert_int_equal(mp_registry_conflicts_json(reg, &conflicts), 0);
        assert_int_equal(array_len(conflicts, NULL), 2);
        row = conflict_of_kind(conflicts, "duplicate-identity");
        assert_non_null(row);
        assert_string_equal(field(row, "client_id"), ID_A);
        assert_string_equal(field(row, "count"), "2");
        assert_string_equal(field(row, "hostname"), "clone");
        assert_string_equal(field(row, "address"), "192.0.2.2:40001");
        assert_string_equal(field(row, "established_hostname"), "original");
        assert_string_equal(field(row, "established_address"), "192.0.2.1:50000");
        assert_string_equal(field(row, "known_fingerprint"), "KEY1");
        assert_string_equal(field(row, "offered_fingerprint"), "KEY1");
        row = conflict_of_kind(conflicts, "key");
        assert_non_null(row);
        assert_string_equal(field(row, "offered_fingerprint"), "KEY2");
        assert_null(field(row, "established_address"));

        /* the device list flags A with its conflicts kinds, not B */
        assert_int_equal(mp_registry_devices_json(reg, &devices), 0);
        for (size_t i = 0; i < json_object_array_length(devices); i++) {
                json_object *d = json_object_array_get_idx(devices, i);
                if (strcmp(field(d, "client_id"), ID_A) == 0) {
                        /* both kinds, in any order */
                        assert_non_null(strstr(field(d, "conflict"), "duplicate-identity"));
                        assert_non_null(strstr(field(d, "conflict"), "key"));
                } else {
                        assert_null(field(d, "conflict"));
                }
        }
        /* should fail: nothing to record without a ClientID or key */
        rec.client_id = NULL;
        assert_int_equal(mp_registry_record_duplicate(reg, &rec), -EINVAL);
}

/* A database from before duplicate identities gains the new columns; its
 * key conflicts read as kind "key". */
static void test_old_conflicts_table_upgraded(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[128], cmd[256];
        _cleanup_(json_object_putp) json_object *conflicts = NULL;
        struct mp_registry *reg = NULL;
        sqlite3 *db = NULL;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/db", dir);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(
                sqlite3_exec(db,
                             "CREATE TABLE conflicts (client_id TEXT NOT NULL, known_fingerprint TEXT,"
                             " offered_fingerprint TEXT NOT NULL, offered_key TEXT, hostname TEXT,"
                             " address TEXT, first_seen INTEGER, last_seen INTEGER,"
                             " count INTEGER NOT NULL, PRIMARY KEY (client_id, offered_fingerprint));"
                             "INSERT INTO conflicts VALUES ('" ID_A
                             "', 'K1', 'K2', NULL, 'h', 'a', 1, 1, 3);",
                             NULL, NULL, NULL),
                SQLITE_OK);
        sqlite3_close(db);

        assert_int_equal(mp_registry_open(path, &reg), 0);
        assert_int_equal(mp_registry_conflicts_json(reg, &conflicts), 0);
        assert_int_equal(array_len(conflicts, NULL), 1);
        assert_string_equal(field(json_object_array_get_idx(conflicts, 0), "kind"), "key");
        mp_registry_free(reg);
        /* opening again does not try to add the columns twice */
        assert_int_equal(mp_registry_open(path, &reg), 0);
        mp_registry_free(reg);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

/* The schema is versioned; a database from a newer tether-mp is refused,
 * and left as it was. */
static void test_newer_schema_refused(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[256], cmd[256];
        struct mp_registry *reg = NULL;
        sqlite3 *db = NULL;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/db", dir);
        if (pg_url()) {
                pg_wipe();
                snprintf(path, sizeof(path), "%s", pg_url());
        }
        assert_int_equal(mp_registry_open(path, &reg), 0);
        signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        mp_registry_free(reg);
        reg = NULL;
        if (pg_url())
                pg_sql("UPDATE schema_version SET version = 999");
        else {
                assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
                assert_int_equal(
                        sqlite3_exec(db, "UPDATE schema_version SET version = 999", NULL, NULL, NULL),
                        SQLITE_OK);
                sqlite3_close(db);
        }
        /* should fail: 999 is newer than this binary knows */
        assert_int_equal(mp_registry_open(path, &reg), -EPROTONOSUPPORT);
        assert_null(reg);
        /* the version back: the records are still there */
        char sql[96];
        snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", MP_STORE_SCHEMA_VERSION);
        if (pg_url())
                pg_sql(sql);
        else {
                assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
                assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
                sqlite3_close(db);
        }
        assert_int_equal(mp_registry_open(path, &reg), 0);
        assert_int_equal(mp_registry_device(reg, ID_A, NULL, NULL), 0);
        mp_registry_free(reg);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

/* PostgreSQL: a connection lost with writes open loses that transaction;
 * commit says so (the server then acknowledges none of it), and the next
 * call reconnects. */
static void test_pg_connection_lost(void **state) {
        struct mp_registry *reg = *state;
        enum mp_device_status st;
        int r;

        signin(reg, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        assert_int_equal(mp_registry_commit(reg), 0);
        signin(reg, MP_APPROVAL_AUTO, NULL, ID_B, "KB", NULL, NULL);
        assert_true(mp_registry_dirty(reg));
        pg_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE pid <> pg_backend_pid() AND datname = current_database()");
        /* should fail: the connection is gone */
        r = mp_registry_set_status(reg, ID_A, MP_DEVICE_PENDING);
        assert_int_equal(r, -ENOTCONN);
        assert_true(mp_registry_dirty(reg));
        assert_int_equal(mp_registry_commit(reg), -ECONNABORTED);
        assert_false(mp_registry_dirty(reg));
        /* reconnected: A was committed, B was not */
        assert_int_equal(mp_registry_device(reg, ID_A, &st, NULL), 0);
        assert_int_equal(st, MP_DEVICE_APPROVED);
        assert_int_equal(mp_registry_device(reg, ID_B, NULL, NULL), -ENOENT);
        signin(reg, MP_APPROVAL_AUTO, NULL, ID_B, "KB", NULL, NULL);
        assert_int_equal(mp_registry_commit(reg), 0);
        assert_int_equal(mp_registry_device(reg, ID_B, NULL, NULL), 0);
}

/* Two registries on one database, as two nodes. */
static void open_node(const char *path, const char *node, struct mp_registry **ret) {
        assert_int_equal(mp_registry_open(path, ret), 0);
        assert_int_equal(mp_registry_set_node(*ret, node), 0);
        assert_string_equal(mp_registry_node(*ret), node);
}

static void shared_path(char dir[], char *path, size_t size) {
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

/* A device moves from node 1 to node 2: its epoch grows, and node 1 can no
 * longer record anything on its behalf; node 2 can. */
static void test_session_epoch_guards_writes(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[256];
        struct mp_registry *n1 = NULL, *n2 = NULL;
        uint64_t push_id, task_id, e1, e2;
        bool dup;

        (void)state;
        shared_path(dir, path, sizeof(path));
        open_node(path, "node-1", &n1);
        open_node(path, "node-2", &n2);
        signin(n1, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        assert_int_equal(mp_registry_push_reserve(n1, &push_id, &task_id), 0);
        assert_int_equal(mp_registry_push_store(n1, push_id, task_id, GUID1, 1, "", 1000, 5000,
                                                (const uint8_t *)"FRAME", 5),
                         0);
        assert_int_equal(mp_registry_target_add(n1, push_id, ID_A, 1000), 0);
        assert_int_equal(mp_registry_commit(n1), 0);
        assert_int_equal(mp_registry_epoch(n1, ID_A, &e1), 0);

        signin(n2, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        assert_int_equal(mp_registry_commit(n2), 0);
        assert_int_equal(mp_registry_epoch(n2, ID_A, &e2), 0);
        assert_true(e2 > e1);
        assert_int_equal(mp_registry_epoch(n2, ID_B, &e2), -ENOENT);

        struct mp_response_record rec = {
                .client_id = ID_A,
                .task_guid = GUID1,
                .push_id = push_id,
                .task_id = task_id,
                .return_code = 1,
                .detail = "ok",
                .body = (const uint8_t *)"<R/>",
                .body_len = 4,
                .address = "127.0.0.1",
                .received = 1004,
        };
        /* should fail: node 1 no longer holds A */
        assert_int_equal(mp_registry_response_store(n1, &rec, &dup), -ESTALE);
        assert_int_equal(mp_registry_target_advance(n1, push_id, ID_A, MP_TARGET_DELIVERED, 1001), -ESTALE);
        assert_int_equal(mp_registry_touch(n1, ID_A, 1002, NULL), -ESTALE);
        assert_int_equal(mp_registry_commit(n1), 0);
        /* node 2 does */
        assert_int_equal(mp_registry_target_advance(n2, push_id, ID_A, MP_TARGET_DELIVERED, 1001), 1);
        assert_int_equal(mp_registry_response_store(n2, &rec, &dup), 0);
        assert_false(dup);
        assert_int_equal(mp_registry_commit(n2), 0);

        /* one response, seen from either node */
        _cleanup_(json_object_putp) json_object *responses = NULL, *devices = NULL;
        assert_int_equal(mp_registry_responses_json(n1, 10, &responses), 0);
        assert_int_equal(array_len(responses, NULL), 1);

        /* either node sees where A is online; the session's end clears it */
        char **ids = NULL;
        size_t n_ids = 0;
        assert_int_equal(mp_registry_devices_json(n1, &devices), 0);
        assert_string_equal(field(json_object_array_get_idx(devices, 0), "node"), "node-2");
        assert_int_equal(mp_registry_online_ids(n1, &ids, &n_ids), 0);
        assert_int_equal(n_ids, 1);
        assert_string_equal(ids[0], ID_A);
        mp_strv_free(ids, n_ids);
        assert_int_equal(mp_registry_touch(n2, ID_A, 1010, NULL), 0);
        assert_int_equal(mp_registry_commit(n2), 0);
        json_object_put(TAKE_PTR(devices));
        assert_int_equal(mp_registry_devices_json(n1, &devices), 0);
        assert_null(field(json_object_array_get_idx(devices, 0), "node"));
        assert_int_equal(mp_registry_online_ids(n1, &ids, &n_ids), 0);
        assert_int_equal(n_ids, 0);
        mp_strv_free(ids, n_ids);
        mp_registry_free(n1);
        mp_registry_free(n2);
        rm_dir(dir);
}

static int take_cb(uint64_t push_id, const char *client_id, uint8_t **frame, size_t len, void *userdata) {
        struct mp_registry *reg = userdata;

        assert_int_equal(len, 5);
        assert_memory_equal(*frame, "FRAME", 5);
        return mp_registry_target_advance(reg, push_id, client_id, MP_TARGET_DELIVERED, 1001) == 1 ? 0
                                                                                                   : -EIO;
}

static int count_take_cb(uint64_t push_id, const char *client_id, uint8_t **frame, size_t len,
                         void *userdata) {
        (void)push_id, (void)client_id, (void)frame, (void)len;
        (*(int *)userdata)++;
        return 0;
}

/* A push written by node 1: the node holding a target takes it, once;
 * node 1 takes none of its own; PostgreSQL: a second taker skips the rows
 * the first holds. */
static void test_targets_taken_by_holder(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[256];
        struct mp_registry *n1 = NULL, *n2 = NULL, *n2b = NULL;
        char *ids_a[] = {(char *)ID_A}, *ids_b[] = {(char *)ID_B}, *ids_ab[] = {(char *)ID_A, (char *)ID_B};
        uint64_t push_id, task_id;
        int n = 0;

        (void)state;
        shared_path(dir, path, sizeof(path));
        open_node(path, "node-1", &n1);
        open_node(path, "node-2", &n2);
        signin(n1, MP_APPROVAL_AUTO, NULL, ID_B, "KB", NULL, NULL);
        assert_int_equal(mp_registry_commit(n1), 0);
        signin(n2, MP_APPROVAL_AUTO, NULL, ID_A, "KA", NULL, NULL);
        assert_int_equal(mp_registry_commit(n2), 0);
        assert_int_equal(mp_registry_push_reserve(n1, &push_id, &task_id), 0);
        assert_int_equal(mp_registry_push_store(n1, push_id, task_id, GUID1, 1, "", 1000, 5000,
                                                (const uint8_t *)"FRAME", 5),
                         0);
        assert_int_equal(mp_registry_target_add(n1, push_id, ID_A, 1000), 0);
        assert_int_equal(mp_registry_target_add(n1, push_id, ID_B, 1000), 0);
        assert_int_equal(mp_registry_commit(n1), 0);

        /* node 1 wrote it and delivers its own devices itself */
        assert_int_equal(mp_registry_take(n1, ids_b, 1, 1000, 100, count_take_cb, &n), 0);
        assert_int_equal(mp_registry_commit(n1), 0);
        /* node 2 holds A (not B, even if asked) */
        if (pg_url()) {
                /* a second connection of node 2 meanwhile skips the locked row */
                open_node(path, "node-2", &n2b);
                assert_int_equal(mp_registry_take(n2, ids_ab, 2, 1000, 100, count_take_cb, &n), 1);
                assert_int_equal(mp_registry_take(n2b, ids_a, 1, 1000, 100, count_take_cb, &n), 0);
                assert_int_equal(mp_registry_commit(n2b), 0);
                mp_registry_free(n2b);
                assert_int_equal(mp_registry_commit(n2), 0);
                n = 0;
        }
        assert_int_equal(mp_registry_take(n2, ids_ab, 2, 1000, 100, take_cb, n2), 1);
        assert_int_equal(mp_registry_commit(n2), 0);
        /* delivered: not taken again; expired pushes are never taken */
        assert_int_equal(mp_registry_take(n2, ids_a, 1, 1000, 100, count_take_cb, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(mp_registry_commit(n2), 0);
        mp_registry_free(n1);
        mp_registry_free(n2);
        rm_dir(dir);
}

/* The nodes alive share the site's push rate: PostgreSQL counts the nodes
 * seen lately; SQLite is one node. */
static void test_node_heartbeat(void **state) {
        char dir[] = "/tmp/test-mp-registry-XXXXXX", path[256];
        struct mp_registry *n1 = NULL, *n2 = NULL;
        unsigned live = 0;

        (void)state;
        shared_path(dir, path, sizeof(path));
        open_node(path, "node-1", &n1);
        open_node(path, "node-2", &n2);
        assert_int_equal(mp_registry_node_heartbeat(n1, 1000, 10, &live), 0);
        assert_int_equal(live, 1);
        assert_int_equal(mp_registry_commit(n1), 0);
        assert_int_equal(mp_registry_node_heartbeat(n2, 1005, 10, &live), 0);
        assert_int_equal(live, pg_url() ? 2 : 1);
        assert_int_equal(mp_registry_commit(n2), 0);
        /* node 1 silent for longer than 10 s: no longer counted */
        assert_int_equal(mp_registry_node_heartbeat(n2, 1011, 10, &live), 0);
        assert_int_equal(live, 1);
        assert_int_equal(mp_registry_commit(n2), 0);
        mp_registry_free(n1);
        mp_registry_free(n2);
        rm_dir(dir);
}

static void test_names(void **state) {
        enum mp_approval_mode m;

        (void)state;
        assert_int_equal(mp_approval_mode_from_string("token", &m), 0);
        assert_int_equal(m, MP_APPROVAL_TOKEN);
        assert_int_equal(mp_approval_mode_from_string("Auto", &m), -EINVAL);
        assert_int_equal(mp_approval_mode_from_string(NULL, &m), -EINVAL);
        assert_string_equal(mp_target_state_name(MP_TARGET_ACKNOWLEDGED), "acknowledged");
        assert_string_equal(mp_device_status_name(MP_DEVICE_PENDING), "pending");
}

int main(void) {
        const struct CMUnitTest pg_only[] = {
                cmocka_unit_test_setup_teardown(test_pg_connection_lost, setup, teardown),
        };
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_auto_binds_first_key, setup, teardown),
                cmocka_unit_test_setup_teardown(test_manual_mode, setup, teardown),
                cmocka_unit_test_setup_teardown(test_token_mode, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fingerprint_lookup_needs_approval, setup, teardown),
                cmocka_unit_test_setup_teardown(test_push_states_and_dedupe, setup, teardown),
                cmocka_unit_test(test_records_survive_reopen),
                cmocka_unit_test_setup_teardown(test_duplicate_identity, setup, teardown),
                cmocka_unit_test(test_newer_schema_refused),
                cmocka_unit_test(test_session_epoch_guards_writes),
                cmocka_unit_test(test_targets_taken_by_holder),
                cmocka_unit_test(test_node_heartbeat),
                cmocka_unit_test(test_old_conflicts_table_upgraded),
                cmocka_unit_test(test_names),
        };
        int failed = cmocka_run_group_tests_name(pg_url() ? "registry on PostgreSQL" : "registry on SQLite",
                                                 tests, NULL, NULL);

        if (pg_url())
                failed += cmocka_run_group_tests_name("PostgreSQL only", pg_only, NULL, NULL);
        return failed;
}
