/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The console's audit log: every administrator's request that changes or
 * tries to change something (and every refusal) is one record, chained by
 * SHA-256: each record's hash covers its fields and the previous record's
 * hash, so editing, removing or reordering a stored row breaks the chain
 * at that row (mp_audit_verify says which).
 *
 * The hash input is each field as "<length>:<bytes>\n" (NULL as "-:\n"),
 * in the order seq, time, actor, address, action, target, outcome, detail,
 * prev_hash: no field's content can shift another's.
 */

#include <stdint.h>
#include <time.h>

#include <json-c/json.h>

#include "mp/store.h"

struct mp_audit_entry {
        const char *actor;   /* the user name, or "admin-socket" */
        const char *address; /* the peer, or NULL */
        const char *action;  /* e.g. "login", "device.action", "user.add" */
        const char *target;  /* what it acted on, or NULL */
        const char *outcome; /* "ok", "denied", "failed" */
        const char *detail;  /* the reason, the TaskGUID... or NULL */
        time_t now;
};

/* Appends one record in the store's open transaction. */
int mp_audit_append(struct mp_store *st, const struct mp_audit_entry *e, int64_t *ret_seq);

/* The hash a record must carry (64 hex digits and a NUL). */
int mp_audit_hash(const struct mp_audit_rec *r, char ret[65]);

/* Walks the whole chain. 0: intact, *ret_n records. -EBADMSG: broken;
 * *ret_bad_seq is the first record that does not hold and *ret_reason
 * (the caller's) says why. */
int mp_audit_verify(struct mp_store *st, size_t *ret_n, int64_t *ret_bad_seq, char **ret_reason);

/* A record as a JSON object (the export's lines, the API's rows). */
json_object *mp_audit_rec_json(const struct mp_audit_rec *r);
