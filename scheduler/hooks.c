/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hooks of a cycle (cycles_dir/<cycle>/): listed, checked, run one at a
 * time, their results in Detail. See scheduler.h for the rules.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "scheduler/run.h"

/* ---- Hooks ---------------------------------------------------------------- */

static bool hook_name_valid(const char *name) {
        if (!name[0])
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == '-'))
                        return false;
        return true;
}

static int hook_dirent_filter(const struct dirent *de) {
        return hook_name_valid(de->d_name); /* like run-parts: backups, dpkg leftovers, dotfiles */
}

/* run-parts order, byte-wise so that no locale changes it. */
static int hook_dirent_cmp(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

/* Opens and checks every hook of the cycle's directory, in run-parts order,
 * so that hooks run and skipped ones are named in Detail in an order that
 * does not depend on the filesystem. Returns negative only when the
 * directory itself is unsafe (Detail written). */
/* Why the hook file fd may not run, or NULL when it may. */
static const char *hook_refusal(struct tether_scheduler *s, int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return "cannot stat";
        if (!S_ISREG(st.st_mode))
                return "not a regular file";
        if (st.st_uid != 0 && st.st_uid != s->own_uid)
                return "not owned by root";
        if (st.st_mode & 022)
                return "writable by group or others";
        if (!(st.st_mode & S_IXUSR))
                return "not executable";
        return NULL;
}

/* Adds one entry of the hooks directory, or says in Detail why not.
 * Returns 0, or -ENOMEM. */
static int add_hook(struct tether_scheduler *s, struct run *run, int dir_fd, const char *name, size_t *cap) {
        const char *reason;
        struct stat st;
        int fd;

        /* Never open a device or FIFO just to find out what it is. */
        if (fstatat(dir_fd, name, &st, 0) < 0 || !S_ISREG(st.st_mode)) {
                detail_add(&run->detail, "skipped: %s (not a regular file)", name);
                return 0;
        }
        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
                detail_add(&run->detail, "skipped: %s (%s)", name, strerror(errno));
                return 0;
        }
        reason = hook_refusal(s, fd);
        if (reason) {
                log_debug("%s: skipping hook %s: %s", cycle_name(run->cycle), name, reason);
                detail_add(&run->detail, "skipped: %s (%s)", name, reason);
                close(fd);
                return 0;
        }
        if (run->n_hooks == *cap) {
                size_t ncap = *cap ? *cap * 2 : 8;
                struct hook *nh = realloc(run->hooks, ncap * sizeof(*nh));
                if (!nh) {
                        close(fd);
                        return -ENOMEM;
                }
                run->hooks = nh;
                *cap = ncap;
        }
        run->hooks[run->n_hooks].name = strdup(name);
        if (!run->hooks[run->n_hooks].name) {
                close(fd);
                return -ENOMEM;
        }
        run->hooks[run->n_hooks].fd = fd;
        run->n_hooks++;
        return 0;
}

int list_hooks(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) char *dir_path = NULL;
        _cleanup_(closep) int dir_fd = -1;
        struct dirent **names = NULL;
        struct stat st;
        size_t cap = 0;
        int n, r = 0;

        run->hooks_listed = true;
        if (!s->cycles_dir)
                return 0;
        if (asprintf(&dir_path, "%s/%s", s->cycles_dir, cycle_name(run->cycle)) < 0)
                return -ENOMEM;
        dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0) {
                if (errno == ENOENT)
                        return 0;
                detail_add(&run->detail, "hooks directory %s: %s", dir_path, strerror(errno));
                return -errno;
        }
        if (fstat(dir_fd, &st) < 0)
                return -errno;
        if ((st.st_uid != 0 && st.st_uid != s->own_uid) || (st.st_mode & 022)) {
                detail_add(&run->detail,
                           "hooks directory %s is not owned by root or is writable by group "
                           "or others: no hook run",
                           dir_path);
                return -EPERM;
        }
        n = scandirat(dir_fd, ".", &names, hook_dirent_filter, hook_dirent_cmp);
        if (n < 0) {
                detail_add(&run->detail, "hooks directory %s: %s", dir_path, strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n && r >= 0; i++)
                r = add_hook(s, run, dir_fd, names[i]->d_name, &cap);
        for (int i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

int spawn_hook(struct tether_scheduler *s, struct run *run, const struct hook *hook) {
        struct user_entry *u = run->pol.current_user;
        _cleanup_(freep) char *step = NULL, *argv0 = NULL;
        struct strv env = {0};
        struct child_cred cred;
        char *argv[2];
        struct child_spec spec = {
                .exec_fd = hook->fd,
                .policy_fd = run->policy_fd,
                .cwd = "/", /* never a directory another user can write (python's sys.path[0]...) */
                .deadline_usec = run->deadline,
                .grace_usec = s->grace,
                .output_cap = s->output_cap,
        };
        int r;

        if (run->policy_fd >= 0 && lseek(run->policy_fd, 0, SEEK_SET) < 0)
                return -errno;
        if (asprintf(&step, "%s%shook %s", u ? u->name : "", u ? ": " : "", hook->name) < 0)
                return -ENOMEM;
        if (asprintf(&argv0, "%s/%s/%s", s->cycles_dir, cycle_name(run->cycle), hook->name) < 0)
                return -ENOMEM;
        argv[0] = argv0;
        argv[1] = NULL;

        env_common(s, run, &env);
        /* The verified bytes themselves, never a path that could be
         * swapped after the check. Each hook reads from the start. */
        strv_addf(&env, "TETHER_POLICY=%s", run->policy_fd >= 0 ? "/dev/fd/3" : "");
        if (u) {
                strv_addf(&env, "TETHER_USER=%s", u->name);
                strv_addf(&env, "HOME=%s", u->home);
                strv_addf(&env, "USER=%s", u->name);
                strv_addf(&env, "LOGNAME=%s", u->name);
                cred = (struct child_cred){
                        .uid = u->uid,
                        .gid = u->gid,
                        .groups = u->groups,
                        .n_groups = u->n_groups,
                };
                spec.cred = &cred;
                spec.cwd = u->home;
        }
        if (env.oom) {
                strv_clear(&env);
                return -ENOMEM;
        }
        spec.step = step;
        spec.argv = argv;
        spec.envp = env.v;
        r = child_spawn(s->event, &spec, on_child_done, s, &run->child);
        strv_clear(&env);
        return r;
}

/* Records the hook's outcome. Returns true when the cycle must stop (its
 * time limit is reached). */
bool hook_result(struct tether_scheduler *s, struct run *run) {
        const struct child_result *res = child_get_result(run->child);
        _cleanup_(freep) char *excerpt = output_excerpt(res);
        const char *step = child_get_step(run->child);

        report_output(s, run);
        if (res->timed_out) {
                detail_add(&run->detail, "%s timed out (cycle time limit), stopped", step);
                run->return_code = TETHER_RC_TIMED_OUT;
                return true;
        }
        if (res->end == CHILD_EXITED && res->status == 0)
                return false;
        run->hooks_failed++;
        if (run->return_code == TETHER_RC_SUCCESS)
                run->return_code = TETHER_RC_FAILED;
        if (res->end == CHILD_EXITED)
                detail_add(&run->detail, "%s failed (exit %d)%s%s", step, res->status, excerpt ? ": " : "",
                           excerpt ? excerpt : "");
        else
                detail_add(&run->detail, "%s failed (signal %d)%s%s", step, res->status, excerpt ? ": " : "",
                           excerpt ? excerpt : "");
        return false;
}
