/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What a policy fetch (PROTOCOL-v1 section 6) gave: the channel process
 * fetches, the scheduler consumes, privsep carries it between them. Kept
 * here, on the wire's side, so that none of the three includes another's
 * header for it. */

enum tether_policy_result {
        TETHER_POLICY_NEW = 0,   /* body and signature follow */
        TETHER_POLICY_UNCHANGED, /* 304: keep the stored one */
        TETHER_POLICY_NONE,      /* 404: the MP has no policy for this scope */
        TETHER_POLICY_ERROR,     /* the fetch failed; error says how */
};
