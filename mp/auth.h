/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The console's accounts and credentials.
 *
 *  - Users are stored documents of kind "user": {"password_hash": argon2id
 *    encoded string, "grants": [{"role", "collection"}], "created"}.
 *    Passwords are hashed with libargon2 (argon2id, 19 MiB, t=2: OWASP's
 *    minimum), verified in constant time by argon2.
 *  - Sessions live in memory (a restart logs everybody out): a random
 *    256-bit cookie value and a CSRF token, 30 minutes idle, 12 hours at
 *    most. Only the cookie's SHA-256 is kept.
 *  - API tokens are shown once ("tmpt_" + 43 base64url characters) and
 *    stored as documents of kind "token" named by their SHA-256, with the
 *    user, an expiry and a label.
 *  - Failed logins are counted per account and per address: 5 failures
 *    within 15 minutes lock that account or address out for the rest of
 *    the window (429 with Retry-After), whether or not the next password
 *    is right.
 *
 * Ownership: struct mp_auth is its creator's; strings returned are the
 * caller's.
 */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "mp/store.h"

#define MP_AUTH_SECRET_LEN 65 /* 64 hex digits and a NUL */
#define MP_AUTH_MAX_FAILURES 5
#define MP_AUTH_WINDOW_SEC (15 * 60)
#define MP_AUTH_IDLE_SEC (30 * 60)
#define MP_AUTH_MAX_AGE_SEC (12 * 3600)

struct mp_auth;

int mp_auth_new(struct mp_auth **ret);
struct mp_auth *mp_auth_free(struct mp_auth *a);

/* User names: 1..64 of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool mp_auth_name_valid(const char *name);
int mp_auth_password_hash(const char *password, char **ret_encoded);
/* 0: matches; -EACCES: does not. */
int mp_auth_password_verify(const char *encoded, const char *password);
/* A new random password (20 base64url characters). */
int mp_auth_password_generate(char **ret);

/* Creates a user holding role on collection. password NULL: one is
 * generated and returned in *ret_password (shown once). -EEXIST: taken.
 * -EINVAL: bad name; -ENOENT: no such role or collection. */
int mp_auth_user_add(struct mp_store *st, const char *name, const char *role, const char *collection,
                     const char *password, time_t now, char **ret_password);

/* Checks a login. 0: *ret_session and *ret_csrf are the new session's
 * cookie value and CSRF token. -EACCES: wrong user or password (counted).
 * -EBUSY: locked out; *ret_retry_after is in seconds. */
int mp_auth_login(struct mp_auth *a, struct mp_store *st, const char *user, const char *password,
                  const char *address, time_t now, char ret_session[MP_AUTH_SECRET_LEN],
                  char ret_csrf[MP_AUTH_SECRET_LEN], unsigned *ret_retry_after);
/* The session of a cookie value; refreshes its idle time. *ret_user and
 * *ret_csrf point into the session (valid until the next auth call).
 * -ENOENT: unknown, expired or logged out. */
int mp_auth_session(struct mp_auth *a, const char *cookie, time_t now, const char **ret_user,
                    const char **ret_csrf);
int mp_auth_logout(struct mp_auth *a, const char *cookie);
/* Ends every session of a user (user removed, password changed). */
void mp_auth_logout_user(struct mp_auth *a, const char *user);
/* Whether a CSRF token is the session's (constant time). */
bool mp_auth_csrf_ok(const char *want, const char *got);

/* Creates an API token for user, valid ttl seconds; *ret_token is shown
 * once; *ret_id (SHA-256 hex) names it from then on. */
int mp_auth_token_new(struct mp_store *st, const char *user, const char *label, int64_t ttl, time_t now,
                      char **ret_token, char ret_id[MP_AUTH_SECRET_LEN]);
/* The user of a bearer token. -ENOENT: unknown; -EKEYEXPIRED: expired. */
int mp_auth_token_check(struct mp_store *st, const char *token, time_t now, char **ret_user);
