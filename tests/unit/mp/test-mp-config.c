/* SPDX-License-Identifier: Apache-2.0 */
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

#include "mp/mp.h"

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static void test_defaults(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        assert_int_equal(c.keepalive, 180);
        assert_int_equal(c.push_expires, 3600);
        assert_int_equal(c.approval, MP_APPROVAL_AUTO);
        assert_null(c.listen);
        mp_config_done(&c);
}

static void test_set_and_ranges(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        assert_int_equal(mp_config_set(&c, "KeepAliveSeconds", "60"), 0);
        assert_int_equal(c.keepalive, 60);
        assert_int_equal(mp_config_set(&c, "keepaliveseconds", "61"), 0); /* case-insensitive */
        assert_int_equal(c.keepalive, 61);
        /* should-fail: out of range, not a number, unknown key, bad enum */
        assert_int_equal(mp_config_set(&c, "KeepAliveSeconds", "0"), -ERANGE);
        assert_int_equal(mp_config_set(&c, "KeepAliveSeconds", "1e3"), -EINVAL);
        assert_int_equal(c.keepalive, 61);
        assert_int_equal(mp_config_set(&c, "NoSuchKey", "1"), -ENOENT);
        assert_int_equal(mp_config_set(&c, "Approval", "sometimes"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "Approval", "manual"), 0);
        assert_int_equal(c.approval, MP_APPROVAL_MANUAL);
        assert_int_equal(mp_config_set(&c, "Verbose", "maybe"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "Verbose", "yes"), 0);
        assert_true(c.verbose);
        assert_int_equal(mp_config_set(&c, "Listen", "127.0.0.1:0"), 0);
        assert_string_equal(c.listen, "127.0.0.1:0");
        for (int i = 0; i < MP_MAX_TLS_NAMES; i++)
                assert_int_equal(mp_config_set(&c, "TLSName", "n"), 0);
        assert_int_equal(mp_config_set(&c, "TLSName", "one-too-many"), -E2BIG);
        /* the store and, with several nodes, this node's ID */
        assert_null(c.store);
        assert_null(c.node_id);
        assert_int_equal(mp_config_set(&c, "Store", "postgresql:///tether?host=/run/postgresql"), 0);
        assert_string_equal(c.store, "postgresql:///tether?host=/run/postgresql");
        assert_int_equal(mp_config_set(&c, "NodeID", "node-1"), 0);
        assert_string_equal(c.node_id, "node-1");
        mp_config_done(&c);
}

static void test_file_bad_values_keep_previous(void **state) {
        char dir[] = "/tmp/test-mp-config-XXXXXX", path[128];
        struct mp_config c;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/mp.conf", dir);
        write_file(path, "# comment\n[MP]\nPushRate=250\nPushBatch=abc\nApproval=token\nEnrolmentToken=t0k\n"
                         "TLSName=mp.example.org\nTLSName=10.0.0.1\nUnknown=1\n[Other]\nX=1\n");
        mp_config_init(&c);
        assert_int_equal(mp_config_load(&c, path), 0);
        assert_int_equal(c.push_rate, 250);
        assert_int_equal(c.push_batch, 200); /* the bad value kept the default */
        assert_int_equal(c.approval, MP_APPROVAL_TOKEN);
        assert_string_equal(c.token, "t0k");
        assert_int_equal(c.n_tls_names, 2);
        assert_string_equal(c.tls_names[1], "10.0.0.1");
        mp_config_done(&c);

        /* should-fail: a missing file */
        snprintf(path, sizeof(path), "%s/missing.conf", dir);
        mp_config_init(&c);
        assert_true(mp_config_load(&c, path) < 0);
        mp_config_done(&c);

        snprintf(path, sizeof(path), "%s/mp.conf", dir);
        unlink(path);
        rmdir(dir);
}

static void test_example_conf_parses(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        /* every key in the shipped example is commented out: defaults stay */
        assert_int_equal(mp_config_load(&c, TETHER_SOURCE_DIR "/conf/tether-mp.conf"), 0);
        assert_int_equal(c.push_rate, 1000);
        assert_int_equal(c.keepalive, 180);
        mp_config_done(&c);
}

/* PROTOCOL-v1 7.4: the connection limit and the RetryAfterSeconds it sends. */
static void test_max_connections(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        assert_int_equal(c.max_connections, 0);
        assert_int_equal(c.overload_retry_after, 30);
        assert_int_equal(mp_config_set(&c, "MaxConnections", "5000"), 0);
        assert_int_equal(mp_config_set(&c, "OverloadRetryAfterSeconds", "7"), 0);
        assert_int_equal(c.max_connections, 5000);
        assert_int_equal(c.overload_retry_after, 7);
        assert_int_equal(mp_config_set(&c, "OverloadRetryAfterSeconds", "0"), -ERANGE);
        assert_int_equal(mp_config_set(&c, "MaxConnections", "lots"), -EINVAL);
        assert_int_equal(c.overload_retry_after, 7);
        mp_config_done(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_set_and_ranges),
                cmocka_unit_test(test_file_bad_values_keep_previous),
                cmocka_unit_test(test_example_conf_parses),
                cmocka_unit_test(test_max_connections),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
