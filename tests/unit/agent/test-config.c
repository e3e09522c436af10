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
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "common/fsutil.h"

static char dir[256];

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state) {
        snprintf(dir, sizeof(dir), "/tmp/test-agent-config-XXXXXX");
        assert_non_null(mkdtemp(dir));
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static bool has_error(const struct tether_config *c, const char *needle) {
        for (size_t i = 0; i < c->n_errors; i++)
                if (strstr(c->errors[i], needle))
                        return true;
        return false;
}

static void test_defaults_and_values(void **state) {
        char path[300];
        struct tether_config *c = NULL;

        snprintf(path, sizeof(path), "%s/tether.conf", dir);
        write_text(path, "[mp]\nhost = mp.example\ntcp_port = 2000\ntransport = https\n"
                         "server_fingerprint = AB:cd"
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab\n"
                         "[trust]\nsite_key = /etc/tether/site.pub\n"
                         "[agent]\nstate_dir = /tmp/x\nkeepalive_seconds = 60\n"
                         "[cycles]\nmachine_policy_timeout = 15min\napp_evaluation_enabled = no\n"
                         "[log]\nlevel = debug\n");
        assert_int_equal(tether_config_load(path, &c), 0);
        for (size_t i = 0; i < c->n_errors; i++)
                fprintf(stderr, "unexpected: %s\n", c->errors[i]);
        assert_int_equal(c->n_errors, 0);
        assert_string_equal(c->mp_host, "mp.example");
        assert_int_equal(c->tcp_port, 2000);
        assert_int_equal(c->https_port, 10124);
        assert_int_equal(c->transport, TETHER_CHANNEL_HTTPS);
        assert_string_equal(c->server_fingerprint,
                            "abcd0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab");
        assert_string_equal(c->state_dir, "/tmp/x");
        assert_string_equal(c->runtime_dir, "/run/tether");
        assert_int_equal(c->keepalive_seconds, 60);
        assert_int_equal(c->max_frame, 1048576);
        assert_true(c->timeout_usec[1] == 900ULL * 1000000ULL);
        assert_false(c->enabled[3]);
        assert_true(c->enabled[1]);
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_false(c->trust_on_first_use);
        tether_config_free(c);
}

static void test_errors_name_file_line_and_key(void **state) {
        char path[300], ddir[400], drop[500];
        struct tether_config *c = NULL;

        snprintf(path, sizeof(path), "%s/tether.conf", dir);
        write_text(path,
                   "# comment\n[mp]\nhost = mp\ntcp_port = 70000\n\n[trust]\ntrust_on_first_use = maybe\n"
                   "[agent]\nstate_dir = relative/path\nnot_a_key = 1\n");
        snprintf(ddir, sizeof(ddir), "%s/tether.conf.d", dir);
        assert_int_equal(mkdir(ddir, 0755), 0);
        snprintf(drop, sizeof(drop), "%s/50-site.conf", ddir);
        write_text(drop, "[cycles]\nmachine_policy_interval = soon\nthis line is not ini\n");
        assert_int_equal(tether_config_load(path, &c), 0);
        for (size_t i = 0; i < c->n_errors; i++)
                fprintf(stderr, "error: %s\n", c->errors[i]);

        char want[700];
        snprintf(want, sizeof(want), "%s:4: [mp] tcp_port: number out of range: '70000'", path);
        assert_true(has_error(c, want));
        snprintf(want, sizeof(want), "%s:7: [trust] trust_on_first_use: not a boolean", path);
        assert_true(has_error(c, want));
        snprintf(want, sizeof(want), "%s:9: [agent] state_dir: not an absolute path", path);
        assert_true(has_error(c, want));
        snprintf(want, sizeof(want), "%s:10: [agent] not_a_key: unknown key", path);
        assert_true(has_error(c, want));
        snprintf(want, sizeof(want), "%s:2: [cycles] machine_policy_interval: not a duration", drop);
        assert_true(has_error(c, want));
        snprintf(want, sizeof(want), "%s:3: syntax error", drop);
        assert_true(has_error(c, want));
        /* Defaults survive bad values. */
        assert_int_equal(c->tcp_port, 10123);
        assert_string_equal(c->state_dir, "/var/lib/tether");
        /* No trust mode: a cross-key error against the main file, without a line. */
        snprintf(want, sizeof(want), "%s: [trust]: no site key", path);
        assert_true(has_error(c, want));
        assert_int_equal(c->n_errors, 7);
        tether_config_free(c);
}

static void test_dropins_sorted_and_override(void **state) {
        char path[300], ddir[400], p1[500], p2[500], p3[500];
        struct tether_config *c = NULL;

        snprintf(path, sizeof(path), "%s/tether.conf", dir);
        write_text(path, "[mp]\nhost = first\n[trust]\ntrust_on_first_use = yes\n");
        snprintf(ddir, sizeof(ddir), "%s/tether.conf.d", dir);
        assert_int_equal(mkdir(ddir, 0755), 0);
        snprintf(p1, sizeof(p1), "%s/20-b.conf", ddir);
        snprintf(p2, sizeof(p2), "%s/10-a.conf", ddir);
        snprintf(p3, sizeof(p3), "%s/99-ignored.txt", ddir);
        write_text(p1, "[mp]\nhost = from-b\n");
        write_text(p2, "[mp]\nhost = from-a\ntcp_port=11\n");
        write_text(p3, "[mp]\nhost = not-read\n");
        assert_int_equal(tether_config_load(path, &c), 0);
        assert_int_equal(c->n_errors, 0);
        assert_string_equal(c->mp_host, "from-b");
        assert_int_equal(c->tcp_port, 11);
        assert_int_equal(c->n_files, 3);
        tether_config_free(c);
}

static void test_missing_main_file(void **state) {
        char path[300];
        struct tether_config *c = NULL;

        snprintf(path, sizeof(path), "%s/nope.conf", dir);
        assert_int_equal(tether_config_load(path, &c), 0);
        assert_true(c->n_errors >= 1);
        assert_non_null(strstr(c->errors[0], "cannot read"));
        tether_config_free(c);
}

/* PROTOCOL-v1 7.4: several MP addresses and one pinned key per node. */
static void test_mp_lists(void **state) {
        struct tether_config *c = NULL;
        const char *a = "AB:cd000000000000000000000000000000000000000000000000000000000001";
        char two[200];

        assert_int_equal(tether_config_new_default(&c), 0);
        assert_int_equal(tether_config_set(c, "x", 1, "mp", "host", "mp1, mp2:10200 ,[::1]:10123"), 0);
        assert_string_equal(c->mp_host, "mp1, mp2:10200 ,[::1]:10123");
        assert_int_equal(tether_config_set(c, "x", 2, "mp", "host", "mp1,,mp2"), -EINVAL);
        assert_string_equal(c->mp_host, "mp1, mp2:10200 ,[::1]:10123"); /* kept */
        assert_int_equal(tether_config_set(c, "x", 3, "mp", "host", "mp1,mp1"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 4, "mp", "host", "mp1:99999"), -EINVAL);
        assert_string_equal(c->errors[0], "x:2: [mp] host: an empty or over-long host: 'mp1,,mp2'");
        assert_string_equal(c->errors[1], "x:3: [mp] host: an address is listed twice: 'mp1,mp1'");

        snprintf(two, sizeof(two), "%s , %s", a,
                 "1111111111111111111111111111111111111111111111111111111111111111");
        assert_int_equal(tether_config_set(c, "x", 5, "mp", "server_fingerprint", two), 0);
        assert_string_equal(c->server_fingerprint,
                            "abcd000000000000000000000000000000000000000000000000000000000001,"
                            "1111111111111111111111111111111111111111111111111111111111111111");
        snprintf(two, sizeof(two), "%s,abc", a);
        assert_int_equal(tether_config_set(c, "x", 6, "mp", "server_fingerprint", two), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 7, "mp", "server_fingerprint", "abc,"), -EINVAL);
        /* the site key stays one fingerprint */
        snprintf(two, sizeof(two), "%s,%s", a, a);
        assert_int_equal(tether_config_set(c, "x", 8, "trust", "site_key_fingerprint", two), -EINVAL);
        assert_int_equal(c->n_errors, 6);
        tether_config_free(c);
}

