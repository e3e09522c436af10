/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The task types (PROTOCOL-v1 section 3.3) and the return codes (3.5): one
 * table, the only place that knows how many task types there are and what
 * each is called on the wire, in schedules, on command lines, in the
 * configuration and in policies. The agent's cycles are the task types (a
 * cycle's number is its TaskType). Everything else derives from the table:
 * the configuration keys, tetherctl's and tether-mp's parsing and help, the
 * scheduler's dispatch, the SIGNIN's list of task types.
 *
 * How to add a task type: docs/ARCHITECTURE.md.
 */

#include <stddef.h>
#include <stdint.h>

enum tether_task_type {
        TETHER_TASK_MACHINE_POLICY = 1,
        TETHER_TASK_USER_POLICY = 2,
        TETHER_TASK_APP_EVALUATION = 3,
        _TETHER_TASK_TYPE_END,
};
/* The highest task type; arrays indexed by task type hold MAX + 1. */
#define TETHER_TASK_TYPE_MAX (_TETHER_TASK_TYPE_END - 1)

enum tether_return_code {
        TETHER_RC_SUCCESS = 1,
        TETHER_RC_FAILED = 2,
        TETHER_RC_NOT_SUPPORTED = 3,
        TETHER_RC_INVALID_TASK = 4,
        TETHER_RC_UNAUTHORIZED = 5,
        TETHER_RC_TIMED_OUT = 6,
        TETHER_RC_CANCELLED = 7,
};
#define TETHER_RC_MAX TETHER_RC_CANCELLED

/* The most bytes of a response's Detail (section 3.5), everywhere. */
#define TETHER_DETAIL_MAX 4096u

struct tether_task_type_info {
        enum tether_task_type type;
        const char *wire_name;        /* TemplateID: "RequestMachinePolicy" */
        const char *schedule_id;      /* "{00000000-0000-0000-0000-000000000021}" */
        const char *cli_name;         /* tetherctl, tether-mp, hook directory, TETHER_CYCLE */
        const char *config_stem;      /* [cycles] <stem>_timeout, _interval, _enabled */
        const char *interval_element; /* the policy's <Intervals> child */
        uint32_t time_limit_sec;      /* the configuration's default time limit */
        uint32_t interval_sec;        /* the configuration's default period */
        uint32_t fallback_limit_sec;  /* the scheduler's limit when it is given 0 */
};

/* The entry of a task type, or NULL when t is not one. */
const struct tether_task_type_info *tether_task_type_info(uint32_t t);

/* "RequestMachinePolicy"; "unknown" for an unknown type. */
const char *tether_task_type_name(uint32_t t);
/* "machine-policy"; "unknown" for an unknown type. */
const char *tether_task_type_cli_name(uint32_t t);
/* The schedule ID, or NULL for an unknown type. */
const char *tether_task_type_schedule_id(uint32_t t);

/* The task type named by its CLI name, its number, its wire name or its
 * schedule ID (with or without braces, any case); 0 when none. */
uint32_t tether_task_type_from_string(const char *s);

/* "machine-policy, user-policy, app-evaluation": the CLI names for help and
 * error texts, cut to fit size (TETHER_TASK_TYPE_NAMES_MAX is enough). */
#define TETHER_TASK_TYPE_NAMES_MAX 256u
void tether_task_type_cli_names(char *buf, size_t size);

/* "Success"; "unknown" for an unknown code. */
const char *tether_return_code_name(uint32_t rc);
