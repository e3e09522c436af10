/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/identity.h"
#include "transport/sign.h"

static char dir[256], idir[300], mid[300];

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state) {
        snprintf(dir, sizeof(dir), "/tmp/test-agent-identity-XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(idir, sizeof(idir), "%s/identity", dir);
        snprintf(mid, sizeof(mid), "%s/machine-id", dir);
        write_text(mid, "0123456789abcdef0123456789abcdef\n");
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static void test_first_start_then_load(void **state) {
        struct tether_identity *a = NULL, *b = NULL;
        enum identity_origin o;
        char reason[256], path[400];
        struct stat st;

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_FIRST);
        assert_true(tether_guid_valid(a->client_id));
        assert_true(tether_key_has_private(a->key));
        assert_int_equal(tether_key_get_kind(a->key), TETHER_KEY_EC_P256);
        assert_non_null(strstr(a->cert_pem, "BEGIN CERTIFICATE"));
        snprintf(path, sizeof(path), "%s/device.key", idir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        assert_string_equal(a->client_id, b->client_id);
        assert_true(tether_key_equal(a->key, b->key));
        assert_string_equal(a->cert_pem, b->cert_pem);
        identity_free(a);
        identity_free(b);
}

static void test_clone_detected(void **state) {
        struct tether_identity *a = NULL, *b = NULL;
        enum identity_origin o;
        char reason[256];

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        /* Whitespace does not count as a change. */
        write_text(mid, "0123456789abcdef0123456789abcdef");
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        identity_free(b);
        /* A cloned image with its machine-id regenerated. */
        write_text(mid, "fedcba9876543210fedcba9876543210\n");
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_CLONE);
        assert_non_null(strstr(reason, "machine-id changed"));
        assert_string_not_equal(a->client_id, b->client_id);
        assert_false(tether_key_equal(a->key, b->key));
        identity_free(b);
        /* And the new one sticks. */
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        identity_free(a);
        identity_free(b);
}

static void test_damaged_and_reset(void **state) {
        struct tether_identity *a = NULL, *b = NULL;
        enum identity_origin o;
        char reason[256], path[400];

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        /* A certificate that is not for the key. */
        snprintf(path, sizeof(path), "%s/device.crt", idir);
        write_text(path, "not a certificate\n");
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_DAMAGED);
        assert_string_not_equal(a->client_id, b->client_id);
        identity_free(b);
        /* A bad ClientID. */
        snprintf(path, sizeof(path), "%s/client-id", idir);
        write_text(path, "hello\n");
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_DAMAGED);
        identity_free(b);
        /* Reset on purpose. */
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        struct tether_identity *c = NULL;
        assert_int_equal(identity_reset(idir, mid, &c), 0);
        assert_string_not_equal(b->client_id, c->client_id);
        identity_free(b);
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        assert_string_equal(b->client_id, c->client_id);
        identity_free(a);
        identity_free(b);
        identity_free(c);
}

static char *slurp(const char *name) {
        char path[400], *buf = calloc(1, 65536);
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", idir, name);
        f = fopen(path, "re");
        assert_non_null(f);
        assert_true(fread(buf, 1, 65535, f) > 0);
        fclose(f);
        return buf;
}

static bool exists(const char *name) {
        char path[400];

        snprintf(path, sizeof(path), "%s/%s", idir, name);
        return access(path, F_OK) == 0;
}

static void rename_in(const char *from, const char *to) {
        char a[400], b[400];

        snprintf(a, sizeof(a), "%s/%s", idir, from);
        snprintf(b, sizeof(b), "%s/%s", idir, to);
        assert_int_equal(rename(a, b), 0);
}

/* identity rotate: same ClientID, new key and certificate, the old key kept
 * until the rollover is confirmed, across a restart; a second rotation
 * waits for the first. */
