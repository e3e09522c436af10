/* SPDX-License-Identifier: Apache-2.0 */
/* The task type table (see tasktype.h). */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "common/tasktype.h"

static const struct tether_task_type_info task_types[] = {
        {
                .type = TETHER_TASK_MACHINE_POLICY,
                .wire_name = "RequestMachinePolicy",
                .schedule_id = "{00000000-0000-0000-0000-000000000021}",
                .cli_name = "machine-policy",
                .config_stem = "machine_policy",
                .interval_element = "MachinePolicy",
                .time_limit_sec = 600,
                .interval_sec = 3600,
                .fallback_limit_sec = 1800,
        },
        {
                .type = TETHER_TASK_USER_POLICY,
                .wire_name = "RequestUserPolicy",
                .schedule_id = "{00000000-0000-0000-0000-000000000026}",
                .cli_name = "user-policy",
                .config_stem = "user_policy",
                .interval_element = "UserPolicy",
                .time_limit_sec = 600,
                .interval_sec = 3600,
                .fallback_limit_sec = 1800,
        },
        {
                .type = TETHER_TASK_APP_EVALUATION,
                .wire_name = "AppEvaluation",
                .schedule_id = "{00000000-0000-0000-0000-000000000121}",
                .cli_name = "app-evaluation",
                .config_stem = "app_evaluation",
                .interval_element = "AppEvaluation",
                .time_limit_sec = 3600,
                .interval_sec = 7 * 86400,
                .fallback_limit_sec = 14400,
        },
};

/* The table is in type order without gaps: entry i is type i + 1. */
_Static_assert(ELEMENTSOF(task_types) == TETHER_TASK_TYPE_MAX, "one table entry per task type");

const struct tether_task_type_info *tether_task_type_info(uint32_t t) {
        if (t < 1 || t > TETHER_TASK_TYPE_MAX)
                return NULL;
        return &task_types[t - 1];
}

const char *tether_task_type_name(uint32_t t) {
        const struct tether_task_type_info *i = tether_task_type_info(t);
        return i ? i->wire_name : "unknown";
}

const char *tether_task_type_cli_name(uint32_t t) {
        const struct tether_task_type_info *i = tether_task_type_info(t);
        return i ? i->cli_name : "unknown";
}

const char *tether_task_type_schedule_id(uint32_t t) {
        const struct tether_task_type_info *i = tether_task_type_info(t);
        return i ? i->schedule_id : NULL;
}

static int matches(const struct tether_task_type_info *i, const char *s) {
        uint64_t v;

        if (strcmp(s, i->cli_name) == 0 || strcmp(s, i->wire_name) == 0)
                return 1;
        if (parse_u64(s, 1, TETHER_TASK_TYPE_MAX, &v) == 0 && v == i->type)
                return 1;
        /* A schedule ID, with its braces or without. */
        return strcasecmp(s, i->schedule_id) == 0 ||
               (strlen(s) == 36 && strncasecmp(s, i->schedule_id + 1, 36) == 0);
}

uint32_t tether_task_type_from_string(const char *s) {
        if (!s)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(task_types); i++)
                if (matches(&task_types[i], s))
                        return task_types[i].type;
        return 0;
}

void tether_task_type_cli_names(char *buf, size_t size) {
        size_t len = 0;

        if (size == 0)
                return;
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(task_types) && len < size; i++) {
                int k = snprintf(buf + len, size - len, "%s%s", i ? ", " : "", task_types[i].cli_name);
                if (k < 0)
                        return;
                len += (size_t)k;
        }
}

static const char *const rc_names[] = {
        [TETHER_RC_SUCCESS] = "Success",
        [TETHER_RC_FAILED] = "Failed",
        [TETHER_RC_NOT_SUPPORTED] = "NotSupported",
        [TETHER_RC_INVALID_TASK] = "InvalidTask",
        [TETHER_RC_UNAUTHORIZED] = "Unauthorized",
        [TETHER_RC_TIMED_OUT] = "TimedOut",
        [TETHER_RC_CANCELLED] = "Cancelled",
};

const char *tether_return_code_name(uint32_t rc) {
        if (rc >= ELEMENTSOF(rc_names) || !rc_names[rc])
                return "unknown";
        return rc_names[rc];
}
