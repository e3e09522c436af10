/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The session layer of the channel process: what the frames mean
 * (PROTOCOL-v1 sections 3 to 5). It makes the signed SIGNIN, verifies and
 * handles every received frame, keeps tasks and responses in the spool,
 * and talks to the link (agent/channel.h) and the scheduler half only
 * through the ops below, so that it has no event loop of its own.
 *
 * Ownership: the session borrows the trust, spool and device key for its
 * whole life; frames passed to session_on_frame() become its own.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tasktype.h"
#include "transport/frame.h"
#include "transport/guid.h"

/* GOODBYE's RetryAfterSeconds is honoured up to this (the Rejected wait):
 * a larger value, up to 2^32-1 s, would keep the device away for ever. */
#define SESSION_RETRY_AFTER_MAX (15u * 60u)
/* Answers to PUSHes whose signature failed are kept in the spool (as
 * "U-<TaskGUID>") to be re-sent until acknowledged; a forger can send any
 * number, so at most this many and this many bytes are kept, the oldest
 * dropped first. */
#define SESSION_UNAUTH_MAX 64u
#define SESSION_UNAUTH_BYTES_MAX (256u * 1024u)

struct tether_key;
struct tether_spool;
struct site_trust;
struct session;
struct pushstats;

struct session_ops {
        /* Queue one encoded frame to the MP; -ENOTCONN when down. */
        int (*send)(void *userdata, const uint8_t *frame, size_t len);
        /* SIGNIN_CONFIRM Approved. */
        void (*confirmed)(void *userdata, uint32_t keepalive_seconds);
        /* Close and reconnect no sooner than min_delay_seconds. */
        void (*reconnect)(void *userdata, uint32_t min_delay_seconds, const char *reason);
        /* Hand an accepted task to the scheduler half. */
        int (*run)(void *userdata, uint32_t cycle, const char *task_guid, const char *param);
        /* A site key became trusted (learned), or the site key chain grew:
         * forward the root (serial 1) and the chain to the scheduler half. */
        void (*site_key)(void *userdata, const struct tether_key *key);
        /* A SIGNIN_CONFIRM Approved answered a SIGNIN with KeyRollover: the
         * old device key may go (may be NULL). */
        void (*rollover_done)(void *userdata);
        /* Queue depths or state changed (for STATUS= lines). */
        void (*changed)(void *userdata);
        /* The MP's address and port as the link names it ("host:port"), for
         * the protocol-error lines (contract 7.6); NULL or "" when unknown. */
        const char *(*peer)(void *userdata);
};

struct session_config {
        const char *client_id;               /* borrowed */
        const struct tether_key *device_key; /* borrowed */
        const char *hostname;
        const char *enrolment_token; /* or NULL */
        uint32_t max_frame;
        bool enabled[TETHER_TASK_TYPE_MAX + 1]; /* by task type; false: NotSupported (3) */
};

int session_new(const struct session_config *config, struct site_trust *trust, struct tether_spool *spool,
                const struct session_ops *ops, void *userdata, struct session **ret);
struct session *session_free(struct session *s); /* accepts NULL */

/* Replaces the identity (after tetherctl identity reset); strings copied. */
int session_set_identity(struct session *s, const char *client_id, const struct tether_key *device_key);

/* A device key rotation waiting for the MP (PROTOCOL-v1 7.3): every SIGNIN
 * carries KeyRollover signed by old_key (borrowed) until an Approved
 * SIGNIN_CONFIRM answers one. NULL: none. */
void session_set_rollover(struct session *s, const struct tether_key *old_key);

/* Which cycles are enabled (index 1..TETHER_TASK_TYPE_MAX), after a reload. */
void session_set_enabled(struct session *s, const bool enabled[TETHER_TASK_TYPE_MAX + 1]);

/* A fresh signed SIGNIN frame, owned by the caller. */
int session_make_signin(struct session *s, uint8_t **ret_frame, size_t *ret_len);

/* Handles one received frame (takes ownership). */
void session_on_frame(struct session *s, struct tether_frame *frame);

/* PUSH frames refused because the spool was full, held to try again. */
size_t session_held(const struct session *s);
/* Tries the held frames again (the channel process calls it from a timer
 * while session_held() > 0). Returns how many are still held. */
size_t session_retry_held(struct session *s);

/* The transport went down: no longer approved until the next confirm. */
void session_on_disconnect(struct session *s);

/* The scheduler half answered a task (task_guid "" for a local trigger):
 * builds, signs and persists the RESPONSE, then sends it. */
int session_task_done(struct session *s, uint32_t cycle, const char *task_guid, uint32_t return_code,
                      const char *detail);

/* Hands every accepted task without a response to the scheduler again
 * (after a restart). Returns how many. */
int session_resume(struct session *s);

/* The per-stage timing of the PUSHes handled (agent/pushstats.h), owned by
 * the session. */
const struct pushstats *session_pushstats(const struct session *s);

bool session_approved(const struct session *s);
const char *session_last_error(const struct session *s); /* "" when none */
