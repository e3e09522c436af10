/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Internal to scheduler/: the Policy document (docs/PROTOCOL.md section 7):
 * verify, then parse and validate, then store; and load a stored one, which
 * is verified again every time it is used.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/scheduler.h"

struct tether_key;

#define POLICY_TIMEOUT_DEFAULT_SEC 600u
#define POLICY_MAX_APPLICATIONS 1024u
#define POLICY_MAX_BYTES (4u * 1024u * 1024u)

enum policy_intent {
        POLICY_INTENT_REQUIRED,
        POLICY_INTENT_UNINSTALL,
};

struct policy_app {
        char *id;
        char *version; /* NULL when absent */
        enum policy_intent intent;
        char *detect;
        char *install;   /* NULL when absent */
        char *uninstall; /* NULL when absent */
        uint64_t timeout_sec;
};

struct policy {
        char *policy_id;
        char *timestamp;
        char *user;                                  /* NULL for the machine scope */
        uint64_t interval_sec[TETHER_CYCLE_MAX + 1]; /* 0: not overridden */
        struct policy_app *apps;
        size_t n_apps;
};

struct policy *policy_free(struct policy *p); /* accepts NULL */

/*
 * Verifies sig over body (type 0x50) with key, and only then parses and
 * validates it. user NULL expects Scope="machine"; otherwise Scope="user"
 * and User=user. On failure returns a negative errno (-EBADMSG for a bad
 * signature or an invalid document) and writes the reason into reason.
 * On success *ret is owned by the caller.
 */
int policy_verify_parse(const struct tether_key *key, const uint8_t *body, size_t len, const uint8_t *sig,
                        size_t sig_len, const char *user, struct policy **ret, char *reason,
                        size_t reason_size);

/* Paths: <state>/policies/machine.xml, <state>/policies/user/<user>.xml;
 * the signature beside it with ".sig" appended. ret owned by the caller. */
int policy_path(const char *state_dir, const char *user, char **ret);

/* Writes body and signature through temporary files, fsync, rename, and
 * fsync of the directory. The pair is not one atomic unit, so a crash
 * between the two renames leaves a pair that fails verification, which
 * policy_load() then refuses: never a policy the site did not sign. */
int policy_store(const char *state_dir, const char *user, const uint8_t *body, size_t len,
                 const uint8_t *sig, size_t sig_len);

/* Loads and verifies the stored policy. -ENOENT when there is none;
 * -EBADMSG (with reason) when it does not verify or validate. */
int policy_load(const struct tether_key *key, const char *state_dir, const char *user, struct policy **ret,
                char *reason, size_t reason_size);

/* Removes the stored policy and its signature (ENOENT is success). */
int policy_remove(const char *state_dir, const char *user);

/* True for a user name that is safe as a file name and in a URL:
 * [A-Za-z0-9_][A-Za-z0-9._-]{0,31}. */
bool policy_user_name_valid(const char *name);
