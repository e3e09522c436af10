/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Policy document parser (scheduler/policy.c), behind the signature
 * that policy_verify_parse() checks first: the root half parses only what
 * the site signed, but the site's policies are written by people, and the
 * parser runs as root. Input byte 0 picks the scope (even: machine, odd:
 * user "demo"); the rest is the document.
 * Invariants: an accepted policy has a TimeStamp of the fixed format, a
 * GUID PolicyID, the user asked for, at most POLICY_MAX_APPLICATIONS
 * applications, each with an ID, a Detect and the command its Intent
 * needs; and a rejection always says why.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *user;
        struct policy *p = NULL;
        char reason[256] = "";
        int r;

        if (size < 1)
                return 0;
        user = (data[0] & 1) ? "demo" : NULL;
        r = policy_parse(data + 1, size - 1, user, &p, reason, sizeof(reason));
        if (r < 0) {
                if (p || (r == -EBADMSG && !reason[0]))
                        abort();
                return 0;
        }
        if (!p || strlen(p->timestamp) != POLICY_TIMESTAMP_SIZE - 1 || strlen(p->policy_id) != 36 ||
            p->n_apps > POLICY_MAX_APPLICATIONS ||
            (user ? !p->user || strcmp(p->user, user) != 0 : p->user != NULL))
                abort();
        for (size_t i = 0; i < p->n_apps; i++) {
                const struct policy_app *a = &p->apps[i];
                if (!a->id || !a->detect || !a->detect[0] ||
                    (a->intent == POLICY_INTENT_REQUIRED ? !a->install : !a->uninstall) ||
                    a->timeout_sec < 1)
                        abort();
        }
        policy_free(p);
        return 0;
}
