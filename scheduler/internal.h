/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small helpers private to scheduler/. */

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}