static void test_set_and_cycles(void **state) {
        struct tether_config *c = NULL;

        assert_int_equal(tether_config_new_default(&c), 0);
        assert_int_equal(tether_config_set(c, "x", 1, "mp", "transport", "tcp"), 0);
        assert_int_equal(c->transport, TETHER_CHANNEL_TCP);
        assert_int_equal(tether_config_set(c, "x", 2, "mp", "transport", "udp"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 3, "agent", "max_frame", "12"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 4, "mp", "server_fingerprint", "abc"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 5, "cycles", "kill_grace", "2h"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 6, "cycles", "kill_grace", "30s"), 0);
        assert_true(c->kill_grace_usec == 30000000ULL);
        assert_int_equal(c->n_errors, 4);
        assert_string_equal(c->errors[1], "x:3: [agent] max_frame: number out of range: '12'");

        assert_int_equal(tether_task_type_from_string("machine-policy"), 1);
        assert_int_equal(tether_task_type_from_string("{00000000-0000-0000-0000-000000000026}"), 2);
        assert_int_equal(tether_task_type_from_string("00000000-0000-0000-0000-000000000121"), 3);
        assert_int_equal(tether_task_type_from_string("3"), 3);
        assert_int_equal(tether_task_type_from_string("{00000000-0000-0000-0000-000000000022}"), 0);
        assert_int_equal(tether_task_type_from_string("reboot"), 0);
        tether_config_free(c);
}

