/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mp/throttle.h"

#define SEC 1000000ULL

static void test_first_batch_at_once(void **state) {
        struct mp_throttle t;
        uint64_t next;

        (void)state;
        mp_throttle_init(&t, 100, 20, 0);
        assert_int_equal(mp_throttle_take(&t, 0, 1000, &next), 20);
        /* 20 more need 0.2 s at 100/s */
        assert_int_equal(next, 200000);
        /* too early: nothing */
        assert_int_equal(mp_throttle_take(&t, 100000, 980, &next), 10);
        assert_true(next > 100000);
}

static void test_average_rate(void **state) {
        struct mp_throttle t;
        uint64_t now = 0, next;
        size_t left = 1000, sent = 0;
        unsigned rounds = 0;

        (void)state;
        mp_throttle_init(&t, 500, 50, 0);
        while (left > 0) {
                size_t n = mp_throttle_take(&t, now, left, &next);
                assert_true(n <= 50);
                left -= n;
                sent += n;
                rounds++;
                assert_true(next >= now);
                now = next;
        }
        assert_int_equal(sent, 1000);
        /* 1000 at 500/s with a first batch free: just under 2 s */
        assert_true(now >= 1900000 && now <= 2000000);
        assert_true(rounds <= 21);
}

static void test_unlimited(void **state) {
        struct mp_throttle t;
        uint64_t next;

        (void)state;
        mp_throttle_init(&t, 0, 100, 5);
        assert_int_equal(mp_throttle_take(&t, 5, 250, &next), 100);
        assert_int_equal(next, 5);
        assert_int_equal(mp_throttle_take(&t, 5, 50, &next), 50);
        assert_int_equal(mp_throttle_strategy(&t), 0);
        assert_int_equal(mp_throttle_param(&t), 100);
}

static void test_bucket_does_not_overfill(void **state) {
        struct mp_throttle t;
        uint64_t next;

        (void)state;
        mp_throttle_init(&t, 10, 5, 0);
        assert_int_equal(mp_throttle_take(&t, 0, 5, &next), 5);
        /* an hour idle still allows only one batch */
        assert_int_equal(mp_throttle_take(&t, 3600 * SEC, 100, &next), 5);
        assert_int_equal(mp_throttle_strategy(&t), 1);
        assert_int_equal(mp_throttle_param(&t), 10);
}

static void test_zero_batch_is_one(void **state) {
        struct mp_throttle t;
        uint64_t next;

        (void)state;
        mp_throttle_init(&t, 1, 0, 0);
        assert_int_equal(mp_throttle_take(&t, 0, 3, &next), 1);
        assert_int_equal(next, SEC);
        assert_int_equal(mp_throttle_take(&t, 0, 0, &next), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_first_batch_at_once), cmocka_unit_test(test_average_rate),
                cmocka_unit_test(test_unlimited),           cmocka_unit_test(test_bucket_does_not_overfill),
                cmocka_unit_test(test_zero_batch_is_one),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
