/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The message codec of PROTOCOL-v1 section 3: one typed struct per message,
 * a builder that writes the exact XML, and a strict parser (libxml2 with no
 * DTD, no entities, no network; see transport/xml.h).
 *
 * Ownership: a struct tether_msg returned by a parser or filled by the
 * caller owns every string it points to; tether_msg_free() releases all of
 * it. Builders never take ownership of their input.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/tasktype.h"
#include "transport/diag.h"
#include "transport/frame.h"
#include "transport/guid.h"

struct tether_key;

enum tether_signin_status {
        TETHER_SIGNIN_APPROVED = 1,
        TETHER_SIGNIN_PENDING,
        TETHER_SIGNIN_REJECTED,
};

enum tether_goodbye_reason {
        TETHER_GOODBYE_SHUTDOWN = 1,
        TETHER_GOODBYE_CONFLICT,
        TETHER_GOODBYE_UNAUTHORIZED,
        TETHER_GOODBYE_PROTOCOL_ERROR,
        TETHER_GOODBYE_OVERLOADED,
};

#define TETHER_MAX_TASK_TYPES 16u
/* The most SiteKeyEndorsement elements a SIGNIN_CONFIRM may carry. */
#define TETHER_MAX_ENDORSEMENTS 64u

/* Version 1.1 (contract section 7.3): SIGNIN's KeyRollover. Both strings
 * NULL when absent. */
struct tether_key_rollover {
        char *previous_public_key; /* base64 DER SubjectPublicKeyInfo of the old key */
        char *signature;           /* base64, by the old key (transport/rotation.h) */
};

/* Version 1.1 (section 7.2): one SiteKeyEndorsement of SIGNIN_CONFIRM. */
struct tether_endorsement {
        uint32_t serial;
        char not_before[TETHER_TIMESTAMP_LEN]; /* the exact 20 characters signed */
        time_t not_before_time;
        char *public_key; /* base64 DER SubjectPublicKeyInfo of the new key */
        char *signature;  /* base64, by the previous key of the chain */
};

struct tether_signin {
        time_t timestamp;
        char client_id[TETHER_GUID_LEN];
        char *version;
        char *hostname;
        char *public_key; /* base64 DER SubjectPublicKeyInfo */
        unsigned n_task_types;
        uint32_t task_types[TETHER_MAX_TASK_TYPES];
        /* Extension (docs/PROTOCOL.md): the enrolment token for the MP's
         * "token" approval mode, or NULL. Old peers ignore it. */
        char *enrolment_token;
        /* Version 1.1: <Feature>1.1</Feature> in Capabilities. */
        bool feature_1_1;
        struct tether_key_rollover rollover;
};

struct tether_signin_confirm {
        time_t timestamp;
        uint32_t message_version;
        enum tether_signin_status status;
        uint32_t keepalive_seconds;
        char *site_public_key; /* optional, NULL when absent */
        /* Version 1.1: the site key chain, oldest first (owned). */
        struct tether_endorsement *endorsements;
        unsigned n_endorsements;
};

struct tether_push {
        time_t timestamp;
        uint64_t push_id;
        uint64_t task_id;
        char task_guid[TETHER_GUID_LEN];
        uint32_t task_type; /* any number: unknown types are answered NotSupported */
        char *task_param;   /* never NULL after parsing; "" when empty */
        time_t expires;
        char client_id[TETHER_GUID_LEN]; /* "" when absent */
};

struct tether_ack {
        char task_guid[TETHER_GUID_LEN];
};

struct tether_response {
        time_t timestamp;
        uint64_t push_id;
        uint64_t task_id;
        uint32_t return_code;
        char task_guid[TETHER_GUID_LEN];
        char client_id[TETHER_GUID_LEN];
        char *detail; /* never NULL after parsing; at most TETHER_DETAIL_MAX bytes */
};

struct tether_keepalive {
        time_t timestamp;
};

struct tether_goodbye {
        enum tether_goodbye_reason reason;
        uint32_t retry_after_seconds;
};

/* One message; type is a frame type and selects the union member
 * (PUSH_ACK and RESPONSE_ACK both use ack). */
struct tether_msg {
        uint8_t type;
        union {
                struct tether_signin signin;
                struct tether_signin_confirm signin_confirm;
                struct tether_push push;
                struct tether_ack ack;
                struct tether_response response;
                struct tether_keepalive keepalive;
                struct tether_goodbye goodbye;
        };
};

/* Allocates a zeroed message of the given frame type. */
int tether_msg_new(uint8_t type, struct tether_msg **ret);
struct tether_msg *tether_msg_free(struct tether_msg *msg); /* accepts NULL */

/* Writes the XML body for msg. ret is a NUL-terminated buffer owned by the
 * caller. RESPONSE's first three children are PushID, TaskID, ReturnCode,
 * as in the seeds. Returns -EINVAL for a field the contract forbids (bad
 * GUID, Detail over 4 KiB, unknown enum value). */
int tether_msg_build(const struct tether_msg *msg, char **ret, size_t *ret_len);

/* Parses a body that must be the document of the given frame type. Returns
 * -EBADMSG with diag filled for anything the contract rejects. */
int tether_msg_parse(uint8_t type, const uint8_t *body, size_t len, struct tether_msg **ret,
                     struct tether_diag *diag);

/*
 * Builds, signs (for signed types; signer may be NULL for unsigned types and
 * must not be NULL for signed ones) and frames msg. ret is owned by the
 * caller.
 */
int tether_msg_seal(const struct tether_msg *msg, const struct tether_key *signer, uint32_t max_body,
                    uint8_t **ret_frame, size_t *ret_len);

/*
 * Verify-then-parse. For a signed type, verifies frame's signature with
 * peer_key before the body is touched: -EBADMSG with
 * TETHER_DIAG_MISSING_SIGNATURE or TETHER_DIAG_BAD_SIGNATURE, and *ret
 * untouched. peer_key may be NULL only for unsigned types. Then parses.
 */
int tether_msg_open(const struct tether_frame *frame, const struct tether_key *peer_key,
                    struct tether_msg **ret, struct tether_diag *diag);

/* The verify half of tether_msg_open(), for a caller that times the two
 * halves apart: 0 when the frame's type needs no signature or its signature
 * verifies, the same errors as tether_msg_open() otherwise. */
int tether_msg_verify(const struct tether_frame *frame, const struct tether_key *peer_key,
                      struct tether_diag *diag);

/* Names for logs (the task types' and return codes': common/tasktype.h). */
const char *tether_goodbye_reason_name(enum tether_goodbye_reason r); /* "protocol-error" */
const char *tether_signin_status_name(enum tether_signin_status s);   /* "Approved" */
