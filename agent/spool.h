/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The channel process's durable state: accepted tasks and built responses,
 * one file per item, each replaced atomically (agent/fsutil.h). Layout under
 * the spool directory:
 *
 *   tasks/<TaskGUID>      an accepted (or refused) task; also the memory of
 *                         seen TaskGUIDs, kept until 7 days after Expires
 *   responses/<name>      a signed RESPONSE frame with its ReturnCode
 *   acked/<name>          empty marker: the MP acknowledged the response
 *   quarantine/           records found damaged at open, kept for humans
 *
 * A push costs at most two durable writes (the task, then its response).
 * The RESPONSE_ACK marker is deliberately not synced: losing it after a
 * crash only re-sends a response the MP already has, which the contract
 * allows (the MP de-duplicates by ClientID and TaskGUID).
 *
 * Each record carries a magic, a length and a SHA-256 prefix, so a damaged
 * file is recognised (and quarantined) rather than trusted.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "transport/guid.h"

/* Replay memory: a TaskGUID is remembered this long after its Expires. */
#define SPOOL_REMEMBER_SECONDS (7 * 86400)

struct tether_spool;

struct spool_task {
        char task_guid[TETHER_GUID_LEN];
        uint64_t push_id;
        uint64_t task_id;
        uint32_t task_type;
        char *param; /* owned; never NULL in a loaded task */
        time_t timestamp;
        time_t expires;
        time_t received;
};

void spool_task_done(struct spool_task *t); /* frees param */

struct spool_recovery {
        unsigned tmp_removed; /* stray temporary files from an interrupted write */
        unsigned quarantined; /* damaged records moved aside */
};

/* Opens (creating) the spool under dir, removing stray temporary files and
 * quarantining damaged records. rec may be NULL. The spool owns its fds. */
int spool_open(const char *dir, struct tether_spool **ret, struct spool_recovery *rec);
struct tether_spool *spool_close(struct tether_spool *s); /* accepts NULL */

/* Durable. -ENOSPC/-EDQUOT when the disk is full: nothing is changed. */
int spool_save_task(struct tether_spool *s, const struct spool_task *t);
/* 0 and *ret filled (caller calls spool_task_done), -ENOENT, -EBADMSG. */
int spool_load_task(struct tether_spool *s, const char *guid, struct spool_task *ret);
bool spool_has_task(struct tether_spool *s, const char *guid);

/* Durable. name is a TaskGUID, or any file-name-safe key. */
int spool_save_response(struct tether_spool *s, const char *name, uint32_t return_code, const uint8_t *frame,
                        size_t len);
/* *ret_frame owned by the caller. */
int spool_load_response(struct tether_spool *s, const char *name, uint32_t *ret_code, uint8_t **ret_frame,
                        size_t *ret_len);
bool spool_has_response(struct tether_spool *s, const char *name);
bool spool_response_acked(struct tether_spool *s, const char *name);
/* Marks acknowledged (not synced; see above). -ENOENT without a response. */
int spool_mark_acked(struct tether_spool *s, const char *name);
/* Removes a response and its marker (for responses that need no memory). */
int spool_drop_response(struct tether_spool *s, const char *name);

/* Makes room for one more response of incoming_bytes whose name starts
 * with prefix: drops the oldest such responses (by write time) until fewer
 * than max_count remain and their record bytes plus incoming_bytes are
 * within max_bytes. Returns how many were dropped. */
int spool_make_room(struct tether_spool *s, const char *prefix, size_t max_count, uint64_t max_bytes,
                    size_t incoming_bytes);

/* Calls fn for each task without a response (to re-run after a restart). */
typedef int (*spool_task_fn)(struct tether_spool *s, const struct spool_task *t, void *userdata);
int spool_foreach_pending_task(struct tether_spool *s, spool_task_fn fn, void *userdata);

/* Calls fn for each response not yet acknowledged. */
typedef int (*spool_response_fn)(struct tether_spool *s, const char *name, uint32_t return_code,
                                 const uint8_t *frame, size_t len, void *userdata);
int spool_foreach_unacked_response(struct tether_spool *s, spool_response_fn fn, void *userdata);

/* Forgets tasks (with their responses and markers) whose Expires is more
 * than SPOOL_REMEMBER_SECONDS before now. Returns how many. */
int spool_gc(struct tether_spool *s, time_t now);

struct spool_counts {
        unsigned tasks;         /* remembered tasks */
        unsigned pending_tasks; /* accepted, not yet answered */
        unsigned unacked;       /* responses awaiting RESPONSE_ACK */
};
int spool_count(struct tether_spool *s, struct spool_counts *ret);

/* Up to max most recent tasks (by received time, newest first). ret is an
 * array of max entries; ret_code[i] is the ReturnCode, or 0 while running.
 * Returns the number filled; the caller calls spool_task_done on each. */
int spool_recent(struct tether_spool *s, struct spool_task *ret, uint32_t *ret_code, size_t max);

/* The record codec, exposed for tests. */
int spool_record_encode(uint8_t kind, const uint8_t *payload, size_t len, uint8_t **ret, size_t *ret_len);
int spool_record_decode(const uint8_t *data, size_t len, uint8_t *ret_kind, const uint8_t **ret_payload,
                        size_t *ret_len);
