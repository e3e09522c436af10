/* SPDX-License-Identifier: Apache-2.0 */
#include "mp/throttle.h"

#include <math.h>

void mp_throttle_init(struct mp_throttle *t, uint32_t rate, uint32_t batch, uint64_t now_usec) {
        t->rate = rate;
        t->batch = batch ? batch : 1;
        t->last_usec = now_usec;
        t->credit = t->batch;
}

static double min_d(double a, double b) {
        return a < b ? a : b;
}

size_t mp_throttle_take(struct mp_throttle *t, uint64_t now_usec, size_t want, uint64_t *ret_next_usec) {
        size_t n, rest;
        double need;

        if (t->rate == 0) {
                n = want < t->batch ? want : t->batch;
                *ret_next_usec = now_usec;
                return n;
        }

        if (now_usec > t->last_usec)
                t->credit = min_d(t->batch, t->credit + (double)(now_usec - t->last_usec) * t->rate / 1e6);
        t->last_usec = now_usec;

        /* the epsilon absorbs rounding in the credit arithmetic */
        n = (size_t)floor(t->credit + 1e-9);
        if (n > want)
                n = want;
        if (n > t->batch)
                n = t->batch;
        t->credit -= (double)n;

        rest = want - n;
        if (rest == 0) {
                *ret_next_usec = now_usec;
                return n;
        }
        /* Wait until a whole batch (or the remainder) has accrued: sending
         * in full batches keeps the number of wake-ups at rate/batch. */
        need = min_d((double)t->batch, (double)rest) - t->credit;
        if (need <= 0)
                *ret_next_usec = now_usec;
        else
                *ret_next_usec = now_usec + (uint64_t)ceil(need * 1e6 / t->rate);
        return n;
}

unsigned mp_throttle_strategy(const struct mp_throttle *t) {
        return t->rate ? 1 : 0;
}

unsigned mp_throttle_param(const struct mp_throttle *t) {
        return t->rate ? t->rate : t->batch;
}
