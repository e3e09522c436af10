/* SPDX-License-Identifier: Apache-2.0 */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/strutil.h"

int (*fsutil_fault_hook)(enum fsutil_step step);

static int fault(enum fsutil_step step) {
        return fsutil_fault_hook ? fsutil_fault_hook(step) : 0;
}

bool fsutil_is_tmp_name(const char *name) {
        size_t n = strlen(name), s = strlen(FSUTIL_TMP_SUFFIX);

        return startswith(name, FSUTIL_TMP_PREFIX) && n >= s && strcmp(name + n - s, FSUTIL_TMP_SUFFIX) == 0;
}

static int write_all(int fd, const uint8_t *p, size_t len) {
        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                len -= (size_t)k;
        }
        return 0;
}

int write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                         unsigned flags) {
        char tmp[512];
        int fd = -1, r;
        bool crashed = false;

        if (snprintf(tmp, sizeof(tmp), FSUTIL_TMP_PREFIX "%s" FSUTIL_TMP_SUFFIX, name) >= (int)sizeof(tmp))
                return -ENAMETOOLONG;

        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode & 0600);
        if (fd < 0)
                return -errno;
        /* Created owner-only, widened to the asked mode only now: a private
         * key is never readable by others, not even for an instant. */
        r = fchmod(fd, mode) < 0 ? -errno : fault(FSUTIL_STEP_OPEN);
        if (r < 0)
                goto fail;

        r = write_all(fd, data, len / 2);
        if (r >= 0)
                r = fault(FSUTIL_STEP_WRITE_HALF);
        if (r < 0)
                goto fail;
        r = write_all(fd, (const uint8_t *)data + len / 2, len - len / 2);
        if (r >= 0)
                r = fault(FSUTIL_STEP_WRITE_ALL);
        if (r < 0)
                goto fail;

        /* The data must be on disk before the rename makes it visible, or a
         * crash could leave an empty file under the final name. */
        if ((flags & FSUTIL_DURABLE) && fdatasync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        r = fault(FSUTIL_STEP_SYNC);
        if (r < 0)
                goto fail;
        if (close(fd) < 0) {
                fd = -1;
                r = -errno;
                goto fail;
        }
        fd = -1;

        if (renameat(dirfd, tmp, dirfd, name) < 0) {
                r = -errno;
                goto fail;
        }
        r = fault(FSUTIL_STEP_RENAME);
        if (r == -ECANCELED)
                return r;
        if (r < 0)
                return r; /* the new content is in place; only the sync is missing */

        if ((flags & FSUTIL_DURABLE) && fsync(dirfd) < 0)
                return -errno;
        return fault(FSUTIL_STEP_SYNC_DIR);

fail:
        crashed = r == -ECANCELED;
        if (fd >= 0)
                close(fd);
        if (!crashed)
                (void)unlinkat(dirfd, tmp, 0);
        return r;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, unsigned flags) {
        _cleanup_(freep) char *dir = strdup(path);
        _cleanup_(closep) int dirfd = -1;
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (slash == dir)
                slash[1] = '\0';
        else if (slash)
                *slash = '\0';
        dirfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return -errno;
        return write_file_atomic_at(dirfd, slash ? strrchr(path, '/') + 1 : path, data, len, mode, flags);
}

int read_fd_capped(int fd, size_t max, uint8_t **ret, size_t *ret_len) {
        _cleanup_(freep) uint8_t *buf = NULL;
        size_t have = 0, cap = 0;

        for (;;) {
                ssize_t k;

                if (have == cap) {
                        /* Grows in steps up to max + 1, the byte that tells
                         * a file of exactly max bytes from a longer one. */
                        size_t want = cap ? cap * 2 : 4096;
                        uint8_t *n;
                        if (want > max + 1)
                                want = max + 1;
                        n = realloc(buf, want + 1);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                        cap = want;
                }
                k = read(fd, buf + have, cap - have);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                have += (size_t)k;
                if (have > max)
                        return -EFBIG;
        }
        if (!buf && !(buf = malloc(1)))
                return -ENOMEM;
        buf[have] = 0;
        *ret = TAKE_PTR(buf);
        *ret_len = have;
        return 0;
}

int read_file_at(int dirfd, const char *name, size_t max, uint8_t **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -1;
        struct stat st;

        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADF;
        if ((uint64_t)st.st_size > max)
                return -EFBIG;
        return read_fd_capped(fd, max, ret, ret_len);
}

int mkdir_p(const char *path, mode_t mode) {
        char buf[4096];
        size_t n;

        if (strscpy(buf, sizeof(buf), path) < 0)
                return -ENAMETOOLONG;
        n = strlen(buf);
        for (size_t i = 1; i <= n; i++) {
                if (buf[i] != '/' && buf[i] != 0)
                        continue;
                char saved = buf[i];
                buf[i] = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                buf[i] = saved;
        }
        return 0;
}

char *path_join(const char *a, const char *b) {
        char *p = NULL;
        size_t la = strlen(a);

        if (la > 0 && a[la - 1] == '/')
                la--;
        if (asprintf(&p, "%.*s/%s", (int)la, a, b) < 0)
                return NULL;
        return p;
}
