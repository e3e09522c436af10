/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/dirs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/config.h"
#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/log.h"

/* identity/, spool/ and trust/ are flat or one level deep; a deeper tree
 * is not ours to walk. */
#define GIVE_DEPTH_MAX 4

int dirs_root_state_path(const struct tether_config *config, char **ret) {
        size_t n = strlen(config->state_dir);
        char *p;

        if (geteuid() != 0) {
                p = strdup(config->state_dir);
        } else {
                while (n > 1 && config->state_dir[n - 1] == '/')
                        n--;
                p = malloc(n + sizeof("-root"));
                if (p) {
                        memcpy(p, config->state_dir, n);
                        memcpy(p + n, "-root", sizeof("-root"));
                }
        }
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* Only its owner (root) can rename or replace what is in it: owned by
 * root, and not writable by group or others unless sticky. */
static bool dir_trusted(const struct stat *st) {
        return S_ISDIR(st->st_mode) && st->st_uid == 0 && (!(st->st_mode & 022) || (st->st_mode & S_ISVTX));
}

/* Opens the absolute, canonical dir by an O_NOFOLLOW walk from "/",
 * checking that every directory on the way is trusted. */
static int open_trusted_dir(const char *dir) {
        _cleanup_(freep) char *copy = strdup(dir);
        _cleanup_(closep) int fd = -1;
        char *comp, *next_comp = NULL;
        struct stat st;

        if (!copy)
                return -ENOMEM;
        fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!dir_trusted(&st))
                return log_error_errno(
                        -EPERM, "'/' is writable by others than root: no safe place for root's state");
        for (comp = copy; comp; comp = next_comp) {
                int next;

                next_comp = strchr(comp, '/');
                if (next_comp)
                        *next_comp++ = 0;
                if (!comp[0])
                        continue;
                next = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return log_error_errno(-errno, "Cannot open '%s' (component '%s') safely: %m", dir,
                                               comp);
                close(fd);
                fd = next;
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!dir_trusted(&st))
                        return log_error_errno(
                                -EPERM,
                                "Refusing to keep root's state under '%s': its component '%s' "
                                "can be changed by others than root (owner %u, mode %04o)",
                                dir, comp, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        }
        return TAKE_FD(fd);
}

int dirs_prepare_root_state(const char *path) {
        _cleanup_(freep) char *copy = strdup(path), *parent = NULL;
        _cleanup_(closep) int parent_fd = -1, fd = -1;
        const char *name;
        char *slash;
        struct stat st;

        if (!copy)
                return -ENOMEM;
        slash = strrchr(copy, '/');
        if (!slash || slash[1] == 0 || path[0] != '/')
                return log_error_errno(-EINVAL, "The root state directory '%s' must be an absolute path",
                                       path);
        *slash = 0;
        name = slash + 1;
        /* realpath() only finds the candidate; the O_NOFOLLOW walk below
         * is what is trusted, so a swap in between fails the walk. */
        parent = realpath(copy[0] ? copy : "/", NULL);
        if (!parent)
                return log_error_errno(-errno, "Cannot resolve '%s': %m", copy[0] ? copy : "/");
        parent_fd = open_trusted_dir(parent);
        if (parent_fd < 0)
                return parent_fd;
        if (mkdirat(parent_fd, name, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "Cannot create the root state directory '%s': %m", path);
        fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "Cannot open the root state directory '%s': %m", path);
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_uid != 0)
                return log_error_errno(
                        -EPERM,
                        "The root state directory '%s' is owned by uid %u, not root: refusing "
                        "it (remove it and restart)",
                        path, (unsigned)st.st_uid);
        if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) < 0)
                return log_error_errno(-errno, "Cannot make '%s' 0700: %m", path);
        return 0;
}

static int give_tree(int dir_fd, const char *label, uid_t uid, gid_t gid, int depth);

/* One entry of a directory the channel user can write: opened without
 * following anything, checked, and changed through that descriptor only. */
static int give_entry(int dir_fd, const char *name, const char *label, uid_t uid, gid_t gid, int depth) {
        _cleanup_(closep) int fd = -1;
        struct stat st;

        fd = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode)) {
                _cleanup_(closep) int sub =
                        openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                struct stat st2;
                if (sub < 0)
                        return -errno;
                if (fstat(sub, &st2) < 0)
                        return -errno;
                if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino)
                        return -EBUSY; /* swapped under us: let the next start do it */
                return give_tree(sub, label, uid, gid, depth + 1);
        }
        /* A hard link may be someone else's file: never give it away. */
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
                log_debug("Not giving '%s/%s' to uid %u: not a regular file with one link", label, name,
                          (unsigned)uid);
                return 0;
        }
        if (st.st_uid == uid && st.st_gid == gid)
                return 0;
        if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return -errno;
        return 0;
}

static int give_tree(int dir_fd, const char *label, uid_t uid, gid_t gid, int depth) {
        struct stat st;
        DIR *d;
        struct dirent *de;
        int dup_fd, r = 0;

        if (depth > GIVE_DEPTH_MAX)
                return -ELOOP;
        if (fstat(dir_fd, &st) < 0)
                return -errno;
        if ((st.st_uid != uid || st.st_gid != gid) && fchown(dir_fd, uid, gid) < 0)
                return -errno;
        dup_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        if (dup_fd < 0)
                return -errno;
        d = fdopendir(dup_fd);
        if (!d) {
                close(dup_fd);
                return -errno;
        }
        while (r >= 0 && (de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        r = give_entry(dir_fd, de->d_name, label, uid, gid, depth);
        closedir(d);
        return r;
}

int dirs_prepare_channel(const struct tether_config *c, const struct passwd *pw) {
        static const char *const own[] = {"identity", "spool", "trust"};
        _cleanup_(closep) int state_fd = -1;
        int r;

        r = mkdir_p(c->state_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Cannot create the state directory '%s': %m", c->state_dir);
        r = mkdir_p(c->runtime_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Cannot create the runtime directory '%s': %m", c->runtime_dir);
        state_fd = open(c->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (state_fd < 0)
                return log_error_errno(-errno, "Cannot open the state directory '%s': %m", c->state_dir);
        for (size_t i = 0; i < ELEMENTSOF(own); i++) {
                _cleanup_(closep) int fd = -1;

                if (mkdirat(state_fd, own[i], 0700) < 0 && errno != EEXIST)
                        return log_error_errno(-errno, "Cannot create '%s/%s': %m", c->state_dir, own[i]);
                if (!pw)
                        continue;
                fd = openat(state_fd, own[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        return log_error_errno(-errno, "Cannot open '%s/%s' (not a directory?): %m",
                                               c->state_dir, own[i]);
                r = give_tree(fd, own[i], pw->pw_uid, pw->pw_gid, 0);
                if (r < 0)
                        return log_error_errno(r, "Cannot give '%s/%s' to user '%s': %m", c->state_dir,
                                               own[i], pw->pw_name);
        }
        return 0;
}
