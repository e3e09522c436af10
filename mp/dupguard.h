/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Duplicate-identity detection: two devices that share one ClientID and one
 * device key (a disk image taken after the agent had run, cloned with its
 * machine-id). The contract's conflict rule (one ClientID, another key)
 * cannot see them; their behaviour gives them away. A device replaces its
 * own live connection rarely (restarted before the MP noticed the old TCP
 * connection dead); two devices behind one identity replace each other over
 * and over, each reconnecting as soon as the other took its place.
 *
 * So the MP counts, per ClientID, the sign-ins that replace a connection
 * that was still live (it received a frame within the keepalive interval,
 * or it is a held HTTPS poll). The `threshold`-th such replacement within
 * `window` is refused as a conflict, and the ClientID stays flagged for
 * `hold` after the last refusal: while it is flagged, every sign-in that
 * would replace a live connection is refused at once (the established
 * connection keeps working). Replacing a dead connection is never counted
 * and never refused: the established device is gone, the newcomer may
 * take over.
 *
 * Pure: the caller passes the clock in. Keys are ClientID strings (copied).
 * Ownership: the guard is owned by its creator.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_DUPGUARD_THRESHOLD 3
#define MP_DUPGUARD_WINDOW_USEC (600ULL * 1000000ULL)
#define MP_DUPGUARD_HOLD_USEC (3600ULL * 1000000ULL)
/* RetryAfterSeconds of the GOODBYE(conflict) that refuses a newcomer. */
#define MP_DUPGUARD_RETRY_AFTER 900u

struct mp_dupguard;

struct mp_dupguard_config {
        unsigned threshold;   /* >= 2; the threshold-th live replacement is refused */
        uint64_t window_usec; /* replacements older than this are forgotten */
        uint64_t hold_usec;   /* how long a flagged ClientID stays flagged */
};

/* cfg NULL: the defaults above. -EINVAL on a threshold below 2 or a zero
 * window. */
int mp_dupguard_new(const struct mp_dupguard_config *cfg, struct mp_dupguard **ret);
struct mp_dupguard *mp_dupguard_free(struct mp_dupguard *g);

enum mp_dupguard_verdict {
        MP_DUPGUARD_REPLACE = 0, /* the newcomer replaces the old connection */
        MP_DUPGUARD_CONFLICT,    /* refuse the newcomer; the old connection stays */
};

/*
 * A sign-in of client_id arrives while another connection of it exists.
 * old_live: that connection is still live. Returns 0 with the verdict, or
 * -ENOMEM. *ret_count (may be NULL) is the number of live replacements in
 * the window, this one included (0 when not counted: the old connection was
 * dead, or the ClientID was already flagged).
 */
int mp_dupguard_replacement(struct mp_dupguard *g, const char *client_id, bool old_live, uint64_t now_usec,
                            enum mp_dupguard_verdict *ret, unsigned *ret_count);

/* Is client_id flagged as a duplicate identity now? */
bool mp_dupguard_flagged(const struct mp_dupguard *g, const char *client_id, uint64_t now_usec);

/* Forgets ClientIDs with no replacement in the window and no flag. */
void mp_dupguard_expire(struct mp_dupguard *g, uint64_t now_usec);

/* ClientIDs tracked (for tests and `status`). */
size_t mp_dupguard_size(const struct mp_dupguard *g);
