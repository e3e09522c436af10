/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The console's records on the store (SQLite, and PostgreSQL when
 * TETHER_TEST_PG is set by tests/integration/mp-pg/pg-run.sh): the audit
 * chain and its verification, accounts and passwords, API tokens and their
 * expiry, login rate limiting, sessions, roles and collections.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "mp/audit.h"
#include "mp/auth.h"
#include "mp/rbac.h"
#include "mp/registry.h"

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

struct fixture {
        char dir[64], path[128];
        struct mp_registry *reg;
        struct mp_store *st;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-mp-console-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
        if (pg_url()) {
                pg_sql("SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA "
                       "public");
                snprintf(f->path, sizeof(f->path), "%s", pg_url());
        }
        assert_int_equal(mp_registry_open(f->path, &f->reg), 0);
        f->st = mp_registry_store(f->reg);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        mp_registry_free(f->reg);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

/* Runs SQL on the store's database behind the store's back (an attacker
 * with write access to the database). */
static void tamper(struct fixture *f, const char *sql) {
        sqlite3 *db = NULL;

        assert_int_equal(mp_registry_commit(f->reg), 0);
        if (pg_url()) {
                pg_sql(sql);
                return;
        }
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

static void append(struct fixture *f, const char *actor, const char *action, const char *outcome) {
        struct mp_audit_entry e = {.actor = actor,
                                   .address = "127.0.0.1",
                                   .action = action,
                                   .target = "T",
                                   .outcome = outcome,
                                   .detail = "d",
                                   .now = 1000};
        int64_t seq = 0;

        assert_int_equal(mp_audit_append(f->st, &e, &seq), 0);
        assert_true(seq > 0);
}

static void test_audit_chain(void **state) {
        struct fixture *f = *state;
        _cleanup_(freep) char *reason = NULL, *reason2 = NULL;
        int64_t bad = 0;
        size_t n = 0;

        /* empty: intact */
        assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason), 0);
        assert_int_equal(n, 0);
        append(f, "alice", "login", "ok");
        append(f, "bob", "device.action", "denied");
        append(f, "alice", "device.action", "ok");
        assert_int_equal(mp_registry_commit(f->reg), 0);
        assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason), 0);
        assert_int_equal(n, 3);

        /* a seq taken (by another node) is -EEXIST, and the open transaction
         * goes on: the next append links after it */
        {
                char h[65];
                int64_t last = 0;
                struct mp_audit_rec dup = {
                        .seq = 3, .time = 1, .action = "x", .outcome = "ok", .prev_hash = h, .hash = h};

                assert_int_equal(f->st->ops->audit_last(f->st, &last, h), 0);
                assert_int_equal(last, 3);
                assert_int_equal(f->st->ops->audit_append(f->st, &dup), -EEXIST);
                append(f, "carol", "login", "ok");
                assert_int_equal(mp_registry_commit(f->reg), 0);
                assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason), 0);
                assert_int_equal(n, 4);
        }

        /* editing a field of record 2 (the refusal turned into success) */
        tamper(f, "UPDATE audit SET outcome = 'ok' WHERE seq = 2");
        assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason), -EBADMSG);
        assert_int_equal(bad, 2);
        assert_non_null(strstr(reason, "edited"));
        tamper(f, "UPDATE audit SET outcome = 'denied' WHERE seq = 2");
        assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason2), 0);

        /* removing record 2: record 3 no longer follows */
        tamper(f, "DELETE FROM audit WHERE seq = 2");
        free(reason);
        reason = NULL;
        assert_int_equal(mp_audit_verify(f->st, &n, &bad, &reason), -EBADMSG);
        assert_int_equal(bad, 3);
        assert_non_null(strstr(reason, "missing"));
}

