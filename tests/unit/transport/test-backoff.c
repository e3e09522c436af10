/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "transport/backoff.h"

#define SEC 1000000ULL

/* splitmix64: a fixed-seed generator so that a failure is reproducible. */
static uint64_t rng_state = 0x5445544845520001ULL;
static uint64_t rng(void) {
        uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
}

static void test_init_defaults(void **state) {
        struct tether_backoff b;

        memset(&b, 0xff, sizeof(b));
        tether_backoff_init(&b);
        assert_true(b.base_usec == 1 * SEC);
        assert_true(b.cap_usec == 300 * SEC);
        assert_true(b.healthy_usec == 30 * SEC);
        assert_int_equal(b.attempt, 0);
        assert_true(b.connected_at == 0);
}

/* The n-th wait stays in [0, min(300 s, 2^n s)] over many draws, and the
 * draws actually spread over that window (full jitter, not a fixed wait). */
static void test_bounds_many_draws(void **state) {
        for (unsigned n = 0; n < 12; n++) {
                uint64_t window = (1ULL << n) * SEC;
                uint64_t lo = UINT64_MAX, hi = 0;

                if (window > 300 * SEC)
                        window = 300 * SEC;
                for (unsigned i = 0; i < 2000; i++) {
                        struct tether_backoff b;
                        uint64_t w;

                        tether_backoff_init(&b);
                        b.attempt = n;
                        w = tether_backoff_next(&b, 0, rng());
                        assert_true(w <= window);
                        if (w < lo)
                                lo = w;
                        if (w > hi)
                                hi = w;
                        assert_int_equal(b.attempt, n + 1);
                }
                /* 2000 uniform draws: the extremes land within 1 % of the
                 * ends with overwhelming probability. */
                assert_true(lo < window / 100 + 1);
                assert_true(hi > window - window / 100 - 1);
        }
}

/* Exact edges with chosen random values: 0 gives 0, the largest residue
 * gives the window itself. */
static void test_edges_exact(void **state) {
        struct tether_backoff b;

        tether_backoff_init(&b);
        assert_true(tether_backoff_next(&b, 0, 0) == 0);
        /* attempt 1: window 2 s, random = window gives window */
        assert_true(tether_backoff_next(&b, 0, 2 * SEC) == 2 * SEC);
        /* attempt 2: window 4 s, random = window + 1 wraps to 0 */
        assert_true(tether_backoff_next(&b, 0, 4 * SEC + 1) == 0);
        assert_int_equal(b.attempt, 3);
}

/* The window doubles per attempt: with random = UINT64_MAX the result is
 * UINT64_MAX mod (window+1), so compare against the maximum reached over
 * draws instead: the mean of many draws grows until the cap. */
static void test_growth_and_cap(void **state) {
        uint64_t prev_mean = 0;

        for (unsigned n = 0; n <= 10; n++) {
                uint64_t sum = 0;

                for (unsigned i = 0; i < 1000; i++) {
                        struct tether_backoff b;

                        tether_backoff_init(&b);
                        b.attempt = n;
                        sum += tether_backoff_next(&b, 0, rng());
                }
                uint64_t mean = sum / 1000;
                if (n > 0 && n <= 8) /* 2^8 s = 256 s, still under the cap */
                        assert_true(mean > prev_mean + prev_mean / 2);
                prev_mean = mean;
        }

        /* Past the cap every draw is <= 300 s, and the largest seen is near it. */
        uint64_t hi = 0;
        for (unsigned i = 0; i < 1000; i++) {
                struct tether_backoff b;
                uint64_t w;

                tether_backoff_init(&b);
                b.attempt = 20;
                w = tether_backoff_next(&b, 0, rng());
                assert_true(w <= 300 * SEC);
                if (w > hi)
                        hi = w;
        }
        assert_true(hi > 290 * SEC);
}

/* Successive calls on one object walk the attempts themselves. */
static void test_counter_advances(void **state) {
        struct tether_backoff b;

        tether_backoff_init(&b);
        for (unsigned i = 0; i < 5; i++)
                (void)tether_backoff_next(&b, 0, rng());
        assert_int_equal(b.attempt, 5);
        /* Now the window is 32 s: the largest residue lands on it. */
        assert_true(tether_backoff_next(&b, 0, 32 * SEC) == 32 * SEC);
}

