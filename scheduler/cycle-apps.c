/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The app-evaluation cycle (TaskType 3): every Application of the stored
 * policies, detected, installed or removed, detected again; then the hooks.
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

/* ---- Applications ---------------------------------------------------------- */

static int app_cmp_name(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Takes p and fd (closed on failure too). */
static int add_policy_apps(struct run *run, struct policy *p, int fd) {
        struct policy **np = realloc(run->app.policies, (run->app.n_policies + 1) * sizeof(*np));
        int *nf = np ? realloc(run->app.policy_fds, (run->app.n_policies + 1) * sizeof(*nf)) : NULL;
        struct app_item *na;

        if (np)
                run->app.policies = np;
        if (nf)
                run->app.policy_fds = nf;
        if (!np || !nf) {
                policy_free(p);
                close(fd);
                return -ENOMEM;
        }
        run->app.policies[run->app.n_policies] = p;
        run->app.policy_fds[run->app.n_policies++] = fd;
        if (p->n_apps == 0)
                return 0;
        na = realloc(run->app.apps, (run->app.n_apps + p->n_apps) * sizeof(*na));
        if (!na)
                return -ENOMEM;
        run->app.apps = na;
        for (size_t i = 0; i < p->n_apps; i++) {
                struct app_item *it = &run->app.apps[run->app.n_apps];
                it->app = &p->apps[i];
                it->user = p->user;
                it->policy_fd = fd;
                run->app.n_apps++;
        }
        return 0;
}

static int load_one_policy(struct tether_scheduler *s, struct run *run, const char *user) {
        struct policy *p = NULL;
        char reason[256] = "";
        int r, fd = -1;

        r = policy_load(s->site_key, s->state_dir, user, &p, &fd, reason, sizeof(reason));
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                /* Never used: report it, and the cycle is not compliant. */
                detail_add(&run->detail, "%s%s policy refused: %s", user ? "user " : "machine",
                           user ? user : "", reason[0] ? reason : strerror(-r));
                run->app.app_failed = true;
                return 0;
        }
        r = add_policy_apps(run, p, fd);
        if (r >= 0 && !user) {
                /* The app-evaluation hooks get the machine policy's
                 * verified bytes, as the machine-policy hooks do. */
                int hook_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);

                if (hook_fd < 0)
                        return -errno;
                hand_policy(run, hook_fd);
        }
        return r;
}

static int load_app_policies(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) char *user_dir = NULL;
        char **names = NULL;
        size_t n_names = 0;
        struct dirent *de;
        DIR *dir;
        int r;

        r = load_one_policy(s, run, NULL);
        if (r < 0)
                return r;
        if (asprintf(&user_dir, "%s/policies/user", s->state_dir) < 0)
                return -ENOMEM;
        dir = opendir(user_dir);
        if (!dir)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(dir))) {
                size_t len = strlen(de->d_name);
                char *name, **nn;

                if (len <= 4 || !streq(de->d_name + len - 4, ".xml"))
                        continue;
                name = strndup(de->d_name, len - 4);
                if (!name)
                        break;
                if (!policy_user_name_valid(name)) {
                        free(name);
                        continue;
                }
                nn = realloc(names, (n_names + 1) * sizeof(*nn));
                if (!nn) {
                        free(name);
                        break;
                }
                names = nn;
                names[n_names++] = name;
        }
        closedir(dir);
        if (n_names > 1)
                qsort(names, n_names, sizeof(*names), app_cmp_name);
        r = 0;
        for (size_t i = 0; i < n_names; i++) {
                if (r >= 0)
                        r = load_one_policy(s, run, names[i]);
                free(names[i]);
        }
        free(names);
        return r;
}

static const char *app_step_name(enum app_step step, const struct policy_app *app) {
        if (step == APP_ACT)
                return app->intent == POLICY_INTENT_REQUIRED ? "install" : "uninstall";
        return "detect";
}

static int spawn_app_step(struct tether_scheduler *s, struct run *run) {
        const struct app_item *it = &run->app.apps[run->app.app_index];
        const struct policy_app *app = it->app;
        const char *command;
        _cleanup_(freep) char *step = NULL;
        struct strv env = {0};
        char *argv[4];
        uint64_t now = now_monotonic(s), deadline;
        int r;

        if (run->app.app_step == APP_ACT)
                command = app->intent == POLICY_INTENT_REQUIRED ? app->install : app->uninstall;
        else
                command = app->detect;
        if (asprintf(&step, "%s%s%s%s %s", app->id, it->user ? " (user " : "", it->user ? it->user : "",
                     it->user ? ")" : "", app_step_name(run->app.app_step, app)) < 0)
                return -ENOMEM;

        if (lseek(it->policy_fd, 0, SEEK_SET) < 0)
                return -errno;
        deadline = now + app->timeout_sec * USEC_PER_SEC;
        if (deadline > run->deadline)
                deadline = run->deadline;

        env_common(s, run, &env);
        strv_addf(&env, "TETHER_POLICY=/dev/fd/3");
        strv_addf(&env, "TETHER_APP_ID=%s", app->id);
        strv_addf(&env, "TETHER_APP_VERSION=%s", app->version ? app->version : "");
        if (it->user)
                strv_addf(&env, "TETHER_USER=%s", it->user);
        if (env.oom) {
                strv_clear(&env);
                return -ENOMEM;
        }
        argv[0] = (char *)"/bin/sh";
        argv[1] = (char *)"-c";
        argv[2] = (char *)command;
        argv[3] = NULL;
        struct child_spec spec = {
                .step = step,
                .exec_fd = -1,
                .argv = argv,
                .envp = env.v,
                .cwd = "/",
                .policy_fd = it->policy_fd,
                .deadline_usec = deadline,
                .grace_usec = s->grace,
                .output_cap = s->output_cap,
        };
        r = child_spawn(s->event, &spec, on_child_done, s, &run->child);
        strv_clear(&env);
        return r;
}

