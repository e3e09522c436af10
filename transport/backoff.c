/* SPDX-License-Identifier: Apache-2.0 */
#include "transport/backoff.h"

/* The counter stops here: 2^attempt already exceeds any sane cap long
 * before, and saturating keeps the counter from ever wrapping to 0. */
#define BACKOFF_ATTEMPT_MAX 64u

void tether_backoff_init(struct tether_backoff *b) {
        *b = (struct tether_backoff){
                .base_usec = 1000000ULL,
                .cap_usec = 300ULL * 1000000ULL,
                .healthy_usec = 30ULL * 1000000ULL,
        };
}

/* min(cap, base * 2^attempt) without overflowing: the shift is only done
 * when it cannot pass the cap. */
static uint64_t backoff_window(const struct tether_backoff *b) {
        uint64_t window = b->base_usec;

        for (unsigned i = 0; i < b->attempt && i < BACKOFF_ATTEMPT_MAX; i++) {
                if (window > b->cap_usec / 2) /* doubling would pass the cap */
                        return b->cap_usec;
                window *= 2;
        }
        return window < b->cap_usec ? window : b->cap_usec;
}

uint64_t tether_backoff_next(struct tether_backoff *b, uint64_t floor_usec, uint64_t random) {
        uint64_t window = backoff_window(b);
        /* Uniform in [0, window]. The modulo bias is below 2^-34 for any
         * window under 300 s in microseconds: irrelevant here. */
        uint64_t wait = window == UINT64_MAX ? random : random % (window + 1);

        if (b->attempt < BACKOFF_ATTEMPT_MAX)
                b->attempt++;

        /* A floor (GOODBYE's RetryAfterSeconds, a rejection's 15 minutes)
         * keeps the jitter on top of it rather than replacing it: a whole
         * fleet told "retry after 60 s" must not come back in the same
         * second. */
        if (floor_usec > 0) {
                if (wait > UINT64_MAX - floor_usec)
                        return UINT64_MAX;
                return floor_usec + wait;
        }
        return wait;
}

void tether_backoff_connected(struct tether_backoff *b, uint64_t now) {
        /* 0 means "not connected": a clock reading of exactly 0 is moved to
         * 1 so that it still counts as connected. */
        b->connected_at = now > 0 ? now : 1;
}

void tether_backoff_disconnected(struct tether_backoff *b, uint64_t now) {
        if (b->connected_at != 0 && now >= b->connected_at && now - b->connected_at >= b->healthy_usec)
                b->attempt = 0;
        b->connected_at = 0;
}