static void test_users_and_passwords(void **state) {
        struct fixture *f = *state;
        _cleanup_(freep) char *pw = NULL, *body = NULL;
        struct mp_principal *p = NULL;

        assert_int_equal(mp_auth_user_add(f->st, "alice", "operator", MP_ALL_DEVICES, NULL, 1, &pw), 0);
        assert_non_null(pw);
        assert_true(strlen(pw) >= 20);
        assert_int_equal(mp_auth_user_add(f->st, "alice", "operator", MP_ALL_DEVICES, "x", 1, NULL),
                         -EEXIST);
        assert_int_equal(mp_auth_user_add(f->st, "b@d", "operator", MP_ALL_DEVICES, "x", 1, NULL), -EINVAL);
        assert_int_equal(mp_auth_user_add(f->st, "carol", "no-such-role", MP_ALL_DEVICES, "x", 1, NULL),
                         -ENOENT);
        assert_int_equal(mp_auth_user_add(f->st, "carol", "operator", "no-such-coll", "x", 1, NULL),
                         -ENOENT);
        /* the stored hash is argon2id, never the password */
        assert_int_equal(f->st->ops->doc_get(f->st, "user", "alice", &body), 0);
        assert_non_null(strstr(body, "$argon2id$"));
        assert_null(strstr(body, pw));
        assert_int_equal(mp_principal_load(f->st, "alice", &p), 0);
        assert_true(mp_principal_has(p, MP_PERM_ACTIONS_RUN, NULL));
        assert_false(mp_principal_has(p, MP_PERM_AUDIT_READ, NULL));
        mp_principal_free(p);
}

static void test_login_sessions_rate_limit(void **state) {
        struct fixture *f = *state;
        char sid[MP_AUTH_SECRET_LEN], csrf[MP_AUTH_SECRET_LEN];
        const char *user = NULL, *want_csrf = NULL;
        struct mp_auth *a = NULL;
        unsigned wait = 0;

        assert_int_equal(mp_auth_new(&a), 0);
        assert_int_equal(
                mp_auth_user_add(f->st, "dave", "approver", MP_ALL_DEVICES, "a long password 1", 1, NULL),
                0);
        assert_int_equal(
                mp_auth_login(a, f->st, "dave", "a long password 1", "10.0.0.1", 100, sid, csrf, &wait), 0);
        assert_int_equal(mp_auth_session(a, sid, 101, &user, &want_csrf), 0);
        assert_string_equal(user, "dave");
        assert_true(mp_auth_csrf_ok(want_csrf, csrf));
        assert_false(mp_auth_csrf_ok(want_csrf, "0000"));
        assert_false(mp_auth_csrf_ok(want_csrf, NULL));
        /* a forged cookie, and the session after its idle time */
        assert_int_equal(mp_auth_session(a, "forged", 102, &user, &want_csrf), -ENOENT);
        assert_int_equal(mp_auth_session(a, sid, 101 + MP_AUTH_IDLE_SEC, &user, &want_csrf), -ENOENT);

        /* five failures lock the account out, even for the right password */
        for (int i = 0; i < MP_AUTH_MAX_FAILURES; i++)
                assert_int_equal(mp_auth_login(a, f->st, "dave", "wrong", "10.0.0.2", 200, sid, csrf, &wait),
                                 -EACCES);
        assert_int_equal(
                mp_auth_login(a, f->st, "dave", "a long password 1", "10.0.0.3", 201, sid, csrf, &wait),
                -EBUSY);
        assert_true(wait > 0 && wait <= MP_AUTH_WINDOW_SEC);
        /* and the address that failed is locked out for other accounts too */
        assert_int_equal(mp_auth_login(a, f->st, "nobody", "x", "10.0.0.2", 202, sid, csrf, &wait), -EBUSY);
        /* the window passes */
        assert_int_equal(mp_auth_login(a, f->st, "dave", "a long password 1", "10.0.0.3",
                                       200 + MP_AUTH_WINDOW_SEC, sid, csrf, &wait),
                         0);
        mp_auth_free(a);
}

