/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Device sync: an optional outbound connector (DeviceSyncURL=) that posts
 * the changed device records in batches to an HTTPS URL every N minutes,
 * signed with the site key, retried with backoff (docs/tether-mp.md,
 * "Device sync").
 *
 * It runs on the MP's sd-event loop: libcurl's multi interface with its
 * sockets and timer as loop sources (no threads), the store read on the
 * loop's thread like every other request. What was sent is remembered in
 * <state-dir>/devsync.json (ClientID -> digest of the record last accepted
 * by the receiver), written atomically after each accepted batch: a record
 * is sent again only when it changed, or when its batch was not accepted.
 *
 * Signature: Tether-Signature: base64 of tether_sign(site key,
 * MP_DEVSYNC_SIG_TYPE, body), i.e. over "TETHER1" || 0x44 || body, the
 * protocol's signature scheme with a type byte no frame uses.
 *
 * Ownership: the server's (mp_devsync_free).
 */

struct mp_server;
struct mp_devsync;

#define MP_DEVSYNC_SIG_TYPE 0x44u

/* Starts the connector when srv->cfg->devsync_url is set (*ret NULL if not). */
int mp_devsync_new(struct mp_server *srv, struct mp_devsync **ret);
struct mp_devsync *mp_devsync_free(struct mp_devsync *ds);
