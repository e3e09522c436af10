/* SPDX-License-Identifier: Apache-2.0 */
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *log_tag = "tether";
static int log_max_level = LOG_INFO;
static log_sink_fn log_sink;
static void *log_sink_userdata;

void log_set_tag(const char *tag) {
        log_tag = tag ? tag : "tether";
}

const char *log_get_tag(void) {
        return log_tag;
}

void log_set_max_level(int priority) {
        log_max_level = priority;
}

int log_get_max_level(void) {
        return log_max_level;
}

void log_set_sink(log_sink_fn sink, void *userdata) {
        log_sink = sink;
        log_sink_userdata = userdata;
}

static void log_emit(int priority, const char *const *fields, const char *msg) {
        if (log_sink) {
                log_sink(priority, msg, fields, log_sink_userdata);
                return;
        }
        fprintf(stderr, "%s: %s\n", log_tag, msg);
}

/* Formats with %m bound to the given error, not whatever errno holds now. */
__attribute__((format(printf, 4, 0))) static void log_format(char *buf, size_t size, int error,
                                                             const char *fmt, va_list ap) {
        if (error != 0)
                errno = error < 0 ? -error : error;
        vsnprintf(buf, size, fmt, ap);
}

int log_internalv(int priority, int error, const char *fmt, va_list ap) {
        int saved = errno;
        char buf[8192];

        if (priority <= log_max_level) {
                log_format(buf, sizeof(buf), error, fmt, ap);
                log_emit(priority, NULL, buf);
        }
        errno = saved;
        return error < 0 ? error : -error;
}

int log_internal(int priority, int error, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = log_internalv(priority, error, fmt, ap);
        va_end(ap);
        return r;
}

void log_struct(int priority, const char *const *fields, const char *fmt, ...) {
        int saved = errno;
        char buf[8192];
        va_list ap;

        if (priority > log_max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        log_emit(priority, fields, buf);
        errno = saved;
}