static void test_tokens_expire(void **state) {
        struct fixture *f = *state;
        _cleanup_(freep) char *token = NULL, *user = NULL, *user2 = NULL;
        char id[MP_AUTH_SECRET_LEN], forged[80];

        assert_int_equal(mp_auth_token_new(f->st, "erin", "ci", 60, 1000, &token, id), 0);
        assert_true(strncmp(token, "tmpt_", 5) == 0);
        assert_int_equal(mp_auth_token_check(f->st, token, 1059, &user), 0);
        assert_string_equal(user, "erin");
        assert_int_equal(mp_auth_token_check(f->st, token, 1060, &user2), -EKEYEXPIRED);
        snprintf(forged, sizeof(forged), "%s", token);
        forged[10] = forged[10] == 'A' ? 'B' : 'A';
        assert_int_equal(mp_auth_token_check(f->st, forged, 1001, &user2), -ENOENT);
        assert_int_equal(mp_auth_token_check(f->st, "Bearer-garbage", 1001, &user2), -ENOENT);
}

static void test_roles_collections(void **state) {
        struct fixture *f = *state;
        struct mp_rbac_device web = {"11111111-1111-1111-1111-111111111111", "web-01", "approved", "0.1.0"};
        struct mp_rbac_device db = {"22222222-2222-2222-2222-222222222222", "db-01", "approved", "0.1.0"};
        json_object *doc;
        const char *err = NULL;
        struct mp_principal *p = NULL;
        char body[256];

        doc = json_tokener_parse("{\"permissions\":[\"devices.read\",\"nope\"]}");
        assert_int_equal(mp_role_validate(doc, &err), -EINVAL);
        json_object_put(doc);
        doc = json_tokener_parse("{\"rule\":{\"hostname\":\"web-*\"}}");
        assert_int_equal(mp_collection_validate(doc, &err), 0);
        json_object_put(doc);
        doc = json_tokener_parse("{\"rule\":{\"owner\":\"x\"}}");
        assert_int_equal(mp_collection_validate(doc, &err), -EINVAL);
        json_object_put(doc);

        assert_int_equal(
                f->st->ops->doc_put(f->st, "collection", "Web", "{\"rule\":{\"hostname\":\"web-*\"}}", 1),
                0);
        assert_int_equal(
                f->st->ops->doc_put(f->st, "role", "viewer", "{\"permissions\":[\"devices.read\"]}", 1), 0);
        snprintf(body, sizeof(body),
                 "{\"password_hash\":\"x\",\"grants\":[{\"role\":\"operator\",\"collection\":\"Web\"},"
                 "{\"role\":\"viewer\",\"collection\":\"%s\"}]}",
                 MP_ALL_DEVICES);
        assert_int_equal(f->st->ops->doc_put(f->st, "user", "frank", body, 1), 0);
        assert_int_equal(mp_principal_load(f->st, "frank", &p), 0);
        assert_true(mp_principal_can(p, MP_PERM_ACTIONS_RUN, &web, NULL));
        assert_false(mp_principal_can(p, MP_PERM_ACTIONS_RUN, &db, NULL));
        assert_true(mp_principal_can(p, MP_PERM_DEVICES_READ, &db, NULL));
        assert_false(mp_principal_has(p, MP_PERM_USERS_MANAGE, NULL));
        mp_principal_free(p);
        /* the collection removed: its grant grants nothing */
        assert_int_equal(f->st->ops->doc_delete(f->st, "collection", "Web"), 0);
        assert_int_equal(mp_principal_load(f->st, "frank", &p), 0);
        assert_false(mp_principal_can(p, MP_PERM_ACTIONS_RUN, &web, NULL));
        mp_principal_free(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_audit_chain, setup, teardown),
                cmocka_unit_test_setup_teardown(test_users_and_passwords, setup, teardown),
                cmocka_unit_test_setup_teardown(test_login_sessions_rate_limit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tokens_expire, setup, teardown),
                cmocka_unit_test_setup_teardown(test_roles_collections, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
