/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Several MP addresses (PROTOCOL-v1 section 7.4): "[mp] host = a, b:10200,
 * [2001:db8::1]:10123". Each entry is a host name or address, with an
 * optional TCP channel port (the HTTPS port is [mp] https_port for every
 * entry). The agent tries them in a random order that is stable per device
 * (seeded from its machine ID, so that a fleet spreads over the nodes while
 * each device keeps coming back to the same one), moves to the next on a
 * failure, and backs off only after a full round failed.
 *
 * Pure code, no I/O: config.c validates the list with it and the channel
 * core (agent/channel.c) keeps the rotation.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_ADDRESSES_MAX 32

struct mp_address {
        char *host;        /* owned; no brackets around an IPv6 literal */
        uint16_t tcp_port; /* 0: [mp] tcp_port */
};

struct mp_addresses {
        struct mp_address *v; /* owned, n entries */
        size_t n;
        size_t current;  /* index of the address tried now */
        size_t failures; /* consecutive failures since the last success */
};

/* Parses a comma-separated list (spaces around entries ignored). On error
 * returns -EINVAL with *reason naming the fault and leaves *ret untouched;
 * -ENOMEM. Duplicates are refused: they would skew the spread. */
int mp_addresses_parse(const char *list, struct mp_addresses *ret, const char **reason);

/* Frees the entries; leaves *a empty. */
void mp_addresses_done(struct mp_addresses *a);

/* Shuffles the entries with a generator seeded from seed (any text; a NULL
 * or empty seed keeps the written order) and starts at the first. The same
 * seed and list give the same order on every run. */
void mp_addresses_order(struct mp_addresses *a, const char *seed);

/* The address to try now. */
const struct mp_address *mp_addresses_current(const struct mp_addresses *a);

/* The current address failed: moves to the next one. Returns true when
 * this failure completes a round (every address failed in turn since the
 * last success): the caller then applies the backoff. */
bool mp_addresses_failed(struct mp_addresses *a);

/* A connection was confirmed at the current address: a new round starts. */
void mp_addresses_succeeded(struct mp_addresses *a);
