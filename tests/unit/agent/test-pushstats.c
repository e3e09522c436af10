/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/pushstats.h"

#define US(x) ((uint64_t)(x)*1000)
/* A base so that a start stamp is never 0 (0 means "no stamp"). */
#define T0 UINT64_C(1000000000)

static void add_us(struct pushstats *p, enum pushstats_stage st, uint64_t us) {
        pushstats_add(p, st, T0, T0 + US(us));
}

static void test_empty(void **state) {
        struct pushstats *p = pushstats_new();
        struct pushstats_summary sum;

        (void)state;
        assert_non_null(p);
        for (enum pushstats_stage st = 0; st < _PUSHSTATS_STAGE_MAX; st++) {
                memset(&sum, 0xff, sizeof(sum));
                assert_int_equal(pushstats_summary(p, st, &sum), 0);
                assert_int_equal(sum.count, 0);
                assert_int_equal(sum.window, 0);
                assert_int_equal(sum.median_us, 0);
                assert_int_equal(sum.p99_us, 0);
                assert_int_equal(sum.max_us, 0);
        }
        pushstats_free(p);
}

static void test_single_and_odd_even(void **state) {
        struct pushstats *p = pushstats_new();
        struct pushstats_summary sum;

        (void)state;
        assert_non_null(p);
        add_us(p, PUSHSTATS_VERIFY, 42);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_VERIFY, &sum), 0);
        assert_int_equal(sum.count, 1);
        assert_int_equal(sum.median_us, 42);
        assert_int_equal(sum.p99_us, 42);
        assert_int_equal(sum.max_us, 42);

        /* Out of order on purpose: the summary sorts. */
        add_us(p, PUSHSTATS_SIGN, 30);
        add_us(p, PUSHSTATS_SIGN, 10);
        add_us(p, PUSHSTATS_SIGN, 20);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_SIGN, &sum), 0);
        assert_int_equal(sum.count, 3);
        assert_int_equal(sum.median_us, 20);
        assert_int_equal(sum.max_us, 30);
        add_us(p, PUSHSTATS_SIGN, 40);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_SIGN, &sum), 0);
        assert_int_equal(sum.median_us, 25); /* (20 + 30) / 2 */

        /* Stages are kept apart. */
        assert_int_equal(pushstats_summary(p, PUSHSTATS_PARSE, &sum), 0);
        assert_int_equal(sum.count, 0);
        pushstats_free(p);
}

static void test_percentiles(void **state) {
        struct pushstats *p = pushstats_new();
        struct pushstats_summary sum;

        (void)state;
        assert_non_null(p);
        /* 1..1000 us, shuffled by a stride coprime with 1000. */
        for (unsigned i = 0; i < 1000; i++)
                add_us(p, PUSHSTATS_IPC_RUN, (i * 7 % 1000) + 1);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_IPC_RUN, &sum), 0);
        assert_int_equal(sum.count, 1000);
        assert_int_equal(sum.window, 1000);
        assert_int_equal(sum.median_us, 500); /* (500 + 501) / 2, integer */
        assert_int_equal(sum.p99_us, 990);    /* nearest rank: the 990th of 1000 */
        assert_int_equal(sum.max_us, 1000);

        /* 100 samples: p99 is the 99th, one outlier sets only the max. */
        for (unsigned i = 0; i < 99; i++)
                add_us(p, PUSHSTATS_SEND, 5);
        add_us(p, PUSHSTATS_SEND, 900000);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_SEND, &sum), 0);
        assert_int_equal(sum.p99_us, 5);
        assert_int_equal(sum.max_us, 900000);
        pushstats_free(p);
}

static void test_wrap_around(void **state) {
        struct pushstats *p = pushstats_new();
        struct pushstats_summary sum;

        (void)state;
        assert_non_null(p);
        /* A full ring of slow samples, then a full ring of fast ones: only
         * the last PUSHSTATS_RING count. */
        for (unsigned i = 0; i < PUSHSTATS_RING; i++)
                add_us(p, PUSHSTATS_SPOOL, 1000000);
        for (unsigned i = 0; i < PUSHSTATS_RING; i++)
                add_us(p, PUSHSTATS_SPOOL, 100 + i % 10);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_SPOOL, &sum), 0);
        assert_int_equal(sum.count, 2 * PUSHSTATS_RING);
        assert_int_equal(sum.window, PUSHSTATS_RING);
        assert_int_equal(sum.max_us, 109);
        assert_in_range(sum.median_us, 104, 105);

        /* Half a ring more of one value: the older half is overwritten. */
        for (unsigned i = 0; i < PUSHSTATS_RING / 2 + 1; i++)
                add_us(p, PUSHSTATS_SPOOL, 7);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_SPOOL, &sum), 0);
        assert_int_equal(sum.window, PUSHSTATS_RING);
        assert_int_equal(sum.median_us, 7);
        assert_int_equal(sum.max_us, 109);
        pushstats_free(p);
}

static void test_refused_samples(void **state) {
        struct pushstats *p = pushstats_new();
        struct pushstats_summary sum;

        (void)state;
        assert_non_null(p);
        /* No start stamp (a task resumed after a restart): nothing recorded. */
        pushstats_add(p, PUSHSTATS_IPC_RUN, 0, T0);
        /* A stamp after the end: nothing. */
        pushstats_add(p, PUSHSTATS_IPC_RUN, T0 + 5, T0);
        /* A bad stage, and a NULL struct: ignored. */
        pushstats_add(p, _PUSHSTATS_STAGE_MAX, T0, T0 + 5);
        pushstats_add(NULL, PUSHSTATS_VERIFY, T0, T0 + 5);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_IPC_RUN, &sum), 0);
        assert_int_equal(sum.count, 0);
        assert_int_equal(pushstats_summary(p, _PUSHSTATS_STAGE_MAX, &sum), -EINVAL);
        assert_int_equal(pushstats_summary(NULL, PUSHSTATS_VERIFY, &sum), -EINVAL);
        assert_null(pushstats_stage_name(_PUSHSTATS_STAGE_MAX));

        /* Over 71 minutes saturates rather than wrapping. */
        pushstats_add(p, PUSHSTATS_IPC_RUN, T0, T0 + UINT64_C(5000) * 1000000000);
        assert_int_equal(pushstats_summary(p, PUSHSTATS_IPC_RUN, &sum), 0);
        assert_int_equal(sum.max_us, UINT32_MAX);
        pushstats_free(p);
}

static void test_names_and_clock(void **state) {
        uint64_t a, b;

        (void)state;
        assert_string_equal(pushstats_stage_name(PUSHSTATS_VERIFY), "verify");
        assert_string_equal(pushstats_stage_name(PUSHSTATS_IPC_RUN), "ipc+run");
        assert_string_equal(pushstats_stage_name(PUSHSTATS_SPOOL_RESPONSE), "spool-response");
        for (enum pushstats_stage st = 0; st < _PUSHSTATS_STAGE_MAX; st++)
                assert_non_null(pushstats_stage_name(st));
        a = pushstats_now();
        b = pushstats_now();
        assert_true(a > 0);
        assert_true(b >= a);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_empty),           cmocka_unit_test(test_single_and_odd_even),
                cmocka_unit_test(test_percentiles),     cmocka_unit_test(test_wrap_around),
                cmocka_unit_test(test_refused_samples), cmocka_unit_test(test_names_and_clock),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
