/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The fan-out throttle: a token bucket that holds at most one batch. A push
 * to N devices goes out in batches of at most `batch` frames, at an average
 * of `rate` frames a second; rate 0 means no rate limit (one batch per
 * event-loop round, so that the loop still serves other connections).
 * Pure: the caller passes the clock in, so tests drive it.
 */

#include <stddef.h>
#include <stdint.h>

struct mp_throttle {
        uint32_t rate;  /* frames per second; 0 = unlimited */
        uint32_t batch; /* at most this many per round, >= 1 */
        uint64_t last_usec;
        double credit;
};

/* Starts with a full bucket: the first batch goes at once. */
void mp_throttle_init(struct mp_throttle *t, uint32_t rate, uint32_t batch, uint64_t now_usec);

/* Returns how many of `want` frames may go now (0 .. min(want, batch)),
 * and in *ret_next_usec the earliest time at which calling again returns
 * a whole batch (or the rest, when fewer remain); ret_next_usec is now_usec
 * when no waiting is needed. */
size_t mp_throttle_take(struct mp_throttle *t, uint64_t now_usec, size_t want, uint64_t *ret_next_usec);

/* The seeds' "(strategy: S param: P)" for this throttle: strategy 1 is the
 * rate limit (param = frames per second), 0 is none (param = batch). */
unsigned mp_throttle_strategy(const struct mp_throttle *t);
unsigned mp_throttle_param(const struct mp_throttle *t);
