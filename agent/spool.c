/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/spool-record.h"
#include "common/bytes.h"
#include "common/fsutil.h"
#include "common/cleanup.h"
#include "common/strutil.h"

struct tether_spool {
        int dir_fd;
        int tasks_fd;
        int responses_fd;
        int acked_fd;
        int quarantine_fd;
        /* Kept up to date with every change, so that status lines after each
         * push cost nothing (a week of remembered tasks can be thousands). */
        struct spool_counts counts;
};

static int spool_recount(struct tether_spool *s);

void spool_task_done(struct spool_task *t) {
        if (!t)
                return;
        free(t->param);
        t->param = NULL;
}

static int open_subdir(int dir_fd, const char *name) {
        int fd;

        if (mkdirat(dir_fd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? -errno : fd;
}

static bool name_safe(const char *name) {
        if (!name[0] || strlen(name) > 128 || name[0] == '.')
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                      *p == '-' || *p == '_'))
                        return false;
        return true;
}

static int read_record(int dir_fd, const char *name, uint8_t want_kind, uint8_t **ret_buf,
                       const uint8_t **ret_payload, size_t *ret_len) {
        _cleanup_(freep) uint8_t *buf = NULL;
        size_t len, plen;
        const uint8_t *payload;
        uint8_t kind;
        int r;

        r = read_file_at(dir_fd, name, RECORD_MAX + RECORD_HEADER + RECORD_CHECK, &buf, &len);
        if (r < 0)
                return r;
        r = spool_record_decode(buf, len, &kind, &payload, &plen);
        if (r < 0)
                return r;
        if (kind != want_kind)
                return -EBADMSG;
        *ret_payload = payload;
        *ret_len = plen;
        *ret_buf = TAKE_PTR(buf);
        return 0;
}

static int write_record(int dir_fd, const char *name, uint8_t kind, const uint8_t *payload, size_t len) {
        _cleanup_(freep) uint8_t *rec = NULL;
        size_t rlen;
        int r;

        r = spool_record_encode(kind, payload, len, &rec, &rlen);
        if (r < 0)
                return r;
        return write_file_atomic_at(dir_fd, name, rec, rlen, 0600, FSUTIL_DURABLE);
}

/* Moves a damaged record aside, under a unique name, for a human to look at. */
static int quarantine(struct tether_spool *s, int from_fd, const char *prefix, const char *name) {
        char dst[300];

        snprintf(dst, sizeof(dst), "%s-%s-%lld", prefix, name, (long long)time(NULL));
        if (renameat(from_fd, name, s->quarantine_fd, dst) < 0)
                return -errno;
        return 0;
}

static int recover_dir(struct tether_spool *s, int fd, const char *prefix, int kind,
                       struct spool_recovery *rec) {
        _cleanup_(closep) int dfd = -1;
        DIR *d;
        struct dirent *de;
        bool changed = false;
        int r = 0;

        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d)
                return -errno;
        dfd = -1;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (fsutil_is_tmp_name(de->d_name) || !name_safe(de->d_name)) {
                        /* An interrupted write: the old record, if any, is intact under its name. */
                        if (unlinkat(fd, de->d_name, 0) == 0) {
                                if (rec)
                                        rec->tmp_removed++;
                                changed = true;
                        }
                        continue;
                }
                if (kind == 0)
                        continue;
                _cleanup_(freep) uint8_t *buf = NULL;
                const uint8_t *payload;
                size_t plen;
                r = read_record(fd, de->d_name, (uint8_t)kind, &buf, &payload, &plen);
                if (r == -ENOMEM)
                        break;
                if (r >= 0 && kind == KIND_TASK) {
                        struct spool_task t;
                        r = spool_task_decode(payload, plen, &t);
                        if (r >= 0) {
                                if (strcmp(t.task_guid, de->d_name) != 0)
                                        r = -EBADMSG;
                                spool_task_done(&t);
                        }
                }
                if (r == -ENOMEM)
                        break;
                if (r < 0) {
                        r = quarantine(s, fd, prefix, de->d_name);
                        if (r < 0)
                                break;
                        if (rec)
                                rec->quarantined++;
                        changed = true;
                }
                r = 0;
        }
        closedir(d);
        if (r >= 0 && changed && fsync(fd) < 0)
                r = -errno;
        return r;
}

