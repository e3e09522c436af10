/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Trust in the site key (PROTOCOL-v1 section 4), in the channel process.
 * One of three modes, from the configuration:
 *   [trust] site_key = PEM file             the key itself;
 *   [trust] site_key_fingerprint = hex      learn it from SIGNIN_CONFIRM's
 *                                           SitePublicKey, check the
 *                                           fingerprint, verify the confirm;
 *   [trust] trust_on_first_use = yes        pin the first key seen.
 * A learned key is pinned to <pin_dir>/site.pub, so later starts trust it at
 * once (and a fingerprint still has to match).
 *
 * Rotation (PROTOCOL-v1 7.2): that key is serial 1; the endorsements that
 * SIGNIN_CONFIRM carries are walked from the newest trusted key
 * (transport/rotation.h), persisted atomically to <pin_dir>/site-chain
 * before use, and verified again at every start. The verifying key accepts
 * the current key (the newest whose NotBefore has come) and, for 7 days
 * after a confirm signed by it first verified, the ones before it.
 */

#include <stdbool.h>
#include <stddef.h>

#include "transport/diag.h"
#include "transport/frame.h"
#include "transport/message.h"

struct tether_key;
struct tether_config;
struct tether_site_chain;

struct site_trust;

/* err (256 bytes) says why on failure. The trust owns its key. */
int site_trust_new(const struct tether_config *config, const char *pin_dir, struct site_trust **ret,
                   char err[256]);
struct site_trust *site_trust_free(struct site_trust *t); /* accepts NULL */

/* The key to verify PUSH frames with now (accepts every trusted key, the
 * current one first), or NULL while none is known (borrowed, valid until
 * the next call). */
const struct tether_key *site_trust_key(struct site_trust *t);
/* Serial 1 (configured or pinned), or NULL (borrowed). */
const struct tether_key *site_trust_root(const struct site_trust *t);
/* The chain from serial 1, or NULL while no key is known (borrowed). */
const struct tether_site_chain *site_trust_chain(const struct site_trust *t);
/* The chain's text form for the scheduler process; *ret NULL and *ret_len
 * 0 when there is no link beyond serial 1. *ret owned by the caller. */
int site_trust_chain_text(const struct site_trust *t, char **ret, size_t *ret_len);

/*
 * Verifies and parses a SIGNIN_CONFIRM frame. With a trusted key, the frame
 * must verify with it. Without one, the key comes from the (unverified)
 * body's SitePublicKey: it must match the configured fingerprint (or TOFU
 * must be on), and the frame must verify with it; it is then pinned and
 * *ret_learned set. New links of the site key chain in the body (only the
 * chain is read before the signature verifies, and each link is verified
 * from a trusted key) are persisted and also set *ret_learned; a refused
 * link is logged with its reason and changes nothing. Returns 0 with *ret (owned by the caller), -EBADMSG
 * (diag/why say why), -EKEYREJECTED (not the configured key), or another
 * negative errno.
 */
int site_trust_open_confirm(struct site_trust *t, const struct tether_frame *frame, struct tether_msg **ret,
                            bool *ret_learned, char why[256]);
