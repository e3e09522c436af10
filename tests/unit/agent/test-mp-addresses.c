/* SPDX-License-Identifier: Apache-2.0 */
/* Several MP addresses (PROTOCOL-v1 7.4): the list's syntax, the order per
 * device, and the rounds that decide when the backoff applies. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/mp-addresses.h"

static void test_parse(void **state) {
        struct mp_addresses a = {0};
        const char *reason = NULL;

        (void)state;
        assert_int_equal(mp_addresses_parse(" mp1.example.com , 10.0.0.2:10200,[2001:db8::1]:443, fe80::1 ,"
                                            "[::1]",
                                            &a, &reason),
                         0);
        assert_int_equal(a.n, 5);
        assert_string_equal(a.v[0].host, "mp1.example.com");
        assert_int_equal(a.v[0].tcp_port, 0);
        assert_string_equal(a.v[1].host, "10.0.0.2");
        assert_int_equal(a.v[1].tcp_port, 10200);
        assert_string_equal(a.v[2].host, "2001:db8::1");
        assert_int_equal(a.v[2].tcp_port, 443);
        assert_string_equal(a.v[3].host, "fe80::1");
        assert_int_equal(a.v[3].tcp_port, 0);
        assert_string_equal(a.v[4].host, "::1");
        assert_ptr_equal(mp_addresses_current(&a), &a.v[0]);
        mp_addresses_done(&a);
        assert_int_equal(a.n, 0);
        assert_null(a.v);

        assert_int_equal(mp_addresses_parse("one", &a, &reason), 0);
        assert_int_equal(a.n, 1);
        mp_addresses_done(&a);
}

static void test_parse_errors(void **state) {
        static const char *const bad[] = {
                "",     "a,,b",  "a,",     " , ",  "a:0",  "a:65536", "a:x",     "a b",
                "[::1", "[]:10", "[::1]x", "a:1:", "mp/x", "a, A",    "a:5,a:5",
        };
        struct mp_addresses a = {0};
        char many[400] = "";

        (void)state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                const char *reason = NULL;
                int r = mp_addresses_parse(bad[i], &a, &reason);
                if (r != -EINVAL)
                        fail_msg("'%s' parsed (%d)", bad[i], r);
                assert_non_null(reason);
                assert_int_equal(a.n, 0);
        }
        for (int i = 0; i < MP_ADDRESSES_MAX + 1; i++)
                snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sh%d", i ? "," : "", i);
        const char *reason = NULL;
        assert_int_equal(mp_addresses_parse(many, &a, &reason), -EINVAL);
        assert_string_equal(reason, "more than 32 addresses");
}

static void order_of(const char *seed, char out[8]) {
        struct mp_addresses a = {0};
        const char *reason = NULL;

        assert_int_equal(mp_addresses_parse("a,b,c,d,e,f,g", &a, &reason), 0);
        mp_addresses_order(&a, seed);
        for (size_t i = 0; i < a.n; i++)
                out[i] = a.v[i].host[0];
        out[7] = 0;
        mp_addresses_done(&a);
}

/* The same device always gets the same order; a fleet spreads its first
 * choice over every address. */
static void test_order(void **state) {
        char o1[8], o2[8], sorted[8];
        unsigned first[7] = {0};

        (void)state;
        order_of("machine-1", o1);
        order_of("machine-1", o2);
        assert_string_equal(o1, o2);
        memcpy(sorted, o1, sizeof(sorted));
        for (int i = 0; i < 7; i++)
                for (int j = i + 1; j < 7; j++)
                        if (sorted[j] < sorted[i]) {
                                char t = sorted[i];
                                sorted[i] = sorted[j];
                                sorted[j] = t;
                        }
        assert_string_equal(sorted, "abcdefg"); /* a permutation */
        order_of(NULL, o1);
        assert_string_equal(o1, "abcdefg");
        order_of("", o1);
        assert_string_equal(o1, "abcdefg");

        for (int i = 0; i < 7000; i++) {
                char seed[80];
                snprintf(seed, sizeof(seed), "%064x", i * 2654435761u);
                order_of(seed, o1);
                first[o1[0] - 'a']++;
        }
        /* 1000 each expected; a stuck or skewed shuffle is far off. */
        for (int i = 0; i < 7; i++)
                if (first[i] < 850 || first[i] > 1150)
                        fail_msg("address %c first for %u devices of 7000", 'a' + i, first[i]);
}

/* The backoff comes only after every address failed in turn. */
static void test_rounds(void **state) {
        struct mp_addresses a = {0};
        const char *reason = NULL;

        (void)state;
        assert_int_equal(mp_addresses_parse("a,b,c", &a, &reason), 0);
        assert_false(mp_addresses_failed(&a));
        assert_string_equal(mp_addresses_current(&a)->host, "b");
        assert_false(mp_addresses_failed(&a));
        assert_string_equal(mp_addresses_current(&a)->host, "c");
        assert_true(mp_addresses_failed(&a)); /* round over: backoff */
        assert_string_equal(mp_addresses_current(&a)->host, "a");
        assert_false(mp_addresses_failed(&a)); /* a new round */
        mp_addresses_succeeded(&a);            /* connected to b */
        assert_string_equal(mp_addresses_current(&a)->host, "b");
        /* b drops: c and a are tried at once, b again only after a backoff */
        assert_false(mp_addresses_failed(&a));
        assert_false(mp_addresses_failed(&a));
        assert_true(mp_addresses_failed(&a));
        assert_string_equal(mp_addresses_current(&a)->host, "b");
        mp_addresses_done(&a);

        /* One address: every failure is a full round, as before 7.4. */
        assert_int_equal(mp_addresses_parse("only", &a, &reason), 0);
        assert_true(mp_addresses_failed(&a));
        assert_true(mp_addresses_failed(&a));
        assert_string_equal(mp_addresses_current(&a)->host, "only");
        mp_addresses_done(&a);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_parse_errors),
                cmocka_unit_test(test_order),
                cmocka_unit_test(test_rounds),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
