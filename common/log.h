/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Process-wide logging. Programs (tetherd, tether-mp) log; libraries
 * (transport/, scheduler/) only return errors and log at debug at most.
 *
 * The default sink writes "tag: message" to stderr. A program may install
 * another sink (journald, a CMTrace file) with log_set_sink(). Structured
 * fields (PUSH_ID=7 ...) pass through log_struct() to sinks that keep them.
 * Every log call preserves errno, so "%m" and the caller's errno stay valid.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

/* A sink receives a formatted message and an optional NULL-terminated list
 * of "KEY=value" fields. It must not call the log functions. */
typedef void (*log_sink_fn)(int priority, const char *message, const char *const *fields, void *userdata);

void log_set_tag(const char *tag); /* "tetherd", "channel", "[priv]" */
const char *log_get_tag(void);
void log_set_max_level(int priority); /* LOG_DEBUG .. LOG_ERR */
int log_get_max_level(void);
void log_set_sink(log_sink_fn sink, void *userdata); /* NULL restores stderr */

/* Returns -abs(error) so that "return log_error_errno(r, ...)" works; error 0
 * logs and returns 0. %m in fmt expands to strerror(abs(error)). */
int log_internal(int priority, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int log_internalv(int priority, int error, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

/* Logs with structured fields: fields is a NULL-terminated "KEY=value" list. */
void log_struct(int priority, const char *const *fields, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(e, ...) log_internal(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...) log_internal(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, (e), __VA_ARGS__)
