/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A log sink (common/log.h's log_sink_fn) that writes CMTrace-format lines,
 * so that administrators can read tetherd's log with CMTrace, OneTrace or
 * any reader of CcmNotificationAgent.log:
 *
 *   <![LOG[message]LOG]!><time="HH:MM:SS.mmm+000" date="MM-DD-YYYY"
 *     component="BgbAgent" context="" type="1" thread="N" file="">
 *
 * (one line). Times are UTC, so the bias is always +000. type is 1 for info
 * (and notice, debug), 2 for warning, 3 for error and worse. thread is the
 * writing thread's id, which tells the two privilege-separated processes
 * apart.
 *
 * Rotation by size: before a line would take the file past max_bytes, the
 * file is renamed to its rotated name and a new one is started. The rotated
 * name follows CMTrace's convention: "x.log" becomes "x.lo_"; any other name
 * gets ".1" appended. One generation is kept, as CcmExec does.
 *
 * Several processes may write one file: each line is one O_APPEND write, and
 * a writer notices that another one (or logrotate) renamed the file and
 * reopens the path before its next line.
 */

#include <stdint.h>

#include "common/cleanup.h"

typedef struct cmtrace_log cmtrace_log;

/* Opens (creating with mode 0640, appending) the log file at path. max_bytes
 * is the size that triggers rotation; 0 means never rotate. Returns 0 and a
 * new object that the caller owns (free with cmtrace_log_free()), or a
 * negative errno: -EINVAL for an empty path, -ELOOP for a symlink, -EPERM
 * for anything but a regular file with one link, or the open(2) error.
 * The directory may belong to the channel user: inside it, the file is
 * only ever reached through the directory's descriptor, without following
 * links (reopen, rotation, the "moved?" check), so root writes to no other
 * file than the log. */
int cmtrace_log_open(const char *path, uint64_t max_bytes, cmtrace_log **ret);

/* The log_sink_fn: pass it with the cmtrace_log as userdata to
 * log_set_sink(). It never calls the log functions; a failed write is
 * dropped (the sink has nowhere to report it), and counted. */
void cmtrace_log_sink(int priority, const char *message, const char *const *fields, void *userdata);

/* Lines that could not be written since the log was opened. */
uint64_t cmtrace_log_dropped(const cmtrace_log *log);

/* Closes the file and frees the object. Accepts NULL; returns NULL. */
cmtrace_log *cmtrace_log_free(cmtrace_log *log);

DEFINE_TRIVIAL_CLEANUP_FUNC(cmtrace_log *, cmtrace_log_free);
