/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The spool's record codec, shared by agent/spool.c and the tests (the
 * unit test and tests/fuzz/fuzz-spool-record.c). A record is
 *
 *   "TSP1" | kind (1) | payload length (4, big-endian) | payload |
 *   first 8 bytes of SHA-256(kind | length | payload)
 *
 * and a task record's payload is key=value lines (the parameter
 * hex-encoded). Decoders accept any bytes and answer -EBADMSG for anything
 * but a well-formed record, never reading outside the input.
 */

#include <stddef.h>
#include <stdint.h>

#include "agent/spool.h"

#define RECORD_HEADER 9u /* magic 4, kind 1, length 4 */
#define RECORD_CHECK 8u  /* SHA-256 prefix over kind, length and payload */
#define RECORD_MAX (17u * 1024u * 1024u)

enum {
        KIND_TASK = 'T',
        KIND_RESPONSE = 'R',
};

/* The task payload: *ret owned by the caller (free). */
int spool_task_encode(const struct spool_task *t, char **ret);
/* 0 and *ret filled (the caller calls spool_task_done), -EBADMSG, -ENOMEM. */
int spool_task_decode(const uint8_t *p, size_t len, struct spool_task *ret);
