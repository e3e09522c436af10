/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * tetherd's log sinks: journald with structured fields (PUSH_ID, TASK_GUID,
 * ...) when running under systemd (JOURNAL_STREAM set, or --journal), stderr
 * otherwise; and optionally a CMTrace-format file (agent/cmtrace.h) as well.
 * Set up once per process, at the top.
 */

#include <stdbool.h>

/* process: "channel", "scheduler" or "tetherd" (both halves in one). */
int logsink_setup(const char *process, bool journal, const char *cmtrace_file, int level);
void logsink_teardown(void);

/* True when stderr is the journal's stream (systemd's JOURNAL_STREAM). */
bool logsink_under_journal(void);
