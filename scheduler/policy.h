/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Internal to scheduler/: the Policy document (docs/PROTOCOL.md section 7):
 * verify, then parse and validate, then store; and load a stored one, which
 * is verified again every time it is used.
 *
 * state_dir here is the root half's own directory (root-owned, 0700, in no
 * directory another user can write: agent/dirs.h), never the channel
 * process's state directory: root never consumes a file the channel user
 * can write.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "scheduler/scheduler.h"

struct tether_key;

#define POLICY_TIMEOUT_DEFAULT_SEC 600u
#define POLICY_MAX_APPLICATIONS 1024u
#define POLICY_MAX_BYTES (4u * 1024u * 1024u)
#define POLICY_TIMESTAMP_SIZE 21u /* "YYYY-MM-DDTHH:MM:SSZ" and NUL */

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
        char *user;                                      /* NULL for the machine scope */
        uint64_t interval_sec[TETHER_TASK_TYPE_MAX + 1]; /* 0: not overridden */
        struct policy_app *apps;
        size_t n_apps;
        bool empty; /* no child element at all: the signed "no policy" (section 7) */
};

struct policy *policy_free(struct policy *p); /* accepts NULL */
DEFINE_TRIVIAL_CLEANUP_FUNC(struct policy *, policy_free);

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

/*
 * Parses and validates body WITHOUT checking any signature: only for bytes
 * that policy_verify_parse() has verified, and for the fuzz target and the
 * tests. Same results as policy_verify_parse() otherwise.
 */
int policy_parse(const uint8_t *body, size_t len, const char *user, struct policy **ret, char *reason,
                 size_t size);

/* A sealed, read-only memfd holding exactly body, positioned at 0: what a
 * hook or command gets as fd 3 (TETHER_POLICY=/dev/fd/3). Returns the fd
 * (owned by the caller, O_CLOEXEC) or a negative errno. */
int policy_seal(const uint8_t *body, size_t len);

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
 * -EBADMSG (with reason) when it does not verify or validate. With ret_fd,
 * also a policy_seal() of the verified bytes (owned by the caller). */
int policy_load(const struct tether_key *key, const char *state_dir, const char *user, struct policy **ret,
                int *ret_fd, char *reason, size_t reason_size);

/* The rollback floor: the newest TimeStamp accepted for the scope, in
 * <state>/floor/, kept even when the policy file is gone. get: 0 with ret
 * filled, -ENOENT when none was ever accepted, -EBADMSG when the file is
 * unreadable (callers refuse every policy then). raise: stores timestamp
 * durably unless the floor is already at or past it. */
int policy_floor_get(const char *state_dir, const char *user, char ret[POLICY_TIMESTAMP_SIZE]);
int policy_floor_raise(const char *state_dir, const char *user, const char *timestamp);

/* True for a user name that is safe as a file name and in a URL:
 * [A-Za-z0-9_][A-Za-z0-9._-]{0,31}. */
bool policy_user_name_valid(const char *name);
