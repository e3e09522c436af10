/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/guid.h"

#define N_GUIDS 1000

static void test_guid_format(void **state) {
        char g[TETHER_GUID_LEN];

        assert_int_equal(tether_guid_new(g), 0);
        assert_int_equal(strlen(g), 36);
        assert_true(tether_guid_valid(g));
        assert_int_equal(g[8], '-');
        assert_int_equal(g[13], '-');
        assert_int_equal(g[18], '-');
        assert_int_equal(g[23], '-');
        assert_int_equal(g[14], '4');           /* version 4 */
        assert_non_null(strchr("89AB", g[19])); /* RFC 4122 variant */
        for (size_t i = 0; i < 36; i++)
                assert_null(strchr("abcdef", g[i]));
}

static int cmp_guid(const void *a, const void *b) {
        return strcmp(a, b);
}

static void test_guid_unique(void **state) {
        char(*g)[TETHER_GUID_LEN] = calloc(N_GUIDS, TETHER_GUID_LEN);

        assert_non_null(g);
        for (int i = 0; i < N_GUIDS; i++) {
                assert_int_equal(tether_guid_new(g[i]), 0);
                assert_true(tether_guid_valid(g[i]));
        }
        qsort(g, N_GUIDS, TETHER_GUID_LEN, cmp_guid);
        for (int i = 1; i < N_GUIDS; i++)
                assert_string_not_equal(g[i - 1], g[i]);
        free(g);
}

static void test_guid_validator(void **state) {
        assert_true(tether_guid_valid("A43DD1B3-A006-4604-B012-5529380B3B6F"));
        assert_true(tether_guid_valid("00000000-0000-0000-0000-000000000000"));
        assert_false(tether_guid_valid(NULL));
        assert_false(tether_guid_valid(""));
        assert_false(tether_guid_valid("a43dd1b3-a006-4604-b012-5529380b3b6f"));   /* lowercase */
        assert_false(tether_guid_valid("A43DD1B3-A006-4604-B012-5529380b3B6F"));   /* one lowercase */
        assert_false(tether_guid_valid("A43DD1B3-A006-4604-B012-5529380B3B6"));    /* short */
        assert_false(tether_guid_valid("A43DD1B3-A006-4604-B012-5529380B3B6F0"));  /* long */
        assert_false(tether_guid_valid("A43DD1B3A-006-4604-B012-5529380B3B6F"));   /* dash moved */
        assert_false(tether_guid_valid("A43DD1B3-A0064-604-B012-5529380B3B6F"));   /* dash moved */
        assert_false(tether_guid_valid("A43DD1B3A006-4604-B012-5529380B3B6F-"));   /* dash moved */
        assert_false(tether_guid_valid("{A43DD1B3-A006-4604-B012-5529380B3B6F}")); /* braces */
        assert_false(tether_guid_valid("G43DD1B3-A006-4604-B012-5529380B3B6F"));   /* not hex */
        assert_false(tether_guid_valid("A43DD1B3-A006-4604-B012 5529380B3B6F"));   /* space */
}

static void test_timestamp_round_trip(void **state) {
        const time_t samples[] = {0, 1579621423, 951782400 /* 2000-02-29 */, 4102444799 /* 2099-12-31 */};
        char buf[TETHER_TIMESTAMP_LEN];
        time_t t = 0;

        assert_int_equal(tether_timestamp_format(1579621423, buf), 0);
        assert_string_equal(buf, "2020-01-21T15:43:43Z");
        assert_int_equal(tether_timestamp_parse("2020-01-21T15:43:43Z", &t), 0);
        assert_int_equal(t, 1579621423);

        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
                assert_int_equal(tether_timestamp_format(samples[i], buf), 0);
                assert_int_equal(strlen(buf), 20);
                assert_int_equal(tether_timestamp_parse(buf, &t), 0);
                assert_int_equal(t, samples[i]);
        }

        assert_int_equal(tether_timestamp_parse("2000-02-29T00:00:00Z", &t), 0);
        assert_int_equal(t, 951782400);
        assert_int_equal(tether_timestamp_parse("2024-02-29T23:59:59Z", &t), 0);
        assert_int_equal(tether_timestamp_parse("1970-01-01T00:00:00Z", &t), 0);
        assert_int_equal(t, 0);

        /* Years below 1000 parse, so they must format back zero-padded. */
        assert_int_equal(tether_timestamp_parse("0679-03-01T00:00:00Z", &t), 0);
        assert_int_equal(tether_timestamp_format(t, buf), 0);
        assert_string_equal(buf, "0679-03-01T00:00:00Z");
}

static void test_timestamp_rejects(void **state) {
        static const char *const bad[] = {
                "2023-02-29T00:00:00Z",                               /* not a leap year */
                "1900-02-29T00:00:00Z",                               /* century, not a leap year */
                "2023-04-31T00:00:00Z",                               /* April has 30 days */
                "2023-13-01T00:00:00Z",                               /* month 13 */
                "2023-00-01T00:00:00Z",                               /* month 0 */
                "2023-01-00T00:00:00Z",                               /* day 0 */
                "2023-01-01T24:00:00Z",                               /* hour 24 */
                "2023-01-01T23:60:00Z",                               /* minute 60 */
                "2023-01-01T23:59:60Z",                               /* leap second */
                "2023-01-01T00:00:00",                                /* missing Z */
                "2023-01-01T00:00:00z",                               /* lowercase z */
                "2023-01-01T00:00:00+00:00", "2023-01-01T00:00:00Z ", /* trailing byte */
                "2023-01-01T00:00:00ZZ",     "2023-01-01 00:00:00Z",  /* space for T */
                "2023-1-01T00:00:00Z",                                /* short month */
                " 2023-01-01T00:00:00Z",                              /* leading space */
                "+023-01-01T00:00:00Z",      "2023-01-01T00:00:0Z",   "", "2023",
        };
        time_t t = 12345;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (tether_timestamp_parse(bad[i], &t) != -EINVAL)
                        fail_msg("accepted '%s'", bad[i]);
                assert_int_equal(t, 12345);
        }
        assert_int_equal(tether_timestamp_parse(NULL, &t), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_guid_format),       cmocka_unit_test(test_guid_unique),
                cmocka_unit_test(test_guid_validator),    cmocka_unit_test(test_timestamp_round_trip),
                cmocka_unit_test(test_timestamp_rejects),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
