/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small helpers shared by tether-mp's files. */

#include <json-c/json.h>

#include "common/cleanup.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)

#include <string.h>

#include "common/strutil.h"

/* A peer's string made safe for a log line (common/strutil.h); owned by the
 * caller. NULL in gives "", and out of memory gives NULL: log it with
 * LOGSTR(), which shows "?" then. */
static inline char *mp_esc(const char *s) {
        return str_escape_log(s, s ? strlen(s) : 0);
}
#define LOGSTR(s) ((s) ? (s) : "?")
