/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Reconnection backoff of PROTOCOL-v1 section 5: full jitter, the n-th wait
 * uniform in [0, min(cap, base * 2^n)], a floor from GOODBYE's
 * RetryAfterSeconds, and a reset only after a healthy stretch. Pure: the
 * caller passes the clock and the random numbers, so it is testable.
 */

#include <stdint.h>

struct tether_backoff {
        uint64_t base_usec;    /* 1 s */
        uint64_t cap_usec;     /* 300 s */
        uint64_t healthy_usec; /* 30 s */
        unsigned attempt;
        uint64_t connected_at; /* 0 when not connected */
};

void tether_backoff_init(struct tether_backoff *b);

/* The next wait: uniform in [0, min(cap, base * 2^attempt)], at least
 * floor_usec, using random (any 64-bit value from a good source). Increments
 * the attempt counter. */
uint64_t tether_backoff_next(struct tether_backoff *b, uint64_t floor_usec, uint64_t random);

/* The connection is up (now, monotonic usec). */
void tether_backoff_connected(struct tether_backoff *b, uint64_t now);
/* The connection went down at now: resets the counter if it had been
 * healthy for healthy_usec. */
void tether_backoff_disconnected(struct tether_backoff *b, uint64_t now);
