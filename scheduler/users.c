/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The users a user-policy cycle runs for: the active sessions, or the one
 * user TaskParam names; their passwd and group entries.
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

/* ---- Users ----------------------------------------------------------------- */

int default_active_uids(uid_t **ret_uids, void *userdata) {
        _cleanup_(freep) uid_t *all = NULL;
        uid_t *out;
        size_t n_out = 0;
        int n;

        n = sd_get_uids(&all);
        if (n == -ENOENT)
                n = 0; /* no logind here (a container): nobody is logged in */
        if (n < 0)
                return n;
        out = calloc(n > 0 ? (size_t)n : 1, sizeof(uid_t));
        if (!out)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                _cleanup_(freep) char *state = NULL;
                if (sd_uid_get_state(all[i], &state) < 0)
                        continue;
                if (streq(state, "active") || streq(state, "online"))
                        out[n_out++] = all[i];
        }
        *ret_uids = out;
        return (int)n_out;
}

static int user_entry_fill(const struct passwd *pw, struct user_entry *u) {
        int ngroups = 32;
        gid_t *groups = NULL;

        for (;;) {
                gid_t *ng = realloc(groups, (size_t)ngroups * sizeof(gid_t));
                int want = ngroups;
                if (!ng) {
                        free(groups);
                        return -ENOMEM;
                }
                groups = ng;
                if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &want) >= 0) {
                        ngroups = want;
                        break;
                }
                if (want <= ngroups || want > 65536) {
                        free(groups);
                        return -E2BIG;
                }
                ngroups = want;
        }
        u->name = strdup(pw->pw_name);
        u->home = strdup(pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
        u->groups = groups;
        u->n_groups = (size_t)ngroups;
        if (!u->name || !u->home)
                return -ENOMEM;
        return 0;
}

static int lookup_user(const char *name, uid_t uid, bool by_name, struct user_entry *u) {
        struct passwd pw, *result = NULL;
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        _cleanup_(freep) char *buf = NULL;
        int r;

        if (size < 16384)
                size = 16384;
        buf = malloc((size_t)size);
        if (!buf)
                return -ENOMEM;
        if (by_name)
                r = getpwnam_r(name, &pw, buf, (size_t)size, &result);
        else
                r = getpwuid_r(uid, &pw, buf, (size_t)size, &result);
        if (r != 0)
                return -r;
        if (!result)
                return -ENOENT;
        return user_entry_fill(result, u);
}

uint32_t resolve_users(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) uid_t *uids = NULL;
        int n, r;

        n = s->active_uids(&uids, s->active_uids_userdata);
        if (n < 0) {
                detail_add(&run->detail, "listing user sessions failed: %s", strerror(-n));
                return TETHER_RC_FAILED;
        }
        run->pol.users = calloc(n > 0 ? (size_t)n : 1, sizeof(*run->pol.users));
        if (!run->pol.users) {
                detail_add(&run->detail, "out of memory");
                return TETHER_RC_FAILED;
        }

        if (run->param[0]) {
                const char *name = run->param;
                bool logged_in = false;
                struct user_entry *u = &run->pol.users[0];

                if (!policy_user_name_valid(name)) {
                        detail_add(&run->detail, "user '%s' is not a valid user name", name);
                        return TETHER_RC_INVALID_TASK;
                }
                r = lookup_user(name, 0, true, u);
                if (r == -ENOENT) {
                        user_entry_clear(u);
                        *u = (struct user_entry){0};
                        detail_add(&run->detail, "user '%s' does not exist", name);
                        return TETHER_RC_INVALID_TASK;
                }
                run->pol.n_users = 1;
                if (r < 0) {
                        detail_add(&run->detail, "user '%s': lookup failed: %s", name, strerror(-r));
                        return TETHER_RC_FAILED;
                }
                if (u->uid == 0) {
                        detail_add(&run->detail, "user '%s' is root: user policy never runs as root", name);
                        return TETHER_RC_INVALID_TASK;
                }
                for (int i = 0; i < n; i++)
                        if (uids[i] == u->uid)
                                logged_in = true;
                if (!logged_in) {
                        detail_add(&run->detail, "user '%s' has no active session", name);
                        return TETHER_RC_INVALID_TASK;
                }
                return 0;
        }

        for (int i = 0; i < n; i++) {
                struct user_entry *u = &run->pol.users[run->pol.n_users];
                bool dup = false;

                if (uids[i] == 0)
                        continue; /* never as root */
                for (size_t j = 0; j < run->pol.n_users; j++)
                        if (run->pol.users[j].uid == uids[i])
                                dup = true;
                if (dup)
                        continue;
                r = lookup_user(NULL, uids[i], false, u);
                if (r < 0 || !policy_user_name_valid(u->name)) {
                        detail_add(&run->detail, "uid %u skipped (%s)", (unsigned)uids[i],
                                   r < 0 ? strerror(-r) : "user name not usable");
                        user_entry_clear(u);
                        *u = (struct user_entry){0};
                        if (run->return_code == TETHER_RC_SUCCESS)
                                run->return_code = TETHER_RC_FAILED;
                        continue;
                }
                run->pol.n_users++;
        }
        if (run->pol.n_users == 0 && run->detail.len == 0)
                detail_add(&run->detail, "no user with an active session");
        return 0;
}
