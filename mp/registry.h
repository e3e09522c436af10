/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * tether-mp's records as the server sees them: the sign-in policy and the
 * calls the channels, the push fan-out and the admin API make, over the
 * store (mp/store.h: SQLite or PostgreSQL), which holds the rows. The
 * *_json calls (mp/admin-json.c) turn the store's plain records into the
 * admin API's JSON.
 *
 * Writes go into one open transaction that the server commits once per
 * event-loop round (group commit); mp_registry_commit() returns only when
 * the writes are durable, and the server sends nothing that acknowledges a
 * write (RESPONSE_ACK, a first SIGNIN_CONFIRM) before that.
 *
 * Ownership: the registry is owned by its opener; strings and json objects
 * returned are owned by the caller.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <json-c/json.h>

#include "mp/store.h"

struct mp_registry;

enum mp_approval_mode {
        MP_APPROVAL_AUTO = 0,
        MP_APPROVAL_MANUAL,
        MP_APPROVAL_TOKEN,
};

/* The answer to a sign-in. */
enum mp_signin_verdict {
        MP_SIGNIN_APPROVED = 0,
        MP_SIGNIN_PENDING,
        MP_SIGNIN_REJECTED,
        MP_SIGNIN_CONFLICT,
};

const char *mp_approval_mode_name(enum mp_approval_mode m);
int mp_approval_mode_from_string(const char *s, enum mp_approval_mode *ret);
const char *mp_device_status_name(enum mp_device_status s);
const char *mp_target_state_name(enum mp_target_state s);
const char *mp_signin_verdict_name(enum mp_signin_verdict v);

/* Opens (creating or migrating when needed) the store named by spec: an
 * SQLite path (":memory:" works for tests) or a PostgreSQL URL (see
 * mp_store_open()). */
int mp_registry_open(const char *spec, struct mp_registry **ret);
struct mp_registry *mp_registry_free(struct mp_registry *reg); /* rolls back nothing: commits */
/* The store underneath (owned by the registry), for mp/admin-json.c. */
struct mp_store *mp_registry_store(struct mp_registry *reg);

/* Commits the open transaction, if any (durable on return). -ECONNABORTED:
 * the transaction was lost with the database connection, so nothing
 * written since the last commit may be acknowledged. */
int mp_registry_commit(struct mp_registry *reg);
bool mp_registry_dirty(const struct mp_registry *reg);

struct mp_approval_policy {
        enum mp_approval_mode mode;
        const char *token; /* for MP_APPROVAL_TOKEN; NULL or "" accepts no token */
};

struct mp_signin_request {
        const char *client_id;
        const char *hostname;
        const char *version;
        const char *public_key;      /* base64 DER SPKI */
        const char *fingerprint;     /* sha256 hex of the SPKI */
        const char *enrolment_token; /* may be NULL */
        const char *address;
        time_t now;
};

/*
 * Decides a sign-in and records it:
 *  - an unknown ClientID is registered with this key, approved or pending
 *    according to the policy (token mode: the right token approves, a
 *    missing or wrong one leaves it pending for an administrator);
 *  - a known ClientID with the same key gets its status, and last-seen;
 *  - a known ClientID with another key is a conflict, recorded (one row per
 *    ClientID and offered key, with a count).
 * *ret_new is true when the device was registered now.
 */
int mp_registry_signin(struct mp_registry *reg, const struct mp_approval_policy *policy,
                       const struct mp_signin_request *req, enum mp_signin_verdict *ret, bool *ret_new);

/* A duplicate identity: a second device signs in with a known ClientID and
 * its bound key while the first one's connection is live (see
 * mp/dupguard.h). Recorded once per ClientID (kind "duplicate-identity"),
 * with a count, the newcomer's and the established connection's hostname
 * and peer address. */
struct mp_duplicate_record {
        const char *client_id;
        const char *fingerprint; /* the (shared) bound key's */
        const char *hostname;    /* the refused newcomer */
        const char *address;
        const char *established_hostname; /* the connection that stays */
        const char *established_address;
        time_t now;
};
int mp_registry_record_duplicate(struct mp_registry *reg, const struct mp_duplicate_record *rec);

/* Sets a device's status (an administrator's decision). -ENOENT if unknown. */
int mp_registry_set_status(struct mp_registry *reg, const char *client_id, enum mp_device_status status);
/* Reads a device's status and key. -ENOENT if unknown. ret_key may be NULL. */
int mp_registry_device(struct mp_registry *reg, const char *client_id, enum mp_device_status *ret_status,
                       char **ret_key);
/* Finds the approved device whose key has this fingerprint. -ENOENT if none. */
int mp_registry_device_by_fingerprint(struct mp_registry *reg, const char *fingerprint,
                                      char **ret_client_id);
/* The device went offline (the session ended): its last-seen time, and
 * its presence marked offline if this session still holds it. */
int mp_registry_touch(struct mp_registry *reg, const char *client_id, time_t now, const char *address);

/* All devices as a json array of objects (online state is the server's);
 * "conflict" names the kinds of conflict recorded for the device
 * ("key", "duplicate-identity", comma-separated), or is null. */
int mp_registry_devices_json(struct mp_registry *reg, json_object **ret);
int mp_registry_conflicts_json(struct mp_registry *reg, json_object **ret);
/* ClientIDs of approved devices, for "--all" fan-outs. */
int mp_registry_approved_ids(struct mp_registry *reg, char ***ret_ids, size_t *ret_n);

/* Reserves a new PushID and TaskID. */
int mp_registry_push_reserve(struct mp_registry *reg, uint64_t *ret_push_id, uint64_t *ret_task_id);
/* Stores the push and its signed frame (exact bytes sent to every device). */
int mp_registry_push_store(struct mp_registry *reg, uint64_t push_id, uint64_t task_id,
                           const char *task_guid, uint32_t task_type, const char *task_param, time_t created,
                           time_t expires, const uint8_t *frame, size_t frame_len);
