/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/cmtrace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "common/strutil.h"

/* The marker that ends a message in the CMTrace format. A message that
 * contains it would end early in every reader, so it is defused. */
#define CMTRACE_END_MARK "]LOG]!>"

/* The directory is opened by its path (its parents are root's, e.g.
 * /var/log); everything inside it, which the channel user may own, is
 * reached only relative to that descriptor and without following links. */
struct cmtrace_log {
        char *dir;          /* the directory part of the path */
        char *name;         /* the file name in dir */
        char *rotated_name; /* the rotated file's name in dir */
        uint64_t max_bytes;
        int dir_fd;
        int fd;
        uint64_t dropped;
};

/* Opens the log for appending, creating it if needed: (re)opens the
 * directory, then the file in it without following a symlink, without
 * blocking on a FIFO, and refuses anything but a regular file with one
 * link (a hard link the channel user made to a root file would have two).
 * A file that root creates takes the owner and group of its directory:
 * tetherd's two processes share the log, the channel process has dropped
 * to "tether" by the time it may have to reopen the file after a
 * rotation, and in a directory owned by tether (/var/log/tether) it can
 * then still do so. */
static int open_append(cmtrace_log *log) {
        const int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK;
        struct stat st, dst;
        bool created = true;
        int dfd, fd;

        dfd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        if (log->dir_fd >= 0)
                close(log->dir_fd);
        log->dir_fd = dfd;
        fd = openat(dfd, log->name, flags | O_CREAT | O_EXCL, 0640);
        if (fd < 0 && errno == EEXIST) {
                created = false;
                fd = openat(dfd, log->name, flags);
        }
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
                close(fd);
                return -EPERM;
        }
        /* Best effort: a log that keeps root's ownership still works for
         * root. By descriptor, so it is this file that changes. */
        if (created && geteuid() == 0 && fstat(dfd, &dst) == 0 && (dst.st_uid != 0 || dst.st_gid != 0) &&
            fchown(fd, dst.st_uid, dst.st_gid) < 0) {
                /* keep the file as root's */
        }
        return fd;
}

/* "x.log" -> "x.lo_" (CMTrace's own convention), anything else -> "x.1". */
static char *rotated_name(const char *name) {
        size_t len = strlen(name);
        char *r;

        if (len > 4 && strcmp(name + len - 4, ".log") == 0) {
                r = strdup(name);
                if (r)
                        r[len - 1] = '_';
                return r;
        }
        r = malloc(len + 3);
        if (r)
                snprintf(r, len + 3, "%s.1", name);
        return r;
}

static int split_path(cmtrace_log *log, const char *path) {
        const char *slash = strrchr(path, '/');

        if (!slash) {
                log->dir = strdup(".");
                log->name = strdup(path);
        } else {
                log->dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
                log->name = strdup(slash + 1);
        }
        if (!log->dir || !log->name)
                return -ENOMEM;
        if (!log->name[0] || strcmp(log->name, ".") == 0 || strcmp(log->name, "..") == 0)
                return -EINVAL;
        log->rotated_name = rotated_name(log->name);
        return log->rotated_name ? 0 : -ENOMEM;
}

int cmtrace_log_open(const char *path, uint64_t max_bytes, cmtrace_log **ret) {
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        int r;

        if (!path || !*path || !ret)
                return -EINVAL;

        log = calloc(1, sizeof(*log));
        if (!log)
                return -ENOMEM;
        log->fd = -1;
        log->dir_fd = -1;
        log->max_bytes = max_bytes;
        r = split_path(log, path);
        if (r < 0)
                return r;

        log->fd = open_append(log);
        if (log->fd < 0)
                return log->fd;

        *ret = TAKE_PTR(log);
        return 0;
}

cmtrace_log *cmtrace_log_free(cmtrace_log *log) {
        if (!log)
                return NULL;
        if (log->fd >= 0)
                close(log->fd);
        if (log->dir_fd >= 0)
                close(log->dir_fd);
        free(log->dir);
        free(log->name);
        free(log->rotated_name);
        free(log);
        return NULL;
}

uint64_t cmtrace_log_dropped(const cmtrace_log *log) {
        return log ? log->dropped : 0;
}

static int reopen(cmtrace_log *log) {
        int fd = open_append(log);

        if (fd < 0)
                return fd;
        if (log->fd >= 0)
                close(log->fd);
        log->fd = fd;
        return 0;
}

