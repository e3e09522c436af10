/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/strutil.h"

static void test_parse_u64(void **state) {
        uint64_t v = 0;

        assert_int_equal(parse_u64("42", 0, 100, &v), 0);
        assert_int_equal(v, 42);
        assert_int_equal(parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(parse_u64("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
        assert_int_equal(parse_u64("101", 0, 100, &v), -ERANGE);
        assert_int_equal(parse_u64("", 0, 100, &v), -EINVAL);
        assert_int_equal(parse_u64("-1", 0, 100, &v), -EINVAL);
        assert_int_equal(parse_u64(" 1", 0, 100, &v), -EINVAL);
        assert_int_equal(parse_u64("1x", 0, 100, &v), -EINVAL);
}

static void test_strscpy(void **state) {
        char buf[4];

        assert_int_equal(strscpy(buf, sizeof(buf), "abc"), 0);
        assert_string_equal(buf, "abc");
        assert_int_equal(strscpy(buf, sizeof(buf), "abcd"), -ENAMETOOLONG);
        assert_string_equal(buf, "abc");
}

static void test_utf8(void **state) {
        assert_true(utf8_is_valid((const uint8_t *)"h\xc3\xa9llo", 6));
        assert_true(utf8_is_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4));
        assert_false(utf8_is_valid((const uint8_t *)"\xc0\xaf", 2));         /* overlong '/' */
        assert_false(utf8_is_valid((const uint8_t *)"\xed\xa0\x80", 3));     /* surrogate */
        assert_false(utf8_is_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
        assert_false(utf8_is_valid((const uint8_t *)"\xe2\x82", 2));         /* truncated */
        assert_false(utf8_is_valid((const uint8_t *)"\xff", 1));
}

static void test_hex(void **state) {
        char out[7];
        const uint8_t in[] = {0x00, 0xab, 0xff};

        hex_encode(in, sizeof(in), out);
        assert_string_equal(out, "00abff");
}

static void test_escape_log(void **state) {
        char *e;

        e = str_escape_log("plain host-1", 12);
        assert_string_equal(e, "plain host-1");
        free(e);
        /* a forged second line stays on the first */
        e = str_escape_log("h\nMar 1 tether-mp: fake\r\t", strlen("h\nMar 1 tether-mp: fake\r\t"));
        assert_string_equal(e, "h\\nMar 1 tether-mp: fake\\r\\t");
        free(e);
        e = str_escape_log("a\\b\x1b[31m\x7f", strlen("a\\b\x1b[31m\x7f"));
        assert_string_equal(e, "a\\\\b\\x1b[31m\\x7f");
        free(e);
        /* an embedded NUL is shown, not a terminator */
        e = str_escape_log("a\0b", 3);
        assert_string_equal(e, "a\\x00b");
        free(e);
        /* valid UTF-8 stays readable; invalid bytes are escaped */
        e = str_escape_log("h\xc3\xa9", 3);
        assert_string_equal(e, "h\xc3\xa9");
        free(e);
        e = str_escape_log("h\xff", 2);
        assert_string_equal(e, "h\\xff");
        free(e);
        e = str_escape_log(NULL, 5);
        assert_string_equal(e, "");
        free(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_u64),  cmocka_unit_test(test_strscpy),
                cmocka_unit_test(test_utf8),       cmocka_unit_test(test_hex),
                cmocka_unit_test(test_escape_log),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
