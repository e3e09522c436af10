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
 * The hash file is written last, so an identity is complete only once it
 * exists. When the machine-id hash differs (a cloned golden image), or the
 * identity is incomplete or inconsistent, a new identity is made and the
 * reason is returned for the log.
 */

#include <stdbool.h>

#include "transport/guid.h"

struct tether_key;

struct tether_identity {
        char client_id[TETHER_GUID_LEN];
        struct tether_key *key; /* owned */
        char *cert_pem;         /* owned */
        char machine_hash[65];
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

struct tether_identity *identity_free(struct tether_identity *id); /* accepts NULL */

/* SHA-256 hex of the machine-id file's content (trailing whitespace
 * ignored). -ENOENT when missing. */
int identity_machine_hash(const char *machine_id_file, char ret[65]);

const char *identity_origin_name(enum identity_origin o);
