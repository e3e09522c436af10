/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/logsink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "agent/cmtrace.h"
#include "common/log.h"

#define MAX_FIELDS 16

static struct {
        bool journal;
        cmtrace_log *cmtrace;
        char identifier[64];
        char process[64];
} sink;

bool logsink_under_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        char *colon, *end;

        if (!e || fstat(STDERR_FILENO, &st) < 0)
                return false;
        /* "device:inode" of the stream; only our own stderr counts. */
        errno = 0;
        dev = strtoull(e, &colon, 10);
        if (errno || *colon != ':')
                return false;
        ino = strtoull(colon + 1, &end, 10);
        if (errno || *end)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void sink_fn(int priority, const char *message, const char *const *fields, void *userdata) {
        if (sink.cmtrace)
                cmtrace_log_sink(priority, message, fields, sink.cmtrace);
        if (sink.journal) {
                struct iovec iov[MAX_FIELDS + 4];
                char prio[32];
                char *msg = NULL;
                size_t n = 0;

                if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                        return;
                snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
                iov[n++] = (struct iovec){msg, strlen(msg)};
                iov[n++] = (struct iovec){prio, strlen(prio)};
                iov[n++] = (struct iovec){sink.identifier, strlen(sink.identifier)};
                iov[n++] = (struct iovec){sink.process, strlen(sink.process)};
                for (size_t i = 0; fields && fields[i] && i < MAX_FIELDS; i++)
                        iov[n++] = (struct iovec){(void *)fields[i], strlen(fields[i])};
                (void)sd_journal_sendv(iov, (int)n);
                free(msg);
                return;
        }
        fprintf(stderr, "%s: %s\n", log_get_tag(), message);
}

int logsink_setup(const char *process, bool journal, const char *cmtrace_file, int level) {
        int r = 0;

        log_set_max_level(level);
        log_set_tag(process);
        /* libsystemd drops messages silently when journald is not there
         * (--journal in a container): keep stderr then. */
        sink.journal = journal && access("/run/systemd/journal/socket", F_OK) == 0;
        snprintf(sink.identifier, sizeof(sink.identifier), "SYSLOG_IDENTIFIER=tetherd");
        snprintf(sink.process, sizeof(sink.process), "TETHER_PROCESS=%s", process);
        sink.cmtrace = cmtrace_log_free(sink.cmtrace);
        if (cmtrace_file) {
                r = cmtrace_log_open(cmtrace_file, 2u * 1024u * 1024u, &sink.cmtrace);
                if (r < 0)
                        sink.cmtrace = NULL;
        }
        log_set_sink(sink_fn, NULL);
        if (journal && !sink.journal)
                log_notice("journald is not running: logging to stderr");
        if (r < 0)
                log_warning_errno(r, "Cannot open the CMTrace log '%s', ignoring: %m", cmtrace_file);
        return 0;
}

void logsink_teardown(void) {
        log_set_sink(NULL, NULL);
        sink.cmtrace = cmtrace_log_free(sink.cmtrace);
}
