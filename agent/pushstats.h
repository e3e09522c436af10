/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The channel process's own timing of each PUSH it handles, by stage
 * (issue 7's latency breakdown). Recording is a clock read and a store in
 * a fixed ring per stage (the last PUSHSTATS_RING samples): no allocation.
 * Summaries (count, median, p99, max) are computed on request from a
 * sorted copy of the ring.
 *
 * Ownership: pushstats_new() returns a struct owned by the caller, freed
 * with pushstats_free().
 */

#include <stddef.h>
#include <stdint.h>

#define PUSHSTATS_RING 4096

enum pushstats_stage {
        PUSHSTATS_VERIFY,         /* frame received -> signature verified */
        PUSHSTATS_PARSE,          /* -> body parsed and validated */
        PUSHSTATS_SPOOL,          /* -> task persisted */
        PUSHSTATS_ACK,            /* -> PUSH_ACK handed to the link */
        PUSHSTATS_IPC_RUN,        /* RUN sent to the root process -> DONE received */
        PUSHSTATS_SIGN,           /* -> response built and signed */
        PUSHSTATS_SPOOL_RESPONSE, /* -> response persisted */
        PUSHSTATS_SEND,           /* -> response handed to the link */
        _PUSHSTATS_STAGE_MAX,
};

struct pushstats;

struct pushstats_summary {
        uint64_t count;  /* samples recorded since start */
        uint64_t window; /* samples the figures below are over (<= PUSHSTATS_RING) */
        uint64_t median_us;
        uint64_t p99_us;
        uint64_t max_us;
};

struct pushstats *pushstats_new(void);
struct pushstats *pushstats_free(struct pushstats *p); /* accepts NULL */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t pushstats_now(void);

/* Records end - start (nanoseconds, as from pushstats_now()) for stage.
 * A zero start (no stamp, e.g. a task handed over after a restart) or an
 * end before start records nothing. p may be NULL. */
void pushstats_add(struct pushstats *p, enum pushstats_stage stage, uint64_t start_ns, uint64_t end_ns);

/* Fills *ret for stage; all zero when nothing was recorded. -ENOMEM, or
 * -EINVAL for a bad stage. */
int pushstats_summary(const struct pushstats *p, enum pushstats_stage stage, struct pushstats_summary *ret);

const char *pushstats_stage_name(enum pushstats_stage stage); /* "verify", "ipc+run"; NULL if bad */
