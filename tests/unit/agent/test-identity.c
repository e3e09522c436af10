/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
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
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
