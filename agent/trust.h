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
 */

#include <stdbool.h>
#include <stddef.h>

#include "transport/diag.h"
#include "transport/frame.h"
#include "transport/message.h"

struct tether_key;
struct tether_config;

struct site_trust;

/* err (256 bytes) says why on failure. The trust owns its key. */
int site_trust_new(const struct tether_config *config, const char *pin_dir, struct site_trust **ret,
                   char err[256]);
struct site_trust *site_trust_free(struct site_trust *t); /* accepts NULL */

/* The trusted key, or NULL while none is known (borrowed). */
const struct tether_key *site_trust_key(const struct site_trust *t);

/*
 * Verifies and parses a SIGNIN_CONFIRM frame. With a trusted key, the frame
 * must verify with it. Without one, the key comes from the (unverified)
 * body's SitePublicKey: it must match the configured fingerprint (or TOFU
 * must be on), and the frame must verify with it; it is then pinned and
 * *ret_learned set. Returns 0 with *ret (owned by the caller), -EBADMSG
 * (diag/why say why), -EKEYREJECTED (not the configured key), or another
 * negative errno.
 */
int site_trust_open_confirm(struct site_trust *t, const struct tether_frame *frame, struct tether_msg **ret,
                            bool *ret_learned, char why[256]);