/* The HTTPS port list and the return-to-TCP interval. */
static void test_https_alt_ports_and_tcp_retry(void **state) {
        struct tether_config *c = NULL;

        assert_int_equal(tether_config_new_default(&c), 0);
        assert_int_equal(c->https_alt_ports.n, 1);
        assert_int_equal(c->https_alt_ports.port[0], 443);
        assert_true(c->tcp_retry_usec == 60ULL * 1000000ULL);
        assert_int_equal(tether_config_set(c, "x", 1, "mp", "https_alt_ports", "443, 8443 9443"), 0);
        assert_int_equal(c->https_alt_ports.n, 3);
        assert_int_equal(c->https_alt_ports.port[1], 8443);
        assert_int_equal(c->https_alt_ports.port[2], 9443);
        assert_int_equal(tether_config_set(c, "x", 2, "mp", "https_alt_ports", ""), 0);
        assert_int_equal(c->https_alt_ports.n, 0);
        assert_int_equal(tether_config_set(c, "x", 3, "mp", "tcp_retry_interval", "2min"), 0);
        assert_true(c->tcp_retry_usec == 120ULL * 1000000ULL);
        /* should-fail: bad port, too many, out-of-range interval; the value stays */
        assert_int_equal(tether_config_set(c, "x", 4, "mp", "https_alt_ports", "443 https"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 5, "mp", "https_alt_ports", "0"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 6, "mp", "https_alt_ports", "1 2 3 4 5"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 7, "mp", "tcp_retry_interval", "0"), -EINVAL);
        assert_int_equal(tether_config_set(c, "x", 8, "mp", "tcp_retry_interval", "2d"), -EINVAL);
        assert_int_equal(c->https_alt_ports.n, 0);
        assert_true(c->tcp_retry_usec == 120ULL * 1000000ULL);
        assert_int_equal(c->n_errors, 5);
        assert_string_equal(c->errors[0],
                            "x:4: [mp] https_alt_ports: not a list of port numbers (1..65535): '443 https'");
        tether_config_free(c);
}

static void test_long_line(void **state) {
        char path[300], text[600];
        struct tether_config *c = NULL;

        snprintf(path, sizeof(path), "%s/tether.conf", dir);
        char xs[301];
        memset(xs, 'x', 300);
        xs[300] = 0;
        snprintf(text, sizeof(text),
                 "[mp]\nhost = mp\n[agent]\nenrolment_token = %s\n[trust]\ntrust_on_first_use = yes\n", xs);
        write_text(path, text);
        assert_int_equal(tether_config_load(path, &c), 0);
        assert_true(has_error(c, ":4: line too long"));
        assert_null(c->enrolment_token);
        assert_true(c->trust_on_first_use);
        tether_config_free(c);
}

/* conf/tether.conf documents every key with its default: with every
 * "#key = value" line uncommented it must load without a single error
 * (besides the required host and trust mode, which have no default), hold
 * exactly the keys of the table, and give the built-in defaults. */
