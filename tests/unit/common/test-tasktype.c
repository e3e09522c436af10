/* SPDX-License-Identifier: Apache-2.0 */
/* The task type table (common/tasktype.h): every name finds its type, the
 * names are distinct, the byte helpers of common/ agree with the contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/bytes.h"
#include "common/strutil.h"
#include "common/tasktype.h"

static void test_every_name_finds_its_type(void **state) {
        for (uint32_t t = 1; t <= TETHER_TASK_TYPE_MAX; t++) {
                const struct tether_task_type_info *i = tether_task_type_info(t);
                char number[16], bare[64];

                assert_non_null(i);
                assert_int_equal(i->type, t);
                assert_int_equal(tether_task_type_from_string(i->cli_name), t);
                assert_int_equal(tether_task_type_from_string(i->wire_name), t);
                assert_int_equal(tether_task_type_from_string(i->schedule_id), t);
                /* Without braces, and in upper case. */
                snprintf(bare, sizeof(bare), "%.36s", i->schedule_id + 1);
                assert_int_equal(tether_task_type_from_string(bare), t);
                snprintf(number, sizeof(number), "%u", t);
                assert_int_equal(tether_task_type_from_string(number), t);
                assert_true(i->time_limit_sec > 0 && i->fallback_limit_sec > 0);
                assert_non_null(i->config_stem);
        }
        assert_null(tether_task_type_info(0));
        assert_null(tether_task_type_info(TETHER_TASK_TYPE_MAX + 1));
        assert_int_equal(tether_task_type_from_string("reboot"), 0);
        assert_int_equal(tether_task_type_from_string("0"), 0);
        assert_int_equal(tether_task_type_from_string(NULL), 0);
        assert_string_equal(tether_task_type_name(TETHER_TASK_TYPE_MAX + 1), "unknown");
        assert_null(tether_task_type_schedule_id(TETHER_TASK_TYPE_MAX + 1));
}

static void test_names_distinct(void **state) {
        for (uint32_t a = 1; a <= TETHER_TASK_TYPE_MAX; a++)
                for (uint32_t b = a + 1; b <= TETHER_TASK_TYPE_MAX; b++) {
                        const struct tether_task_type_info *x = tether_task_type_info(a),
                                                           *y = tether_task_type_info(b);
                        assert_string_not_equal(x->cli_name, y->cli_name);
                        assert_string_not_equal(x->wire_name, y->wire_name);
                        assert_string_not_equal(x->schedule_id, y->schedule_id);
                        assert_string_not_equal(x->config_stem, y->config_stem);
                }
}

static void test_contract_values(void **state) {
        char names[TETHER_TASK_TYPE_NAMES_MAX];

        /* PROTOCOL-v1 section 3.3. */
        assert_string_equal(tether_task_type_name(TETHER_TASK_MACHINE_POLICY), "RequestMachinePolicy");
        assert_string_equal(tether_task_type_schedule_id(TETHER_TASK_APP_EVALUATION),
                            "{00000000-0000-0000-0000-000000000121}");
        assert_string_equal(tether_return_code_name(TETHER_RC_TIMED_OUT), "TimedOut");
        assert_string_equal(tether_return_code_name(0), "unknown");
        tether_task_type_cli_names(names, sizeof(names));
        assert_non_null(strstr(names, "machine-policy, user-policy, app-evaluation"));
}

static void test_bytes(void **state) {
        uint8_t b[4];

        put_be32(b, 0x01020304u);
        assert_memory_equal(b, "\x01\x02\x03\x04", 4);
        assert_int_equal(get_be32(b), 0x01020304u);
        put_be16(b, 0xa1b2u);
        assert_int_equal(get_be16(b), 0xa1b2u);
        assert_int_equal(hex_digit_value('F'), 15);
        assert_int_equal(hex_digit_value('a'), 10);
        assert_int_equal(hex_digit_value('g'), -1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_name_finds_its_type),
                cmocka_unit_test(test_names_distinct),
                cmocka_unit_test(test_contract_values),
                cmocka_unit_test(test_bytes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