static void test_rotate(void **state) {
        struct tether_identity *a = NULL, *b = NULL, *c = NULL, *again = NULL;
        enum identity_origin o;
        char reason[256];

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        assert_null(a->previous_key);
        assert_int_equal(identity_rotate(idir, a, &b), 0);
        assert_string_equal(a->client_id, b->client_id);
        assert_false(tether_key_equal(a->key, b->key));
        assert_true(tether_key_equal(a->key, b->previous_key));
        assert_string_not_equal(a->cert_pem, b->cert_pem);
        assert_true(exists("previous.key"));
        assert_false(exists("device.next.key"));
        assert_false(exists("device.next.crt"));
        assert_int_equal(identity_rotate(idir, b, &again), -EBUSY);

        /* A restart before the MP confirmed: still pending. */
        assert_int_equal(identity_load_or_create(idir, mid, &c, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        assert_true(tether_key_equal(c->key, b->key));
        assert_true(tether_key_equal(c->previous_key, a->key));
        identity_free(c);

        assert_int_equal(identity_rollover_done(idir, b), 0);
        assert_null(b->previous_key);
        assert_false(exists("previous.key"));
        assert_int_equal(identity_load_or_create(idir, mid, &c, &o, reason), 0);
        assert_null(c->previous_key);
        assert_true(tether_key_equal(c->key, b->key));
        identity_free(a);
        identity_free(b);
        identity_free(c);
}

/* A crash between replacing device.key and device.crt: the next load
 * finishes the rotation (never a new identity); a crash before device.key
 * was replaced: the old identity, no rollover, no leftovers. */
static void test_rotate_crash(void **state) {
        struct tether_identity *a = NULL, *b = NULL, *c = NULL;
        enum identity_origin o;
        char reason[256], path[400];
        char *old_cert;
        FILE *f;

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        old_cert = slurp("device.crt");
        assert_int_equal(identity_rotate(idir, a, &b), 0);
        /* Back to the state between the two renames. */
        rename_in("device.crt", "device.next.crt");
        snprintf(path, sizeof(path), "%s/device.crt", idir);
        f = fopen(path, "we");
        fputs(old_cert, f);
        fclose(f);
        assert_int_equal(identity_load_or_create(idir, mid, &c, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        assert_string_equal(c->client_id, a->client_id);
        assert_true(tether_key_equal(c->key, b->key));
        assert_true(tether_key_equal(c->previous_key, a->key));
        assert_false(exists("device.next.crt"));
        identity_free(c);

        /* Before the commit: previous.key is the current key, next files lie around. */
        assert_int_equal(identity_rollover_done(idir, b), 0);
        snprintf(path, sizeof(path), "%s/previous.key", idir);
        assert_int_equal(tether_key_save_private(b->key, path), 0);
        snprintf(path, sizeof(path), "%s/device.next.key", idir);
        assert_int_equal(tether_key_save_private(a->key, path), 0);
        assert_int_equal(identity_load_or_create(idir, mid, &c, &o, reason), 0);
        assert_int_equal(o, IDENTITY_LOADED);
        assert_true(tether_key_equal(c->key, b->key));
        assert_null(c->previous_key);
        assert_false(exists("previous.key"));
        assert_false(exists("device.next.key"));
        identity_free(c);
        free(old_cert);
        identity_free(a);
        identity_free(b);
}

static void test_missing_machine_id(void **state) {
        struct tether_identity *a = NULL, *b = NULL;
        enum identity_origin o;
        char reason[256];

        assert_int_equal(unlink(mid), 0);
        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_FIRST);
        write_text(mid, "0123456789abcdef0123456789abcdef\n");
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_CLONE);
        identity_free(a);
        identity_free(b);
}

/* A stored RSA-1024 device key is replaced, and the log's reason says what
 * was wrong with it (not "Key was rejected by service"). */
static void test_rsa1024_key_named(void **state) {
        struct tether_identity *a = NULL, *b = NULL;
        enum identity_origin o;
        char reason[256] = "", cmd[600];

        assert_int_equal(identity_load_or_create(idir, mid, &a, &o, reason), 0);
        identity_free(a);
        snprintf(cmd, sizeof(cmd),
                 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out '%s/device.key' "
                 "2>/dev/null",
                 idir);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(identity_load_or_create(idir, mid, &b, &o, reason), 0);
        assert_int_equal(o, IDENTITY_CREATED_DAMAGED);
        assert_non_null(strstr(reason, "RSA of 1024 bits"));
        assert_non_null(strstr(reason, "2048"));
        assert_int_equal(tether_key_get_kind(b->key), TETHER_KEY_EC_P256);
        identity_free(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_first_start_then_load, setup, teardown),
                cmocka_unit_test_setup_teardown(test_clone_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_damaged_and_reset, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_machine_id, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rsa1024_key_named, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rotate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rotate_crash, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