int spool_open(const char *dir, struct tether_spool **ret, struct spool_recovery *rec) {
        struct tether_spool *s;
        int r;

        if (rec)
                *rec = (struct spool_recovery){0};
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->tasks_fd = s->responses_fd = s->acked_fd = s->quarantine_fd = -1;
        s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd < 0) {
                r = -errno;
                goto fail;
        }
        if ((r = s->tasks_fd = open_subdir(s->dir_fd, "tasks")) < 0 ||
            (r = s->responses_fd = open_subdir(s->dir_fd, "responses")) < 0 ||
            (r = s->acked_fd = open_subdir(s->dir_fd, "acked")) < 0 ||
            (r = s->quarantine_fd = open_subdir(s->dir_fd, "quarantine")) < 0)
                goto fail;
        if (fsync(s->dir_fd) < 0) {
                r = -errno;
                goto fail;
        }
        r = recover_dir(s, s->tasks_fd, "task", KIND_TASK, rec);
        if (r >= 0)
                r = recover_dir(s, s->responses_fd, "response", KIND_RESPONSE, rec);
        if (r >= 0)
                r = recover_dir(s, s->acked_fd, "acked", 0, rec);
        if (r >= 0)
                r = spool_recount(s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        spool_close(s);
        return r;
}

struct tether_spool *spool_close(struct tether_spool *s) {
        if (!s)
                return NULL;
        int fds[] = {s->dir_fd, s->tasks_fd, s->responses_fd, s->acked_fd, s->quarantine_fd};
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        free(s);
        return NULL;
}

int spool_save_task(struct tether_spool *s, const struct spool_task *t) {
        _cleanup_(freep) char *payload = NULL;
        int r;

        if (!tether_guid_valid(t->task_guid))
                return -EINVAL;
        bool existed = spool_has_task(s, t->task_guid);
        r = spool_task_encode(t, &payload);
        if (r < 0)
                return r;
        r = write_record(s->tasks_fd, t->task_guid, KIND_TASK, (const uint8_t *)payload, strlen(payload));
        if (r < 0)
                return r;
        if (!existed) {
                s->counts.tasks++;
                if (!spool_has_response(s, t->task_guid))
                        s->counts.pending_tasks++;
        }
        return 0;
}

int spool_load_task(struct tether_spool *s, const char *guid, struct spool_task *ret) {
        _cleanup_(freep) uint8_t *buf = NULL;
        const uint8_t *payload;
        size_t plen;
        int r;

        if (!tether_guid_valid(guid))
                return -EINVAL;
        r = read_record(s->tasks_fd, guid, KIND_TASK, &buf, &payload, &plen);
        if (r < 0)
                return r;
        return spool_task_decode(payload, plen, ret);
}

