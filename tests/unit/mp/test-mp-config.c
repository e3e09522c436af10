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

/* HTTPSListen takes a list: the HTTPS endpoints on 10124 and on 443 for
 * agents behind a stock proxy. */
static void test_https_listen_list(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "0.0.0.0:10124"), 0);
        assert_string_equal(c.https_listen, "0.0.0.0:10124");
        assert_int_equal(mp_config_set(&c, "HTTPSListen", " 0.0.0.0:10124,  [::]:443 "), 0);
        assert_string_equal(c.https_listen, "0.0.0.0:10124 [::]:443");
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "off"), 0);
        assert_string_equal(c.https_listen, "off");
        assert_int_equal(mp_config_set(&c, "HTTPSListen", ""), 0);
        assert_string_equal(c.https_listen, "");
        /* should-fail: no port, a bad port, "off" among addresses, too many */
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "0.0.0.0"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "0.0.0.0:443 0.0.0.0:http"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "0.0.0.0:65536"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "HTTPSListen", "off 0.0.0.0:443"), -EINVAL);
        assert_int_equal(mp_config_set(&c, "HTTPSListen", ":1 :2 :3 :4 :5"), -EINVAL);
        assert_string_equal(c.https_listen, "");
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

/* The limits of issue #10: sane defaults, settable, ranges enforced. */
static void test_limits(void **state) {
        struct mp_config c;

        (void)state;
        mp_config_init(&c);
        assert_int_equal(c.max_signin, 65536);
        assert_int_equal(c.request_timeout, 30);
        assert_int_equal(c.max_conns, 20000);
        assert_int_equal(c.max_unauth, 4096);
        assert_int_equal(c.max_unauth_per_addr, 1024);
        assert_int_equal(c.max_body_total, 128u * 1024u * 1024u);
        assert_int_equal(c.overload_retry_after, 60);
        assert_int_equal(mp_config_set(&c, "MaxSignInBytes", "8192"), 0);
        assert_int_equal(c.max_signin, 8192);
        assert_int_equal(mp_config_set(&c, "RequestTimeoutSeconds", "5"), 0);
        assert_int_equal(mp_config_set(&c, "MaxConnections", "100"), 0);
        assert_int_equal(mp_config_set(&c, "MaxUnauthenticated", "10"), 0);
        assert_int_equal(mp_config_set(&c, "MaxUnauthenticatedPerAddress", "2"), 0);
        assert_int_equal(mp_config_set(&c, "MaxBufferedBodyBytes", "2097152"), 0);
        assert_int_equal(mp_config_set(&c, "OverloadRetryAfterSeconds", "90"), 0);
        assert_int_equal(c.request_timeout, 5);
        assert_int_equal(c.max_conns, 100);
        assert_int_equal(c.max_unauth, 10);
        assert_int_equal(c.max_unauth_per_addr, 2);
        assert_int_equal(c.max_body_total, 2097152);
        assert_int_equal(c.overload_retry_after, 90);
        /* should-fail: limits that would switch the protection off or
         * starve the server */
        assert_int_equal(mp_config_set(&c, "MaxSignInBytes", "100"), -ERANGE);
        assert_int_equal(mp_config_set(&c, "RequestTimeoutSeconds", "0"), -ERANGE);
        assert_int_equal(mp_config_set(&c, "MaxConnections", "0"), -ERANGE);
        assert_int_equal(mp_config_set(&c, "MaxBufferedBodyBytes", "1000"), -ERANGE);
        assert_int_equal(c.max_signin, 8192);
        mp_config_done(&c);
}

/* Secrets from files: EnrolmentTokenFile= and the systemd credential. */
static void test_token_file_and_credential(void **state) {
        char dir[] = "/tmp/test-mp-config-cred.XXXXXX";
        char path[256], cred[256];
        struct mp_config c;
        FILE *f;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/token", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs("from-file\nsecond line ignored\n", f);
        fclose(f);

        mp_config_init(&c);
        assert_int_equal(mp_config_set(&c, "EnrolmentToken", "inline"), 0);
        assert_int_equal(mp_config_set(&c, "EnrolmentTokenFile", path), 0);
        assert_string_equal(c.token, "from-file");
        /* should-fail: a missing file is an error, and the token is kept */
        assert_true(mp_config_set(&c, "EnrolmentTokenFile", "/nonexistent/token") < 0);
        assert_string_equal(c.token, "from-file");

        /* No $CREDENTIALS_DIRECTORY: nothing changes. */
        unsetenv("CREDENTIALS_DIRECTORY");
        assert_int_equal(mp_config_load_credentials(&c), 0);
        assert_string_equal(c.token, "from-file");
        /* A directory without the credential: nothing changes. */
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
        assert_int_equal(mp_config_load_credentials(&c), 0);
        assert_string_equal(c.token, "from-file");
        /* The unit's fallback, an empty line: still no change. */
        snprintf(cred, sizeof(cred), "%s/enrolment-token", dir);
        f = fopen(cred, "w");
        assert_non_null(f);
        fputs("\n", f);
        fclose(f);
        assert_int_equal(mp_config_load_credentials(&c), 0);
        assert_string_equal(c.token, "from-file");
        /* The credential wins over the file's keys. */
        f = fopen(cred, "w");
        assert_non_null(f);
        fputs("from-credential\n", f);
        fclose(f);
        assert_int_equal(mp_config_load_credentials(&c), 0);
        assert_string_equal(c.token, "from-credential");
        mp_config_done(&c);
        unsetenv("CREDENTIALS_DIRECTORY");

        unlink(cred);
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_set_and_ranges),
                cmocka_unit_test(test_https_listen_list),
                cmocka_unit_test(test_file_bad_values_keep_previous),
                cmocka_unit_test(test_token_file_and_credential),
                cmocka_unit_test(test_example_conf_parses),
                cmocka_unit_test(test_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
