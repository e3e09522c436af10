/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The spool's record codec (agent/spool-record.h): what a damaged or
 * planted spool file can hold. Any bytes decode to a record within the
 * input or to -EBADMSG; a record re-encodes to the same bytes; a task
 * payload that decodes re-encodes to one that decodes to the same task.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/spool-record.h"

static void check_task(const uint8_t *payload, size_t len) {
        struct spool_task a = {0}, b = {0};
        char *again = NULL;

        if (spool_task_decode(payload, len, &a) < 0)
                return;
        if (!a.param || !tether_guid_valid(a.task_guid))
                abort();
        if (spool_task_encode(&a, &again) < 0)
                abort();
        if (spool_task_decode((const uint8_t *)again, strlen(again), &b) < 0)
                abort();
        if (strcmp(a.task_guid, b.task_guid) != 0 || a.push_id != b.push_id || a.task_id != b.task_id ||
            a.task_type != b.task_type || a.timestamp != b.timestamp || a.expires != b.expires ||
            a.received != b.received || strcmp(a.param, b.param) != 0)
                abort();
        free(again);
        spool_task_done(&a);
        spool_task_done(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *payload = NULL;
        uint8_t kind = 0, *again = NULL;
        size_t len = 0, again_len = 0;

        /* The task payload on its own too: reaching it through a valid
         * checksum is rare for the fuzzer. */
        check_task(data, size);
        if (spool_record_decode(data, size, &kind, &payload, &len) < 0)
                return 0;
        if (payload < data || len > size || payload + len > data + size)
                abort();
        if (spool_record_encode(kind, payload, len, &again, &again_len) < 0)
                abort();
        if (again_len != size || memcmp(again, data, size) != 0)
                abort();
        free(again);
        if (kind == KIND_TASK)
                check_task(payload, len);
        return 0;
}