/* No overflow anywhere at attempt 100 (and the counter saturates rather
 * than wrapping back to a short wait). */
static void test_no_overflow_at_attempt_100(void **state) {
        struct tether_backoff b;

        tether_backoff_init(&b);
        for (unsigned i = 0; i < 100; i++) {
                uint64_t w = tether_backoff_next(&b, 0, UINT64_MAX - i);
                assert_true(w <= 300 * SEC);
        }
        assert_true(b.attempt >= 64);
        b.attempt = 100;
        for (unsigned i = 0; i < 200; i++)
                assert_true(tether_backoff_next(&b, 0, rng()) <= 300 * SEC);
        b.attempt = UINT32_MAX;
        assert_true(tether_backoff_next(&b, 0, rng()) <= 300 * SEC);
        assert_int_equal(b.attempt, UINT32_MAX); /* saturated, not wrapped */

        /* A huge cap and huge floor still do not wrap. */
        tether_backoff_init(&b);
        b.cap_usec = UINT64_MAX;
        b.attempt = 100;
        assert_true(tether_backoff_next(&b, 0, 12345) == 12345);
        assert_true(tether_backoff_next(&b, UINT64_MAX - 10, 1000) == UINT64_MAX);
}

/* RetryAfterSeconds: the wait is never below the floor, even at attempt 0
 * whose window is 1 s, and the jitter stays on top of it. */
static void test_floor(void **state) {
        uint64_t lo = UINT64_MAX, hi = 0;

        for (unsigned i = 0; i < 2000; i++) {
                struct tether_backoff b;
                uint64_t w;

                tether_backoff_init(&b);
                w = tether_backoff_next(&b, 60 * SEC, rng());
                assert_true(w >= 60 * SEC);
                assert_true(w <= 61 * SEC);
                if (w < lo)
                        lo = w;
                if (w > hi)
                        hi = w;
        }
        assert_true(hi - lo > SEC / 2); /* spread, not all at 60 s */

        /* Should-fail direction: without a floor, short waits do happen. */
        struct tether_backoff b;
        tether_backoff_init(&b);
        assert_true(tether_backoff_next(&b, 0, 0) < 60 * SEC);
}

/* A connection that drops before 30 s healthy does not reset the counter;
 * one that lasted 30 s does. */
static void test_reset_rule(void **state) {
        struct tether_backoff b;

        tether_backoff_init(&b);
        for (unsigned i = 0; i < 6; i++)
                (void)tether_backoff_next(&b, 0, rng());
        assert_int_equal(b.attempt, 6);

        tether_backoff_connected(&b, 1000 * SEC);
        tether_backoff_disconnected(&b, 1000 * SEC + 29 * SEC);
        assert_int_equal(b.attempt, 6);
        assert_true(b.connected_at == 0);

        /* A disconnect without a connection in between changes nothing. */
        tether_backoff_disconnected(&b, 5000 * SEC);
        assert_int_equal(b.attempt, 6);

        tether_backoff_connected(&b, 2000 * SEC);
        tether_backoff_disconnected(&b, 2000 * SEC + 30 * SEC);
        assert_int_equal(b.attempt, 0);
        assert_true(b.connected_at == 0);

        /* After the reset the next wait is within 1 s again. */
        for (unsigned i = 0; i < 100; i++) {
                struct tether_backoff c = b;
                assert_true(tether_backoff_next(&c, 0, rng()) <= SEC);
        }

        /* A clock that reads 0 still counts as connected. */
        b.attempt = 3;
        tether_backoff_connected(&b, 0);
        assert_true(b.connected_at != 0);
        tether_backoff_disconnected(&b, 31 * SEC);
        assert_int_equal(b.attempt, 0);

        /* A clock going backwards never resets. */
        b.attempt = 3;
        tether_backoff_connected(&b, 100 * SEC);
        tether_backoff_disconnected(&b, 50 * SEC);
        assert_int_equal(b.attempt, 3);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_init_defaults),
                cmocka_unit_test(test_bounds_many_draws),
                cmocka_unit_test(test_edges_exact),
                cmocka_unit_test(test_growth_and_cap),
                cmocka_unit_test(test_counter_advances),
                cmocka_unit_test(test_no_overflow_at_attempt_100),
                cmocka_unit_test(test_floor),
                cmocka_unit_test(test_reset_rule),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
