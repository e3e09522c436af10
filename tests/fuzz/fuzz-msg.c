/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One message parser (FUZZ_MSG_TYPE, a frame type). When a body parses,
 * the builder must accept the struct, and parsing what it built must give
 * the same struct again (checked by building once more: same bytes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct tether_msg *m = NULL, *again = NULL;
        struct tether_diag diag = {};
        char *body = NULL, *body2 = NULL;
        size_t len = 0, len2 = 0;
        int r;

        r = tether_msg_parse(FUZZ_MSG_TYPE, data, size, &m, &diag);
        if (r < 0) {
                if (r == -EBADMSG && diag.kind == TETHER_DIAG_NONE)
                        abort();
                return 0;
        }
        if (tether_msg_build(m, &body, &len) < 0)
                abort();
        if (tether_msg_parse(FUZZ_MSG_TYPE, (const uint8_t *)body, len, &again, &diag) < 0)
                abort();
        if (tether_msg_build(again, &body2, &len2) < 0 || len != len2 || memcmp(body, body2, len) != 0)
                abort();
        free(body2);
        free(body);
        tether_msg_free(again);
        tether_msg_free(m);
        return 0;
}
