/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key rotation at the MP (PROTOCOL-v1 7.2, 7.3), beside the sign-in of
 * channel.c: a device's KeyRollover, and the site key chain sent to the
 * connected agents. The chain's files are in state.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mp/mp.h"
#include "transport/rotation.h"
#include "transport/sign.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_key *, tether_key_free);

/* A SIGNIN with KeyRollover (section 7.3): the ClientID moves from
 * PreviousPublicKey to the key of this connection when the proof verifies
 * and PreviousPublicKey is the bound key. Returns 0 (rebound, or already
 * rebound by an earlier try of the same rollover), 1 when refused as a
 * conflict (logged and recorded), or < 0. */
int mp_rollover(struct mp_conn *c, const struct tether_signin *m, const struct mp_signin_request *req) {
        struct mp_server *srv = c->srv;
        _cleanup_(tether_key_freep) struct tether_key *old = NULL;
        _cleanup_(freep) char *bound = NULL;
        char old_fpr[TETHER_FINGERPRINT_LEN] = "?";
        enum mp_device_status status;
        const char *why = NULL;
        int r;

        r = mp_registry_device(srv->reg, req->client_id, &status, &bound);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r == 0 && strcmp(bound, req->public_key) == 0)
                return 0; /* rebound already; the agent had no confirm yet */
        if (tether_key_from_spki_base64(m->rollover.previous_public_key, &old) < 0)
                why = "PreviousPublicKey is not a usable key";
        else if (r == -ENOENT)
                why = "the ClientID is not known here (an unknown old key)";
        else if (strcmp(bound, m->rollover.previous_public_key) != 0)
                why = "the ClientID is bound to another key than PreviousPublicKey";
        else if (tether_rollover_verify(old, req->client_id, c->peer_key, m->rollover.signature) < 0)
                why = "the rollover is not signed by the bound key";
        if (old)
                (void)tether_key_fingerprint(old, old_fpr);
        if (why) {
                log_warning("Conflict: key rollover of ClientID '%s' ('%s') from %s to key %s refused: %s; "
                            "the binding stays as it was",
                            req->client_id, req->hostname ? req->hostname : "", c->peer, req->fingerprint,
                            why);
                r = mp_registry_key_event(srv->reg, req, old_fpr, "rollover-refused", why);
                return r < 0 ? r : 1;
        }
        r = mp_registry_rebind(srv->reg, req, m->rollover.previous_public_key, old_fpr);
        if (r < 0)
                return log_error_errno(r, "Failed to rebind '%s' to its new key: %m", req->client_id);
        log_notice(
                "Key rotation: ClientID '%s' ('%s') from %s moved from key %s to key %s (proof by the old "
                "key verified); recorded",
                req->client_id, req->hostname ? req->hostname : "", c->peer, old_fpr, req->fingerprint);
        return 0;
}

void mp_site_key_signin(struct mp_server *srv, const char *client_id, time_t now) {
        int r;

        /* Signing in again after a confirm by key N says the agent took N:
         * recorded for site-key status (section 7.2). */
        r = mp_registry_site_key_sent(srv->reg, client_id, mp_site_serial(srv), now);
        if (r < 0)
                log_warning_errno(r, "Failed to record the site key seen by '%s', ignoring: %m", client_id);
}

struct broadcast {
        struct mp_server *srv;
        struct mp_buf *confirm;
        size_t sent;
};

static void broadcast_one(struct mp_session *s, void *userdata) {
        struct broadcast *b = userdata;

        if (!s->feature_1_1 || s->status != MP_DEVICE_APPROVED || !s->conn || s->conn->dead ||
            s->conn->kind != MP_CONN_CHANNEL)
                return;
        if (mp_conn_send(s->conn, b->confirm) < 0)
                return;
        s->site_serial_unacked = mp_site_serial(b->srv);
        b->sent++;
}

void mp_site_key_broadcast(struct mp_server *srv) {
        struct broadcast b = {.srv = srv};
        int r;

        r = mp_channel_confirm(srv, TETHER_SIGNIN_APPROVED, true, &b.confirm);
        if (r < 0) {
                log_error_errno(r, "Failed to build the SIGNIN_CONFIRM with the site key chain: %m");
                return;
        }
        mp_sessions_walk(srv, broadcast_one, &b);
        mp_buf_unref(b.confirm);
        log_info("Sent the site key chain (signed by serial %" PRIu32 ") to %zu connected agents",
                 mp_site_serial(srv), b.sent);
}
