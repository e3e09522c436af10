/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mp/dupguard.h"

#define SEC 1000000ULL
#define ID_A "0B9D1F8E-6A43-4C55-9E21-7F3A2B1C4D5E"
#define ID_B "7C2E4A10-1B3D-4E5F-8A9B-0C1D2E3F4A5B"

static struct mp_dupguard *guard(void) {
        struct mp_dupguard *g = NULL;

        assert_int_equal(mp_dupguard_new(NULL, &g), 0);
        assert_non_null(g);
        return g;
}

static enum mp_dupguard_verdict replace(struct mp_dupguard *g, const char *id, bool live, uint64_t now,
                                        unsigned *count) {
        enum mp_dupguard_verdict v;

        assert_int_equal(mp_dupguard_replacement(g, id, live, now, &v, count), 0);
        return v;
}

/* Should-fail case: a device restarted once (killed, back before the MP saw
 * the old connection go) is not a duplicate. */
static void test_one_restart_is_not_a_conflict(void **state) {
        struct mp_dupguard *g = guard();
        unsigned count = 9;

        (void)state;
        assert_int_equal(replace(g, ID_A, true, 100 * SEC, &count), MP_DUPGUARD_REPLACE);
        assert_int_equal(count, 1);
        assert_false(mp_dupguard_flagged(g, ID_A, 100 * SEC));
        mp_dupguard_free(g);
}

/* Two in the window are tolerated too; the third is refused, and the
 * ClientID stays flagged: every later live replacement is refused. */
static void test_flapping_is_a_conflict(void **state) {
        struct mp_dupguard *g = guard();
        unsigned count = 0;

        (void)state;
        assert_int_equal(replace(g, ID_A, true, 10 * SEC, &count), MP_DUPGUARD_REPLACE);
        assert_int_equal(replace(g, ID_A, true, 11 * SEC, &count), MP_DUPGUARD_REPLACE);
        assert_int_equal(count, 2);
        assert_false(mp_dupguard_flagged(g, ID_A, 11 * SEC));
        assert_int_equal(replace(g, ID_A, true, 13 * SEC, &count), MP_DUPGUARD_CONFLICT);
        assert_int_equal(count, 3);
        assert_true(mp_dupguard_flagged(g, ID_A, 13 * SEC));
        /* the clone comes back after its RetryAfterSeconds: still refused */
        assert_int_equal(replace(g, ID_A, true, (13 + 900) * SEC, &count), MP_DUPGUARD_CONFLICT);
        assert_int_equal(count, 0);
        /* another ClientID is not affected */
        assert_false(mp_dupguard_flagged(g, ID_B, 14 * SEC));
        assert_int_equal(replace(g, ID_B, true, 14 * SEC, NULL), MP_DUPGUARD_REPLACE);
        mp_dupguard_free(g);
}

/* Should-fail case: replacing a dead connection is a reconnection, however
 * often; it is not counted, and it is not refused even when flagged (the
 * established device is gone). */
static void test_dead_replacements_not_counted(void **state) {
        struct mp_dupguard *g = guard();
        unsigned count = 7;

        (void)state;
        for (unsigned i = 0; i < 20; i++) {
                assert_int_equal(replace(g, ID_A, false, (uint64_t)i * SEC, &count), MP_DUPGUARD_REPLACE);
                assert_int_equal(count, 0);
        }
        assert_false(mp_dupguard_flagged(g, ID_A, 20 * SEC));
        assert_int_equal(mp_dupguard_size(g), 0);
        /* two live ones between dead ones: still below the threshold */
        assert_int_equal(replace(g, ID_A, true, 30 * SEC, NULL), MP_DUPGUARD_REPLACE);
        assert_int_equal(replace(g, ID_A, false, 31 * SEC, NULL), MP_DUPGUARD_REPLACE);
        assert_int_equal(replace(g, ID_A, true, 32 * SEC, &count), MP_DUPGUARD_REPLACE);
        assert_int_equal(count, 2);
        /* flagged, then the established connection dies: the newcomer gets in */
        assert_int_equal(replace(g, ID_A, true, 33 * SEC, NULL), MP_DUPGUARD_CONFLICT);
        assert_int_equal(replace(g, ID_A, false, 34 * SEC, NULL), MP_DUPGUARD_REPLACE);
        mp_dupguard_free(g);
}

/* Restarts spread wider than the window never add up. */
static void test_window(void **state) {
        struct mp_dupguard *g = guard();
        uint64_t t = 0;

        (void)state;
        for (unsigned i = 0; i < 10; i++) {
                assert_int_equal(replace(g, ID_A, true, t, NULL), MP_DUPGUARD_REPLACE);
                t += MP_DUPGUARD_WINDOW_USEC / 2 + SEC;
        }
        assert_false(mp_dupguard_flagged(g, ID_A, t));
        mp_dupguard_free(g);
}

/* The flag lasts `hold` after the last refusal, then counting starts anew;
 * expire() forgets quiet ClientIDs and keeps flagged ones. */
static void test_hold_and_expire(void **state) {
        struct mp_dupguard_config cfg = {.threshold = 2, .window_usec = 60 * SEC, .hold_usec = 100 * SEC};
        struct mp_dupguard *g = NULL;

        (void)state;
        assert_int_equal(mp_dupguard_new(&cfg, &g), 0);
        assert_int_equal(replace(g, ID_A, true, 0, NULL), MP_DUPGUARD_REPLACE);
        assert_int_equal(replace(g, ID_A, true, 1 * SEC, NULL), MP_DUPGUARD_CONFLICT);
        assert_int_equal(replace(g, ID_B, true, 1 * SEC, NULL), MP_DUPGUARD_REPLACE);
        assert_int_equal(mp_dupguard_size(g), 2);
        mp_dupguard_expire(g, 70 * SEC);
        /* B's one replacement left the window; A is flagged until 101 s */
        assert_int_equal(mp_dupguard_size(g), 1);
        assert_true(mp_dupguard_flagged(g, ID_A, 100 * SEC));
        assert_false(mp_dupguard_flagged(g, ID_A, 101 * SEC));
        mp_dupguard_expire(g, 101 * SEC);
        assert_int_equal(mp_dupguard_size(g), 0);
        /* counting starts anew */
        assert_int_equal(replace(g, ID_A, true, 200 * SEC, NULL), MP_DUPGUARD_REPLACE);
        mp_dupguard_free(g);
}

static void test_bad_config(void **state) {
        struct mp_dupguard_config one = {.threshold = 1, .window_usec = SEC, .hold_usec = SEC};
        struct mp_dupguard_config no_window = {.threshold = 3, .window_usec = 0, .hold_usec = SEC};
        struct mp_dupguard *g = NULL;

        (void)state;
        assert_int_equal(mp_dupguard_new(&one, &g), -EINVAL);
        assert_int_equal(mp_dupguard_new(&no_window, &g), -EINVAL);
        assert_null(g);
        assert_null(mp_dupguard_free(NULL));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_one_restart_is_not_a_conflict),
                cmocka_unit_test(test_flapping_is_a_conflict),
                cmocka_unit_test(test_dead_replacements_not_counted),
                cmocka_unit_test(test_window),
                cmocka_unit_test(test_hold_and_expire),
                cmocka_unit_test(test_bad_config),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