static void app_state(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void app_state(struct run *run, const char *fmt, ...) {
        const struct app_item *it = &run->app.apps[run->app.app_index];
        _cleanup_(freep) char *state = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&state, fmt, ap);
        va_end(ap);
        if (n < 0)
                state = NULL;
        detail_add(&run->detail, "%s%s%s%s: %s", it->app->id, it->user ? " (user " : "",
                   it->user ? it->user : "", it->user ? ")" : "", state ? state : "?");
}

/* Handles the end of an application step. Returns true when the cycle
 * must stop (its own time limit is reached). */
static bool app_result(struct tether_scheduler *s, struct run *run) {
        const struct app_item *it = &run->app.apps[run->app.app_index];
        const struct policy_app *app = it->app;
        const struct child_result *res = child_get_result(run->child);
        _cleanup_(freep) char *excerpt = output_excerpt(res);
        bool required = app->intent == POLICY_INTENT_REQUIRED;
        bool present, next_app = true;
        enum app_step step = run->app.app_step;

        report_output(s, run);
        if (res->timed_out) {
                app_state(run, "timed out (%s)", app_step_name(step, app));
                run->app.app_failed = true;
                if (now_monotonic(s) >= run->deadline) {
                        detail_add(&run->detail, "stopped: cycle time limit reached");
                        run->return_code = TETHER_RC_TIMED_OUT;
                        return true;
                }
                goto next;
        }
        if (step == APP_ACT) {
                if (res->end != CHILD_EXITED || res->status != 0) {
                        app_state(run, "failed (%s %d)%s%s", res->end == CHILD_EXITED ? "exit" : "signal",
                                  res->status, excerpt ? ": " : "", excerpt ? excerpt : "");
                        run->app.app_failed = true;
                        goto next;
                }
                run->app.app_step = APP_REDETECT;
                next_app = false;
                goto next;
        }
        if (res->end != CHILD_EXITED) {
                app_state(run, "failed (detect: signal %d)", res->status);
                run->app.app_failed = true;
                goto next;
        }
        present = res->status == 0;
        if (step == APP_DETECT) {
                if (required == present) {
                        app_state(run, "compliant");
                        goto next;
                }
                run->app.app_step = APP_ACT;
                next_app = false;
                goto next;
        }
        /* APP_REDETECT */
        if (required && present) {
                app_state(run, "installed");
        } else if (!required && !present) {
                app_state(run, "removed");
        } else {
                app_state(run, required ? "failed (not detected after install)"
                                        : "failed (still detected after uninstall)");
                run->app.app_failed = true;
        }
next:
        if (next_app) {
                run->app.app_index++;
                run->app.app_step = APP_DETECT;
        }
        return false;
}

/* ---- The cycle's ops --------------------------------------------------------- */

static enum step_result apps_start(struct tether_scheduler *s, struct run *run) {
        int r = load_app_policies(s, run);

        if (r < 0) {
                detail_add(&run->detail, "loading policies failed: %s", strerror(-r));
                run_finish(s, run, TETHER_RC_FAILED);
                return STEP_AGAIN;
        }
        if (run->app.n_apps == 0 && !run->app.app_failed)
                detail_add(&run->detail, "no application deployments");
        run->app.app_index = 0;
        run->app.app_step = APP_DETECT;
        run->phase = PHASE_APP_NEXT;
        return STEP_AGAIN;
}

static enum step_result apps_next(struct tether_scheduler *s, struct run *run) {
        int r;

        if (run->app.app_index >= run->app.n_apps) {
                /* Then the cycle's hooks, as for the policy cycles. */
                if (run->app.app_failed)
                        run->return_code = TETHER_RC_FAILED;
                return run_hooks(s, run);
        }
        r = spawn_app_step(s, run);
        if (r < 0) {
                app_state(run, "failed (could not start: %s)",
                          r == -EBUSY ? "SIGCHLD is not blocked" : strerror(-r));
                run->app.app_failed = true;
                run->app.app_index++;
                run->app.app_step = APP_DETECT;
                return STEP_AGAIN;
        }
        run->phase = PHASE_APP_WAIT;
        return STEP_WAIT;
}

static enum step_result apps_step(struct tether_scheduler *s, struct run *run) {
        switch (run->phase) {
        case PHASE_APP_NEXT:
                return apps_next(s, run);
        case PHASE_APP_WAIT:
                if (!run->child || !child_exited(run->child))
                        return STEP_WAIT;
                if (app_result(s, run)) {
                        run_finish(s, run, TETHER_RC_TIMED_OUT);
                        return STEP_AGAIN;
                }
                run->child = child_free(run->child);
                run->phase = PHASE_APP_NEXT;
                return STEP_AGAIN;
        default:
                return STEP_WAIT;
        }
}

const struct cycle_ops app_evaluation_cycle = {
        .start = apps_start,
        .step = apps_step,
        .finish = run_hooks_finish,
};
