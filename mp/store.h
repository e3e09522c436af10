/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * tether-mp's store: where the records live (devices and their bound keys,
 * ClientID/key conflicts, pushes with their signed frames, each push's
 * per-device targets, the signed responses, and for key rotation the site
 * key each device confirmed and the device key events). One interface, two engines:
 *  - SQLite (the default: one node, nothing to install), mp/store-sqlite.c;
 *  - PostgreSQL through libpq (a "postgresql://" or "postgres://" URL),
 *    mp/store-pg.c.
 *
 * The store holds no policy and makes no JSON: it returns plain records,
 * and mp/registry.c (sign-in policy) and mp/admin-json.c (the admin API's
 * JSON) sit on top.
 *
 * Writes go into one open transaction that the server commits once per
 * event-loop round (group commit): commit() returns only when the writes are
 * durable, and nothing that acknowledges a write leaves before that.
 *
 * Both engines keep a versioned schema (table schema_version) and migrate it
 * at open; a database whose schema is newer than this binary knows is
 * refused with -EPROTONOSUPPORT and a message naming both versions.
 *
 * Errors: negative errno. -ENOTCONN: the engine is unreachable right now
 * (PostgreSQL connection down; it is retried with backoff, the caller
 * refuses the work). -ECONNABORTED from commit(): the open transaction was
 * lost with the connection; nothing in it was stored, so nothing in it may
 * be acknowledged.
 *
 * Ownership: the store is owned by its opener (mp_store_free); record
 * arrays returned are owned by the caller and freed with the matching
 * mp_*_recs_free().
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The schema version this binary writes and understands. */
#define MP_STORE_SCHEMA_VERSION 5

enum mp_device_status {
        MP_DEVICE_APPROVED = 0,
        MP_DEVICE_PENDING,
        MP_DEVICE_REJECTED,
};

/* States of one push for one device, in the order they advance. */
enum mp_target_state {
        MP_TARGET_PENDING = 0,
        MP_TARGET_DELIVERED = 1,
        MP_TARGET_ACKNOWLEDGED = 2,
        MP_TARGET_ANSWERED = 3,
        MP_TARGET_EXPIRED = 4,
};

/* A device row, as registered at its first sign-in. */
struct mp_device_new {
        const char *client_id;
        const char *hostname;
        const char *version;
        const char *public_key;  /* base64 DER SPKI */
        const char *fingerprint; /* sha256 hex of the SPKI */
        enum mp_device_status status;
        const char *address;
        time_t now;
};

/* A ClientID/key conflict ("key": another key offered for a bound
 * ClientID) or a duplicate identity (kind "duplicate-identity": the bound
 * key itself, from a second live device; offered = known fingerprint).
 * One row per (client_id, offered_fingerprint), counted. */
struct mp_conflict_new {
        const char *client_id;
        const char *kind; /* "key" or "duplicate-identity" */
        const char *known_fingerprint;
        const char *offered_fingerprint;
        const char *offered_key; /* NULL for a duplicate identity */
        const char *hostname;
        const char *address;
        const char *established_hostname; /* duplicate identity only */
        const char *established_address;
        time_t now;
};

struct mp_response_record {
        const char *client_id;
        const char *task_guid;
        uint64_t push_id;
        uint64_t task_id;
        uint32_t return_code;
        const char *detail;
        const uint8_t *body; /* raw signed XML */
        size_t body_len;
        const uint8_t *sig;
        size_t sig_len;
        const char *address;
        time_t received;
};

/* Records read back. NULL strings are NULL columns. */
struct mp_device_rec {
        char *client_id, *hostname, *version, *fingerprint, *address;
        char *conflict; /* kinds recorded, comma-separated, or NULL */
        char *node;     /* the node holding it online, or NULL */
        enum mp_device_status status;
        int64_t first_seen, last_seen;
};

struct mp_conflict_rec {
        char *client_id, *kind, *known_fingerprint, *offered_fingerprint, *hostname, *address;
        char *established_hostname, *established_address;
        int64_t first_seen, last_seen, count;
};