bool spool_has_task(struct tether_spool *s, const char *guid) {
        return tether_guid_valid(guid) && faccessat(s->tasks_fd, guid, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int spool_save_response(struct tether_spool *s, const char *name, uint32_t return_code, const uint8_t *frame,
                        size_t len) {
        _cleanup_(freep) uint8_t *payload = NULL;
        int r;

        if (!name_safe(name))
                return -EINVAL;
        bool existed = spool_has_response(s, name), was_acked = existed && spool_response_acked(s, name);
        payload = malloc(4 + len);
        if (!payload)
                return -ENOMEM;
        put_be32(payload, return_code);
        memcpy(payload + 4, frame, len);
        r = write_record(s->responses_fd, name, KIND_RESPONSE, payload, 4 + len);
        if (r < 0)
                return r;
        if (!existed) {
                s->counts.unacked++;
                if (spool_has_task(s, name) && s->counts.pending_tasks > 0)
                        s->counts.pending_tasks--;
        }
        /* A new response is not acknowledged, whatever an older one was. */
        if (was_acked) {
                if (unlinkat(s->acked_fd, name, 0) < 0 && errno != ENOENT)
                        return -errno;
                s->counts.unacked++;
        }
        return 0;
}

int spool_load_response(struct tether_spool *s, const char *name, uint32_t *ret_code, uint8_t **ret_frame,
                        size_t *ret_len) {
        _cleanup_(freep) uint8_t *buf = NULL;
        const uint8_t *payload;
        size_t plen;
        uint8_t *frame;
        int r;

        if (!name_safe(name))
                return -EINVAL;
        r = read_record(s->responses_fd, name, KIND_RESPONSE, &buf, &payload, &plen);
        if (r < 0)
                return r;
        if (plen < 4)
                return -EBADMSG;
        frame = malloc(plen - 4 + 1);
        if (!frame)
                return -ENOMEM;
        memcpy(frame, payload + 4, plen - 4);
        *ret_code = get_be32(payload);
        *ret_frame = frame;
        *ret_len = plen - 4;
        return 0;
}

bool spool_has_response(struct tether_spool *s, const char *name) {
        return name_safe(name) && faccessat(s->responses_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

bool spool_response_acked(struct tether_spool *s, const char *name) {
        return name_safe(name) && faccessat(s->acked_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int spool_mark_acked(struct tether_spool *s, const char *name) {
        int fd;

        if (!spool_has_response(s, name))
                return -ENOENT;
        if (spool_response_acked(s, name))
                return 0;
        fd = openat(s->acked_fd, name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        close(fd);
        if (s->counts.unacked > 0)
                s->counts.unacked--;
        return 0;
}

int spool_drop_response(struct tether_spool *s, const char *name) {
        bool acked;

        if (!name_safe(name))
                return -EINVAL;
        if (!spool_has_response(s, name))
                return 0;
        acked = spool_response_acked(s, name);
        if (unlinkat(s->acked_fd, name, 0) < 0 && errno != ENOENT)
                return -errno;
        if (unlinkat(s->responses_fd, name, 0) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!acked && s->counts.unacked > 0)
                s->counts.unacked--;
        if (spool_has_task(s, name))
                s->counts.pending_tasks++;
        return 0;
}

/* Lists the names in one of the spool's directories (temporary files skipped). */
static int list_names(int fd, char ***ret, size_t *ret_n) {
        _cleanup_(closep) int dfd = -1;
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *d;
        int r = 0;

        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d)
                return -errno;
        dfd = -1;
        rewinddir(d);
        while ((de = readdir(d))) {
                char **nn;
                if (!name_safe(de->d_name))
                        continue;
                nn = realloc(names, (n + 1) * sizeof(char *));
                if (!nn) {
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        closedir(d);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return r;
        }
        *ret = names;
        *ret_n = n;
        return 0;
}

static void free_names(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

int spool_foreach_pending_task(struct tether_spool *s, spool_task_fn fn, void *userdata) {
        char **names = NULL;
        size_t n = 0;
        int r;

        r = list_names(s->tasks_fd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                struct spool_task t;
                if (spool_has_response(s, names[i]))
                        continue;
                if (spool_load_task(s, names[i], &t) < 0)
                        continue;
                r = fn(s, &t, userdata);
                spool_task_done(&t);
        }
        free_names(names, n);
        return r < 0 ? r : 0;
}

int spool_foreach_unacked_response(struct tether_spool *s, spool_response_fn fn, void *userdata) {
        char **names = NULL;
        size_t n = 0;
        int r;

        r = list_names(s->responses_fd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_(freep) uint8_t *frame = NULL;
                uint32_t rc;
                size_t len;
                if (spool_response_acked(s, names[i]))
                        continue;
                if (spool_load_response(s, names[i], &rc, &frame, &len) < 0)
                        continue;
                r = fn(s, names[i], rc, frame, len, userdata);
        }
        free_names(names, n);
        return r < 0 ? r : 0;
}

struct aged_name {
        char *name; /* borrowed from the list */
        struct timespec mtime;
        uint64_t size;
};

static int aged_cmp(const void *a, const void *b) {
        const struct aged_name *x = a, *y = b;

        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
        if (x->mtime.tv_nsec != y->mtime.tv_nsec)
                return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
        return strcmp(x->name, y->name);
}

int spool_make_room(struct tether_spool *s, const char *prefix, size_t max_count, uint64_t max_bytes,
                    size_t incoming_bytes) {
        _cleanup_(freep) struct aged_name *aged = NULL;
        char **names = NULL;
        size_t n = 0, k = 0, first = 0;
        uint64_t total = incoming_bytes;
        int r, dropped = 0;

        r = list_names(s->responses_fd, &names, &n);
        if (r < 0)
                return r;
        aged = calloc(n ? n : 1, sizeof(*aged));
        if (!aged) {
                free_names(names, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (!startswith(names[i], prefix) ||
                    fstatat(s->responses_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                aged[k++] = (struct aged_name){names[i], st.st_mtim, (uint64_t)st.st_size};
                total += (uint64_t)st.st_size;
        }
        qsort(aged, k, sizeof(*aged), aged_cmp);
        /* Oldest first, until one more fits in both bounds. */
        while (first < k && (k - first >= max_count || total > max_bytes)) {
                r = spool_drop_response(s, aged[first].name);
                if (r < 0)
                        break;
                total -= aged[first].size;
                first++;
                dropped++;
        }
        free_names(names, n);
        return r < 0 ? r : dropped;
}

int spool_gc(struct tether_spool *s, time_t now) {
        char **names = NULL;
        size_t n = 0;
        int r, removed = 0;

        r = list_names(s->tasks_fd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                struct spool_task t;
                if (spool_load_task(s, names[i], &t) < 0)
                        continue;
                time_t keep_until = t.expires + SPOOL_REMEMBER_SECONDS;
                spool_task_done(&t);
                if (now <= keep_until)
                        continue;
                /* The response goes first, so that a crash in between never
                 * leaves a response without the memory of its task. */
                (void)spool_drop_response(s, names[i]);
                if (unlinkat(s->tasks_fd, names[i], 0) == 0) {
                        removed++;
                        /* drop_response counted it pending again. */
                        if (s->counts.pending_tasks > 0)
                                s->counts.pending_tasks--;
                        if (s->counts.tasks > 0)
                                s->counts.tasks--;
                }
        }
        free_names(names, n);

        /* Responses without a task (to pushes whose signature failed) are
         * forgotten a week after they were written, acknowledged or not. */
        r = list_names(s->responses_fd, &names, &n);
        if (r < 0)
                return removed;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (spool_has_task(s, names[i]) ||
                    fstatat(s->responses_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    now <= st.st_mtime + SPOOL_REMEMBER_SECONDS)
                        continue;
                if (spool_drop_response(s, names[i]) >= 0)
                        removed++;
        }
        free_names(names, n);
        return removed;
}

int spool_count(struct tether_spool *s, struct spool_counts *ret) {
        *ret = s->counts;
        return 0;
}

static int spool_recount(struct tether_spool *s) {
        char **names = NULL;
        size_t n = 0;
        struct spool_counts c = {0};
        int r;

        r = list_names(s->tasks_fd, &names, &n);
        if (r < 0)
                return r;
        c.tasks = (unsigned)n;
        for (size_t i = 0; i < n; i++)
                if (!spool_has_response(s, names[i]))
                        c.pending_tasks++;
        free_names(names, n);
        r = list_names(s->responses_fd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (!spool_response_acked(s, names[i]))
                        c.unacked++;
        free_names(names, n);
        s->counts = c;
        return 0;
}

int spool_recent(struct tether_spool *s, struct spool_task *ret, uint32_t *ret_code, size_t max) {
        char **names = NULL;
        size_t n = 0, filled = 0;
        int r;

        r = list_names(s->tasks_fd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                struct spool_task t;
                uint32_t rc = 0;
                _cleanup_(freep) uint8_t *frame = NULL;
                size_t flen, pos;
                if (spool_load_task(s, names[i], &t) < 0)
                        continue;
                if (spool_load_response(s, names[i], &rc, &frame, &flen) < 0)
                        rc = 0;
                /* Insertion into the newest-first array of at most max. */
                for (pos = 0; pos < filled && ret[pos].received >= t.received; pos++)
                        ;
                if (pos >= max) {
                        spool_task_done(&t);
                        continue;
                }
                if (filled == max) {
                        spool_task_done(&ret[max - 1]);
                        filled--;
                }
                memmove(ret + pos + 1, ret + pos, (filled - pos) * sizeof(*ret));
                memmove(ret_code + pos + 1, ret_code + pos, (filled - pos) * sizeof(*ret_code));
                ret[pos] = t;
                ret_code[pos] = rc;
                filled++;
        }
        free_names(names, n);
        return (int)filled;
}
