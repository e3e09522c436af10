/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The device identity (channel process): the device key (ECDSA P-256), its
 * self-signed certificate (CN=ClientID) for mutual TLS, and the ClientID.
 * Stored under <state>/identity/:
 *   device.key          private key, 0600
 *   device.crt          certificate, PEM
 *   client-id           the ClientID
 *   machine-id.sha256   SHA-256 of the machine-id file the identity is bound to
 *   previous.key        during a key rotation (PROTOCOL-v1 7.3): the old
 *                       device key, kept until the MP confirms the rollover
 *   device.next.*       a rotation's new key and certificate before they
 *                       replace device.key and device.crt
 * The hash file is written last, so an identity is complete only once it
 * exists. When the machine-id hash differs (a cloned golden image), or the
 * identity is incomplete or inconsistent, a new identity is made and the
 * reason is returned for the log.
 */

#include <stdbool.h>
#include <time.h>

#include "transport/guid.h"

struct tether_key;

struct tether_identity {
        char client_id[TETHER_GUID_LEN];
        struct tether_key *key; /* owned */
        char *cert_pem;         /* owned */
        char machine_hash[65];
        /* The key being rotated away, until a SIGNIN_CONFIRM answers the
         * rollover (owned), or NULL. */
        struct tether_key *previous_key;
        time_t key_created; /* device.key's modification time */
};

/* Why load_or_create made a new identity. */
enum identity_origin {
        IDENTITY_LOADED = 0,
        IDENTITY_CREATED_FIRST,   /* nothing stored */
        IDENTITY_CREATED_CLONE,   /* machine-id changed */
        IDENTITY_CREATED_DAMAGED, /* stored identity incomplete or inconsistent */
        IDENTITY_CREATED_RESET,   /* asked for */
};

/*
 * Loads the identity under dir (<state>/identity), bound to machine_id_file,
 * or creates a new one. *ret is owned by the caller (identity_free).
 * *ret_origin says what happened; reason (may be NULL, 256 bytes) explains a
 * new identity in words for the log.
 */
int identity_load_or_create(const char *dir, const char *machine_id_file, struct tether_identity **ret,
                            enum identity_origin *ret_origin, char reason[256]);

/* Makes a new identity on purpose (tetherctl identity reset). */
int identity_reset(const char *dir, const char *machine_id_file, struct tether_identity **ret);

/* Rotates the device key (same ClientID): the old key is kept as
 * previous.key, then the new key and certificate replace device.key and
 * device.crt, so that a crash at any point leaves either the old identity
 * or the new one with its rollover pending. *ret is the new identity, with
 * previous_key set. -EBUSY while an earlier rotation is unconfirmed. */
int identity_rotate(const char *dir, const struct tether_identity *cur, struct tether_identity **ret);

/* The MP confirmed the rollover: destroys previous.key. */
int identity_rollover_done(const char *dir, struct tether_identity *id);

struct tether_identity *identity_free(struct tether_identity *id); /* accepts NULL */

/* SHA-256 hex of the machine-id file's content (trailing whitespace
 * ignored). -ENOENT when missing. */
int identity_machine_hash(const char *machine_id_file, char ret[65]);

const char *identity_origin_name(enum identity_origin o);