struct mp_push_rec {
        uint64_t push_id, task_id;
        char *task_guid, *task_param;
        char *origin_node; /* the node whose admin API took it (written, not read back) */
        uint32_t task_type;
        int64_t created, expires;
};

struct mp_target_rec {
        char *client_id;
        enum mp_target_state state; /* shown expired once its push expired */
        int64_t updated;
        bool answered; /* the response fields below are set */
        uint32_t return_code;
        char *detail, *response_xml, *signature_hex;
        int64_t received;
};

struct mp_response_rec {
        char *client_id, *task_guid;
        uint64_t push_id, task_id;
        uint32_t return_code;
        char *detail, *response_xml, *signature_hex, *address;
        int64_t received;
};

/* A stored push frame not yet acknowledged by a device. */
struct mp_frame_rec {
        uint64_t push_id;
        char *client_id; /* targets_take() only */
        uint8_t *frame;
        size_t len;
};

/* A device key event (PROTOCOL-v1 7.3): kind "rotation" (a ClientID moved
 * to a new key) or "rollover-refused" (with the reason). */
struct mp_key_event_new {
        const char *client_id;
        const char *kind;
        const char *old_fingerprint;
        const char *new_fingerprint;
        const char *reason; /* NULL for a rotation */
        const char *hostname;
        const char *address;
        time_t at;
};

struct mp_key_event_rec {
        char *client_id, *kind, *old_fingerprint, *new_fingerprint, *reason, *hostname, *address;
        int64_t at;
};

/* The console's records (mp/console.h), schema version 5: accounts, API
 * tokens, custom roles and collections as named JSON documents of a kind
 * ("user", "token", "role", "collection"), and the hash-chained audit log. */
struct mp_doc_rec {
        char *name, *body;
        int64_t updated;
};

struct mp_audit_rec {
        int64_t seq, time;
        char *actor, *address, *action, *target, *outcome, *detail;
        char *prev_hash, *hash; /* sha256 hex; prev of the first is 64 zeros */
};

struct mp_store;

typedef void (*mp_store_hint_cb)(const char *channel, const char *payload, void *userdata);

/* Each engine fills one table; every call returns a negative errno on
 * failure. Writes open the transaction that commit() ends. */
struct mp_store_ops {
        const char *name; /* "sqlite", "postgresql" */
        void (*free)(struct mp_store *st);
        int (*commit)(struct mp_store *st);
        bool (*dirty)(const struct mp_store *st);

        /* -ENOENT when unknown; ret_key may be NULL. */
        int (*device_get)(struct mp_store *st, const char *client_id, enum mp_device_status *ret_status,
                          char **ret_key, char **ret_fingerprint);
        int (*device_insert)(struct mp_store *st, const struct mp_device_new *dev);
        /* NULL address, hostname or version keep the stored ones. */
        int (*device_seen)(struct mp_store *st, const char *client_id, time_t now, const char *address,
                           const char *hostname, const char *version);
        int (*device_set_status)(struct mp_store *st, const char *client_id, enum mp_device_status status);
        /* The approved device with this key, last seen first. -ENOENT if none. */
        int (*device_by_fingerprint)(struct mp_store *st, const char *fingerprint, char **ret_client_id);
        int (*conflict_record)(struct mp_store *st, const struct mp_conflict_new *c);
        int (*devices)(struct mp_store *st, struct mp_device_rec **ret, size_t *ret_n);
        int (*conflicts)(struct mp_store *st, struct mp_conflict_rec **ret, size_t *ret_n);
        int (*approved_ids)(struct mp_store *st, char ***ret_ids, size_t *ret_n);

