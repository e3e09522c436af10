/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Private to session.c and session-push.c: the session's state and the
 * helpers both use. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/session.h"
#include "common/cleanup.h"
#include "transport/message.h"

/* How far ahead of our clock a PUSH TimeStamp may be (section 5). */
#define PUSH_FUTURE_SECONDS 300
/* The clock-skew warning threshold (section 3). */
#define SKEW_WARN_SECONDS 60
/* Rejected: wait at least this long (the link adds jitter on top). */
#define REJECTED_DELAY_SECONDS (15 * 60)
/* Prefix of the spool name of a response to a PUSH whose signature failed:
 * its TaskGUID is unverified, so it must never shadow a genuine task's. */
#define UNAUTH_PREFIX "U-"
/* PUSH frames refused because the spool could not take them (disk full),
 * kept in memory to try again, up to this many; beyond, the MP re-delivers
 * them at the next sign-in, as it does for every push without PUSH_ACK. */
#define HELD_MAX 64
/* Tasks handed to the scheduler lately, so that their answer is built
 * without reading the task back from the spool. */
#define RECENT_MAX 8

struct recent_task {
        char task_guid[TETHER_GUID_LEN];
        uint64_t push_id;
        uint64_t task_id;
        uint64_t run_sent_ns; /* when RUN went to the root process (pushstats) */
};

struct session {
        char client_id[TETHER_GUID_LEN];
        const struct tether_key *device_key;
        const struct tether_key *rollover_key; /* the old device key, while rotating */
        bool rollover_sent;                    /* the SIGNIN on this link carried it */
        char *hostname;
        char *enrolment_token;
        uint32_t max_frame;
        bool enabled[TETHER_TASK_TYPE_MAX + 1];
        struct site_trust *trust;
        struct tether_spool *spool;
        struct session_ops ops;
        void *userdata;
        bool approved;
        char last_error[256];
        struct tether_frame *held[HELD_MAX];
        size_t n_held;
        struct recent_task recent[RECENT_MAX];
        size_t recent_next;
        struct pushstats *stats; /* owned */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_msg *, tether_msg_free);

void set_error(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Tells the owner that the status changed. */
void changed(struct session *s);
const char *peer_name(struct session *s);
void send_goodbye_and_reconnect(struct session *s, const char *reason_text);
/* Sends a stored response now if the channel is up and approved. */
void send_stored(struct session *s, const char *name, const char *guid, uint32_t rc, const uint8_t *frame,
                 size_t len);
/* Builds, signs, persists, then sends a RESPONSE. name is the spool name. */
int respond(struct session *s, const char *name, uint64_t push_id, uint64_t task_id, const char *guid,
            uint32_t rc, const char *detail);
int send_ack(struct session *s, const char *guid);

/* Handles a PUSH (session-push.c); sets *framep to NULL when it keeps the
 * frame. */
void handle_push(struct session *s, struct tether_frame **framep, bool retry);
