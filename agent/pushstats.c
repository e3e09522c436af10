/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/pushstats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pushstats {
        uint64_t count[_PUSHSTATS_STAGE_MAX];
        /* Microseconds; a ring indexed by count % PUSHSTATS_RING. */
        uint32_t ring[_PUSHSTATS_STAGE_MAX][PUSHSTATS_RING];
};

static const char *const stage_names[_PUSHSTATS_STAGE_MAX] = {
        [PUSHSTATS_VERIFY] = "verify",
        [PUSHSTATS_PARSE] = "parse",
        [PUSHSTATS_SPOOL] = "spool",
        [PUSHSTATS_ACK] = "ack",
        [PUSHSTATS_IPC_RUN] = "ipc+run",
        [PUSHSTATS_SIGN] = "sign",
        [PUSHSTATS_SPOOL_RESPONSE] = "spool-response",
        [PUSHSTATS_SEND] = "send",
};

struct pushstats *pushstats_new(void) {
        return calloc(1, sizeof(struct pushstats));
}

struct pushstats *pushstats_free(struct pushstats *p) {
        free(p);
        return NULL;
}

uint64_t pushstats_now(void) {
        struct timespec ts;

        if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
                return 0;
        return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

void pushstats_add(struct pushstats *p, enum pushstats_stage stage, uint64_t start_ns, uint64_t end_ns) {
        uint64_t us;

        if (!p || (unsigned)stage >= _PUSHSTATS_STAGE_MAX || start_ns == 0 || end_ns < start_ns)
                return;
        us = (end_ns - start_ns) / 1000;
        p->ring[stage][p->count[stage] % PUSHSTATS_RING] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        p->count[stage]++;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

int pushstats_summary(const struct pushstats *p, enum pushstats_stage stage, struct pushstats_summary *ret) {
        uint32_t *sorted;
        size_t n;

        if (!p || !ret || (unsigned)stage >= _PUSHSTATS_STAGE_MAX)
                return -EINVAL;
        *ret = (struct pushstats_summary){.count = p->count[stage]};
        n = p->count[stage] < PUSHSTATS_RING ? (size_t)p->count[stage] : PUSHSTATS_RING;
        if (n == 0)
                return 0;
        /* Not the hot path: the ring is copied so that recording never waits. */
        sorted = malloc(n * sizeof(*sorted));
        if (!sorted)
                return -ENOMEM;
        memcpy(sorted, p->ring[stage], n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), cmp_u32);
        ret->window = n;
        ret->median_us = n % 2 ? sorted[n / 2] : ((uint64_t)sorted[n / 2 - 1] + sorted[n / 2]) / 2;
        /* Nearest rank: the smallest sample with at least 99% at or below it. */
        ret->p99_us = sorted[(n * 99 + 99) / 100 - 1];
        ret->max_us = sorted[n - 1];
        free(sorted);
        return 0;
}

const char *pushstats_stage_name(enum pushstats_stage stage) {
        if ((unsigned)stage >= _PUSHSTATS_STAGE_MAX)
                return NULL;
        return stage_names[stage];
}