int mp_registry_target_add(struct mp_registry *reg, uint64_t push_id, const char *client_id, time_t now);
/* Advances a target's state; never moves it backwards (an answer overrides
 * expiry). Returns 1 when a row changed, 0 when not. */
int mp_registry_target_advance(struct mp_registry *reg, uint64_t push_id, const char *client_id,
                               enum mp_target_state state, time_t now);
/* The same by TaskGUID (PUSH_ACK and RESPONSE name only that). */
int mp_registry_target_advance_guid(struct mp_registry *reg, const char *task_guid, const char *client_id,
                                    enum mp_target_state state, time_t now);
/* Marks every pending or delivered target of an expired push expired.
 * Returns the number of rows changed. */
int mp_registry_expire(struct mp_registry *reg, time_t now);

/* Calls cb for every unexpired push that this device has not acknowledged,
 * oldest first, with the stored frame. A negative return from cb stops. */
typedef int (*mp_push_frame_cb)(uint64_t push_id, const uint8_t *frame, size_t len, void *userdata);
int mp_registry_undelivered(struct mp_registry *reg, const char *client_id, time_t now, mp_push_frame_cb cb,
                            void *userdata);

/* Stores a verified response once per (ClientID, TaskGUID), and marks the
 * target answered. *ret_duplicate is true when it was already stored. */
int mp_registry_response_store(struct mp_registry *reg, const struct mp_response_record *rec,
                               bool *ret_duplicate);

/* A push's summary and per-device rows. -ENOENT if unknown. *ret_done is
 * true when every target is answered or expired. */
int mp_registry_push_json(struct mp_registry *reg, uint64_t push_id, time_t now, json_object **ret,
                          bool *ret_done);
int mp_registry_responses_json(struct mp_registry *reg, unsigned limit, json_object **ret);

/* Several nodes (PostgreSQL). This node's ID (default "local"): a sign-in
 * makes it the device's holder in a new session epoch, and the writes made
 * on a device's behalf (last-seen, delivery, PUSH_ACK, response) return
 * -ESTALE, recording nothing, once another node or a later sign-in holds it. */
int mp_registry_set_node(struct mp_registry *reg, const char *node_id);
const char *mp_registry_node(const struct mp_registry *reg);
/* Approved devices online at any node (several nodes' "--all"). */
int mp_registry_online_ids(struct mp_registry *reg, char ***ret_ids, size_t *ret_n);
/* The epoch of this node's latest sign-in of the device; -ENOENT if none. */
int mp_registry_epoch(struct mp_registry *reg, const char *client_id, uint64_t *ret);

/* Takes up to limit pending targets of other nodes' pushes for the devices
 * in ids (online here) and calls cb for each in the open transaction; cb
 * may take the frame (*frame = NULL). Returns how many were taken. */
typedef int (*mp_take_cb)(uint64_t push_id, const char *client_id, uint8_t **frame, size_t len,
                          void *userdata);
int mp_registry_take(struct mp_registry *reg, char *const *ids, size_t n_ids, time_t now, unsigned limit,
                     mp_take_cb cb, void *userdata);
/* This node is alive; *ret_live: nodes seen within stale_after seconds. */
int mp_registry_node_heartbeat(struct mp_registry *reg, time_t now, unsigned stale_after,
                               unsigned *ret_live);
/* The other nodes' hints (mp_store_ops.notify: "tether_push" with the
 * writing node, "tether_device" with "NODE CLIENTID"): an fd to watch (or
 * negative: none now) and its drain (number of hints, or negative). */
int mp_registry_listen_fd(struct mp_registry *reg);
int mp_registry_listen_drain(struct mp_registry *reg, mp_store_hint_cb cb, void *userdata);

/* ---- Key rotation (issue #15; PROTOCOL-v1 7.2, 7.3) -------------------
 * Over the store's site-key and key-event ops. The writes made during a
 * session (site key sent/confirmed) are guarded by the session epoch like
 * the other writes made on a device's behalf; the rebind and the refused
 * rollovers come before the sign-in claims the device, as the device's
 * first binding does, and the rebind is itself conditional on the old key. */

/* A 1.1 agent signed in: the serial of the last SIGNIN_CONFIRM it was sent
 * becomes the key it confirmed (it signed in again after it), and the
 * confirm about to be sent is signed by serial. */
int mp_registry_site_key_sent(struct mp_registry *reg, const char *client_id, uint32_t serial, time_t now);
/* The agent answered a confirm signed by serial on the same connection. */
int mp_registry_site_key_confirmed(struct mp_registry *reg, const char *client_id, uint32_t serial,
                                   time_t now);
/* counts[i] = devices whose last confirmed site key is serial i + 1. */
int mp_registry_site_key_counts(struct mp_registry *reg, uint64_t *counts, size_t n);
/* Moves req's ClientID from old_key (base64, must be the bound one) to
 * req->public_key/fingerprint, and records the rotation. -ESTALE when the
 * binding is not old_key any more. */
int mp_registry_rebind(struct mp_registry *reg, const struct mp_signin_request *req, const char *old_key,
                       const char *old_fingerprint);
/* Records a refused rollover (kind) and why. */
int mp_registry_key_event(struct mp_registry *reg, const struct mp_signin_request *req,
                          const char *old_fingerprint, const char *kind, const char *why);
/* The recorded rotations and refusals, newest first (mp/admin-json.c). */
int mp_registry_key_events_json(struct mp_registry *reg, json_object **ret);