static void test_documented_defaults(void **state) {
        char src[512], path[300], line[1024], section[64] = "";
        FILE *in, *out;
        struct tether_config *c = NULL, *d = NULL;
        unsigned documented = 0, known = 0;
        const char *sec, *key;

        snprintf(src, sizeof(src), "%s/conf/tether.conf", TETHER_SOURCE_DIR);
        snprintf(path, sizeof(path), "%s/all.conf", dir);
        in = fopen(src, "re");
        assert_non_null(in);
        out = fopen(path, "we");
        assert_non_null(out);
        while (fgets(line, sizeof(line), in)) {
                size_t n = strspn(line + 1, "abcdefghijklmnopqrstuvwxyz_");
                if (line[0] == '[')
                        snprintf(section, sizeof(section), "%.*s", (int)strcspn(line + 1, "]"), line + 1);
                if (line[0] == '#' && n > 0 && strncmp(line + 1 + n, " =", 2) == 0) {
                        bool found = false;
                        for (size_t i = 0; tether_config_key_at(i, &sec, &key); i++)
                                if (strcmp(sec, section) == 0 && strlen(key) == n &&
                                    strncmp(key, line + 1, n) == 0)
                                        found = true;
                        if (!found)
                                fprintf(stderr, "documented but unknown: [%s] %.*s\n", section, (int)n,
                                        line + 1);
                        assert_true(found);
                        documented++;
                        fputs(line + 1, out);
                } else
                        fputs(line, out);
        }
        fclose(in);
        fclose(out);
        for (size_t i = 0; tether_config_key_at(i, &sec, &key); i++)
                known++;
        assert_int_equal(documented, known);

        assert_int_equal(tether_config_load(path, &c), 0);
        for (size_t i = 0; i < c->n_errors; i++)
                fprintf(stderr, "%s\n", c->errors[i]);
        assert_int_equal(c->n_errors, 2); /* host, trust */
        assert_non_null(strstr(c->errors[0], "[mp] host: required"));
        assert_non_null(strstr(c->errors[1], "[trust]: no site key"));

        assert_int_equal(tether_config_new_default(&d), 0);
        assert_int_equal(c->tcp_port, d->tcp_port);
        assert_int_equal(c->https_port, d->https_port);
        assert_int_equal(c->max_frame, d->max_frame);
        assert_string_equal(c->state_dir, d->state_dir);
        assert_string_equal(c->runtime_dir, d->runtime_dir);
        assert_string_equal(c->user, d->user);
        for (int i = 1; i <= 3; i++) {
                assert_true(c->timeout_usec[i] == d->timeout_usec[i]);
                assert_true(c->interval_usec[i] == d->interval_usec[i]);
                assert_int_equal(c->enabled[i], d->enabled[i]);
        }
        assert_true(c->kill_grace_usec == d->kill_grace_usec);
        assert_true(c->output_cap == d->output_cap);
        assert_int_equal(c->log_level, d->log_level);
        assert_int_equal(c->https_hold_seconds, d->https_hold_seconds);
        assert_memory_equal(&c->https_alt_ports, &d->https_alt_ports, sizeof(d->https_alt_ports));
        assert_true(c->tcp_retry_usec == d->tcp_retry_usec);
        assert_int_equal(c->start_delay_max_seconds, d->start_delay_max_seconds);
        assert_int_equal(c->boot_start_delay_max_seconds, d->boot_start_delay_max_seconds);
        tether_config_free(c);
        tether_config_free(d);
}

/* The first connection is spread over the boot window only soon after boot;
 * an explicit every-start delay always applies. */
static void test_start_delay_after_boot(void **state) {
        struct tether_config *c = NULL;

        assert_int_equal(tether_config_new_default(&c), 0);
        assert_int_equal(tether_config_start_delay(c, 30), 120);
        assert_int_equal(tether_config_start_delay(c, TETHER_BOOT_WINDOW_SECONDS - 1), 120);
        assert_int_equal(tether_config_start_delay(c, TETHER_BOOT_WINDOW_SECONDS), 0);
        assert_int_equal(tether_config_start_delay(c, UINT64_MAX), 0);

        c->start_delay_max_seconds = 300; /* the larger of the two wins */
        assert_int_equal(tether_config_start_delay(c, 30), 300);
        assert_int_equal(tether_config_start_delay(c, 86400), 300);

        c->start_delay_max_seconds = 0;
        c->boot_start_delay_max_seconds = 0;
        assert_int_equal(tether_config_start_delay(c, 30), 0);
        tether_config_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_defaults_and_values, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors_name_file_line_and_key, setup, teardown),
                cmocka_unit_test_setup_teardown(test_dropins_sorted_and_override, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_main_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_set_and_cycles, setup, teardown),
                cmocka_unit_test_setup_teardown(test_https_alt_ports_and_tcp_retry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
                cmocka_unit_test_setup_teardown(test_documented_defaults, setup, teardown),
                cmocka_unit_test(test_start_delay_after_boot),
                cmocka_unit_test(test_mp_lists),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