        /* Reserves a new PushID and TaskID (a row the push is then stored in). */
        int (*push_reserve)(struct mp_store *st, uint64_t *ret_push_id, uint64_t *ret_task_id);
        int (*push_store)(struct mp_store *st, const struct mp_push_rec *p, const uint8_t *frame,
                          size_t len);
        int (*target_add)(struct mp_store *st, uint64_t push_id, const char *client_id, time_t now);
        /* By push_id, or by task_guid when it is not NULL. Never moves a
         * target backwards; an answer overrides expiry. 1: changed, 0: not. */
        int (*target_advance)(struct mp_store *st, uint64_t push_id, const char *task_guid,
                              const char *client_id, enum mp_target_state state, time_t now);
        /* Expires the open targets of expired pushes; returns how many. */
        int (*expire)(struct mp_store *st, time_t now);
        /* Unexpired, unacknowledged frames for a device, oldest first. */
        int (*undelivered)(struct mp_store *st, const char *client_id, time_t now, struct mp_frame_rec **ret,
                           size_t *ret_n);
        /* Stores once per (client_id, task_guid); *ret_inserted false if it was there. */
        int (*response_insert)(struct mp_store *st, const struct mp_response_record *rec,
                               bool *ret_inserted);
        /* -ENOENT when unknown (or reserved but never stored). */
        int (*push_get)(struct mp_store *st, uint64_t push_id, time_t now, struct mp_push_rec *ret,
                        struct mp_target_rec **ret_targets, size_t *ret_n);
        /* The latest responses, newest first. */
        int (*responses)(struct mp_store *st, unsigned limit, struct mp_response_rec **ret, size_t *ret_n);

        /* Several nodes. A sign-in makes node_id the device's holder with a
         * new, larger session epoch (*ret_epoch). */
        int (*presence_claim)(struct mp_store *st, const char *client_id, const char *node_id, time_t now,
                              uint64_t *ret_epoch);
        /* 0 when node_id still holds the device at epoch, else -ESTALE. In
         * the open transaction; PostgreSQL holds the row (FOR SHARE) until
         * commit, so a sign-in elsewhere waits for what this node records. */
        int (*presence_check)(struct mp_store *st, const char *client_id, const char *node_id,
                              uint64_t epoch);
        /* The session ended: the device is offline, if node_id still holds
         * it at epoch (else nothing changes). */
        int (*presence_release)(struct mp_store *st, const char *client_id, const char *node_id,
                                uint64_t epoch);
        /* Approved devices online at any node, for "--all" with several nodes. */
        int (*online_ids)(struct mp_store *st, char ***ret_ids, size_t *ret_n);
        /* This node is alive at now (written at once, outside the open
         * transaction); *ret_live: the nodes seen within stale_after seconds,
         * this one included. The site's push rate is shared among them. */
        int (*node_heartbeat)(struct mp_store *st, const char *node_id, time_t now, unsigned stale_after,
                              unsigned *ret_live);
        /* Tells the other nodes something at commit (PostgreSQL NOTIFY on
         * channel "tether_push": pushes were written, or "tether_device": a
         * device's status changed, payload "NODE CLIENTID"); a hint only. */
        int (*notify)(struct mp_store *st, const char *channel, const char *payload);
        /* Takes, in the open transaction, up to limit pending targets of
         * pushes another node wrote, for the devices in ids that node_id
         * holds (PostgreSQL: FOR UPDATE SKIP LOCKED, so no two nodes take
         * the same). Frames with client_id set, oldest push first. */
        int (*targets_take)(struct mp_store *st, const char *node_id, char *const *ids, size_t n_ids,
                            time_t now, unsigned limit, struct mp_frame_rec **ret, size_t *ret_n);
        /* The hint channel: a file descriptor that turns readable when a
         * hint may have come (-EOPNOTSUPP: none, one node), and its drain,
         * calling cb for each hint (number of hints, or -ENOTCONN:
         * reconnecting; then ask the fd again). */
        int (*listen_fd)(struct mp_store *st);
        int (*listen_drain)(struct mp_store *st, mp_store_hint_cb cb, void *userdata);