/* True when the path no longer names the file our descriptor writes to:
 * another writer rotated it, or logrotate moved it away. */
static bool path_moved(const cmtrace_log *log, const struct stat *ours) {
        struct stat st;

        if (log->dir_fd < 0 || fstatat(log->dir_fd, log->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return true;
        return st.st_dev != ours->st_dev || st.st_ino != ours->st_ino;
}

/* Makes sure that the next line_len bytes go to a current file with room
 * for them. Returns 0 or a negative errno. */
static int prepare_file(cmtrace_log *log, size_t line_len) {
        struct stat st;
        int r;

        if (log->fd < 0 || fstat(log->fd, &st) < 0 || path_moved(log, &st)) {
                r = reopen(log);
                if (r < 0)
                        return r;
                if (fstat(log->fd, &st) < 0)
                        return -errno;
        }

        if (log->max_bytes == 0 || st.st_size == 0 || (uint64_t)st.st_size + line_len <= log->max_bytes)
                return 0;

        /* Rotate under an exclusive lock on the full file, so that of two
         * writers that both find it full, only the first renames it; the
         * second then sees that the path moved and just reopens. */
        if (flock(log->fd, LOCK_EX) < 0)
                return -errno;
        if (!path_moved(log, &st)) {
                if (renameat(log->dir_fd, log->name, log->dir_fd, log->rotated_name) < 0) {
                        /* Cannot rotate (read-only directory...): keep
                         * appending rather than lose lines. */
                        flock(log->fd, LOCK_UN);
                        return 0;
                }
        }
        flock(log->fd, LOCK_UN);
        return reopen(log);
}

static int cmtrace_type(int priority) {
        if (priority <= LOG_ERR)
                return 3;
        if (priority == LOG_WARNING)
                return 2;
        return 1;
}

void cmtrace_log_sink(int priority, const char *message, const char *const *fields, void *userdata) {
        cmtrace_log *log = userdata;
        _cleanup_(freep) char *defused = NULL;
        char trailer[192];
        struct timespec now;
        struct tm tm;
        struct iovec iov[3];
        size_t line_len;
        const char *text = message ? message : "";
        int saved_errno = errno, n;
        ssize_t written;

        if (!log)
                return;

        if (strstr(text, CMTRACE_END_MARK)) {
                /* "]LOG]!>" becomes "]LOG] !>": readable, and no longer the
                 * end marker. */
                size_t len = strlen(text), cap = len * 8 / 7 + 2, o = 0;
                const char *p = text;

                defused = malloc(cap);
                if (!defused) {
                        log->dropped++;
                        goto done;
                }
                while (*p) {
                        if (startswith(p, CMTRACE_END_MARK)) {
                                memcpy(defused + o, "]LOG] !>", 8);
                                o += 8;
                                p += strlen(CMTRACE_END_MARK);
                        } else
                                defused[o++] = *p++;
                }
                defused[o] = '\0';
                text = defused;
        }

        if (clock_gettime(CLOCK_REALTIME, &now) < 0 || !gmtime_r(&now.tv_sec, &tm)) {
                log->dropped++;
                goto done;
        }
        n = snprintf(trailer, sizeof(trailer),
                     CMTRACE_END_MARK
                     "<time=\"%02d:%02d:%02d.%03ld+000\" date=\"%02d-%02d-%04d\" "
                     "component=\"BgbAgent\" context=\"\" type=\"%d\" thread=\"%ld\" file=\"\">\n",
                     tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000L, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_year + 1900, cmtrace_type(priority), (long)gettid());
        if (n < 0 || (size_t)n >= sizeof(trailer)) {
                log->dropped++;
                goto done;
        }

        iov[0] = (struct iovec){.iov_base = (void *)"<![LOG[", .iov_len = 7};
        iov[1] = (struct iovec){.iov_base = (void *)text, .iov_len = strlen(text)};
        iov[2] = (struct iovec){.iov_base = trailer, .iov_len = (size_t)n};
        line_len = iov[0].iov_len + iov[1].iov_len + iov[2].iov_len;

        if (prepare_file(log, line_len) < 0) {
                log->dropped++;
                goto done;
        }
        /* One writev on an O_APPEND file: lines of concurrent writers do not
         * interleave. */
        written = writev(log->fd, iov, 3);
        if (written < 0 || (size_t)written != line_len)
                log->dropped++;
done:
        errno = saved_errno;
}