        /* Key rotation (PROTOCOL-v1 7.2, 7.3), one row per device of the
         * site key serials sent and confirmed. Sent: the serial sent before
         * (if newer than the confirmed one) becomes the confirmed one, and
         * serial the sent one. Confirmed: the device took serial. */
        int (*site_key_sent)(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
        int (*site_key_confirmed)(struct mp_store *st, const char *client_id, uint32_t serial, time_t now);
        /* counts[i] = devices whose last confirmed site key is serial i + 1. */
        int (*site_key_counts)(struct mp_store *st, uint64_t *counts, size_t n);
        /* Binds client_id to new_key/new_fingerprint if it is bound to
         * old_key (base64 DER SPKI); -ESTALE when it is not (any more). */
        int (*device_rebind)(struct mp_store *st, const char *client_id, const char *old_key,
                             const char *new_key, const char *new_fingerprint);
        int (*key_event_insert)(struct mp_store *st, const struct mp_key_event_new *ev);
        /* All key events, newest first. */
        int (*key_events)(struct mp_store *st, struct mp_key_event_rec **ret, size_t *ret_n);
        /* The console's records (schema version 5; mp/store-*-admin.c). */
        int (*doc_put)(struct mp_store *st, const char *kind, const char *name, const char *body,
                       time_t now);
        int (*doc_get)(struct mp_store *st, const char *kind, const char *name,
                       char **ret_body);                                            /* -ENOENT */
        int (*doc_delete)(struct mp_store *st, const char *kind, const char *name); /* -ENOENT */
        /* Every document of a kind, by name. */
        int (*docs)(struct mp_store *st, const char *kind, struct mp_doc_rec **ret, size_t *ret_n);
        /* Appends one record; its seq must be the last one's + 1 (-EEXIST if taken). */
        int (*audit_append)(struct mp_store *st, const struct mp_audit_rec *rec);
        /* Records with seq > after, oldest first, at most limit (0: all). */
        int (*audit_list)(struct mp_store *st, int64_t after, unsigned limit, struct mp_audit_rec **ret,
                          size_t *ret_n);
        /* The last record's seq and hash; seq 0 and 64 zeros when empty. */
        int (*audit_last)(struct mp_store *st, int64_t *ret_seq, char ret_hash[65]);
};

/* Every engine's struct starts with this. */
struct mp_store {
        const struct mp_store_ops *ops;
};

/* Opens the store named by spec: a "postgresql://" or "postgres://" URL (or
 * a libpq "key=value" string starting with "pg:") selects PostgreSQL;
 * anything else is an SQLite file path (":memory:" for tests). Creates and
 * migrates the schema. */
int mp_store_open(const char *spec, struct mp_store **ret);
bool mp_store_spec_is_pg(const char *spec);
struct mp_store *mp_store_free(struct mp_store *st); /* commits what is open */

int mp_store_open_sqlite(const char *path, struct mp_store **ret);
int mp_store_open_pg(const char *conninfo, struct mp_store **ret);

/* Refuses a schema newer than this binary knows, with the message. */
int mp_store_check_version(const char *engine, const char *where, int found);

void mp_device_recs_free(struct mp_device_rec *r, size_t n);
void mp_conflict_recs_free(struct mp_conflict_rec *r, size_t n);
void mp_push_rec_done(struct mp_push_rec *p);
void mp_target_recs_free(struct mp_target_rec *r, size_t n);
void mp_response_recs_free(struct mp_response_rec *r, size_t n);
void mp_frame_recs_free(struct mp_frame_rec *r, size_t n);
void mp_key_event_recs_free(struct mp_key_event_rec *r, size_t n);
void mp_strv_free(char **v, size_t n);
void mp_doc_recs_free(struct mp_doc_rec *r, size_t n);
void mp_audit_recs_free(struct mp_audit_rec *r, size_t n);

/* Grows *arr (of elem-sized items) to hold n + 1; zeroes the new slot. */
int mp_store_grow(void *arr, size_t elem, size_t n, size_t *cap);
