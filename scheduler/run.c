/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state machine of the running run, driven from one deferred event
 * ("kick") so that no callback into the owner ever happens in the middle of
 * a state change; each step goes to the cycle's ops (run.h).
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

/* The cycles, by task type: the one list of them in scheduler/. A task
 * type of common/tasktype.h without an entry answers NotSupported (3). */
static const struct cycle_ops *const cycles[TETHER_TASK_TYPE_MAX + 1] = {
        [TETHER_TASK_MACHINE_POLICY] = &machine_policy_cycle,
        [TETHER_TASK_USER_POLICY] = &user_policy_cycle,
        [TETHER_TASK_APP_EVALUATION] = &app_evaluation_cycle,
};

const struct cycle_ops *cycle_ops(enum tether_task_type cycle) {
        return cycle_valid((int)cycle) ? cycles[cycle] : NULL;
}

const char *cycle_name(enum tether_task_type cycle) {
        return tether_task_type_cli_name(cycle);
}

bool cycle_valid(int cycle) {
        return cycle >= 1 && cycle <= TETHER_TASK_TYPE_MAX;
}

void policy_answer_free(struct policy_answer *a) {
        if (!a)
                return;
        free(a->user);
        free(a->body);
        free(a->sig);
        free(a);
}

void user_entry_clear(struct user_entry *u) {
        free(u->name);
        free(u->home);
        free(u->groups);
}

void waiters_free(struct waiter *w) {
        while (w) {
                struct waiter *next = w->next;
                free(w->task_guid);
                free(w);
                w = next;
        }
}

void run_free(struct run *run) {
        if (!run)
                return;
        run->child = child_free(run->child);
        run->deadline_source = sd_event_source_disable_unref(run->deadline_source);
        waiters_free(run->waiters);
        free(run->param);
        free(run->first_guid);
        free(run->detail.buf);
        policy_answer_free(run->pol.answer);
        if (run->policy_fd >= 0)
                close(run->policy_fd);
        for (size_t i = 0; i < run->pol.n_users; i++)
                user_entry_clear(&run->pol.users[i]);
        free(run->pol.users);
        for (size_t i = 0; i < run->n_hooks; i++) {
                free(run->hooks[i].name);
                if (run->hooks[i].fd >= 0)
                        close(run->hooks[i].fd);
        }
        free(run->hooks);
        free(run->app.apps);
        for (size_t i = 0; i < run->app.n_policies; i++) {
                policy_free(run->app.policies[i]);
                if (run->app.policy_fds[i] >= 0)
                        close(run->app.policy_fds[i]);
        }
        free(run->app.policies);
        free(run->app.policy_fds);
        free(run);
}

void kick(struct tether_scheduler *s) {
        (void)sd_event_source_set_enabled(s->kick, SD_EVENT_ONESHOT);
}

uint64_t now_monotonic(struct tether_scheduler *s) {
        uint64_t now = 0;

        (void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        return now;
}

/* ---- Answering ------------------------------------------------------------ */

static void answer_waiters(struct tether_scheduler *s, enum tether_task_type cycle, struct waiter *waiters,
                           uint32_t rc, const char *detail) {
        while (waiters) {
                struct waiter *next = waiters->next;
                if (s->done)
                        s->done(s, cycle, waiters->task_guid, rc, detail, s->userdata);
                free(waiters->task_guid);
                free(waiters);
                waiters = next;
        }
}

void run_finish(struct tether_scheduler *s, struct run *run, uint32_t rc) {
        _cleanup_(freep) char *detail = NULL;
        struct waiter *waiters = run->waiters;
        enum tether_task_type cycle = run->cycle;

        if (run->detail.len == 0)
                detail_add(&run->detail, "%s", rc == TETHER_RC_SUCCESS ? "completed" : "failed");
        detail = text_clean(run->detail.buf ? run->detail.buf : "", run->detail.len, TETHER_DETAIL_MAX);
        run->waiters = NULL;
        if (s->running == run)
                s->running = NULL;
        run_free(run);
        kick(s);
        log_debug("%s: done, ReturnCode %u: %s", cycle_name(cycle), rc, detail ? detail : "");
        answer_waiters(s, cycle, waiters, rc, detail ? detail : "out of memory");
}

/* ---- Children -------------------------------------------------------------- */

void on_child_done(struct child *c, void *userdata) {
        struct tether_scheduler *s = userdata;

        kick(s);
}

void report_output(struct tether_scheduler *s, struct run *run) {
        const struct child_result *res = child_get_result(run->child);

        if (!s->output_fn)
                return;
        s->output_fn(s, run->cycle, child_get_step(run->child),
                     res->end == CHILD_EXITED ? res->status : -res->status, res->output, res->output_len,
                     res->output_total, s->output_userdata);
}

void env_common(struct tether_scheduler *s, struct run *run, struct strv *env) {
        strv_addf(env, "%s", FIXED_PATH);
        strv_addf(env, "TETHER_CYCLE=%s", cycle_name(run->cycle));
        strv_addf(env, "TETHER_TASK_GUID=%s", run->first_guid ? run->first_guid : "");
        strv_addf(env, "TETHER_TASK_PARAM=%s", run->param);
        strv_addf(env, "TETHER_STATE_DIR=%s", s->state_dir);
}

/* ---- The state machine ---------------------------------------------------- */

void run_mark_failed(struct run *run) {
        if (run->return_code == TETHER_RC_SUCCESS)
                run->return_code = TETHER_RC_FAILED;
}

static int on_run_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        struct tether_scheduler *s = userdata;

        /* A running child has its own timer at the same deadline; this one
         * is for waiting on the owner (the policy fetch). */
        kick(s);
        return 0;
}

static void run_begin(struct tether_scheduler *s, struct run *run) {
        uint64_t now = now_monotonic(s);

        run->return_code = TETHER_RC_SUCCESS;
        run->deadline = now + s->time_limit[run->cycle];
        (void)sd_event_add_time(s->event, &run->deadline_source, CLOCK_MONOTONIC, run->deadline, 0,
                                on_run_deadline, s);
        log_debug("%s: starting (param '%s')", cycle_name(run->cycle), run->param);
}

enum step_result run_hooks_finish(struct tether_scheduler *s, struct run *run) {
        if (run->n_hooks > 0 && run->hooks_failed == 0)
                detail_add(&run->detail, "%zu hook%s ran", run->n_hooks, run->n_hooks == 1 ? "" : "s");
        run_finish(s, run, run->return_code);
        return STEP_AGAIN;
}

enum step_result run_hooks(struct tether_scheduler *s, struct run *run) {
        int r;

        if (!run->hooks_listed) {
                r = list_hooks(s, run);
                if (r < 0) {
                        if (run->detail.len == 0)
                                detail_add(&run->detail, "listing hooks failed: %s", strerror(-r));
                        run_finish(s, run, TETHER_RC_FAILED);
                        return STEP_AGAIN;
                }
        }
        run->hook_index = 0;
        run->phase = PHASE_HOOK_NEXT;
        return STEP_AGAIN;
}

static enum step_result hook_next(struct tether_scheduler *s, struct run *run) {
        int r;

        if (run->hook_index >= run->n_hooks)
                return cycle_ops(run->cycle)->finish(s, run);
        r = spawn_hook(s, run, &run->hooks[run->hook_index]);
        if (r < 0) {
                detail_add(&run->detail, "hook %s could not start: %s", run->hooks[run->hook_index].name,
                           r == -EBUSY ? "SIGCHLD is not blocked" : strerror(-r));
                run_mark_failed(run);
                run->hook_index++;
                return STEP_AGAIN;
        }
        run->phase = PHASE_HOOK_WAIT;
        return STEP_WAIT;
}

static enum step_result hook_wait(struct tether_scheduler *s, struct run *run) {
        if (!run->child || !child_exited(run->child))
                return STEP_WAIT;
        if (hook_result(s, run)) {
                run_finish(s, run, TETHER_RC_TIMED_OUT);
                return STEP_AGAIN;
        }
        run->child = child_free(run->child);
        run->hook_index++;
        run->phase = PHASE_HOOK_NEXT;
        return STEP_AGAIN;
}

static enum step_result run_step(struct tether_scheduler *s, struct run *run) {
        const struct cycle_ops *ops = cycle_ops(run->cycle);

        if (run->cancelled) {
                if (run->child && !child_exited(run->child))
                        return STEP_WAIT;
                /* Already answered Cancelled by tether_scheduler_cancel_all(). */
                s->running = NULL;
                run_free(run);
                return STEP_AGAIN;
        }
        switch (run->phase) {
        case PHASE_START:
                run_begin(s, run);
                if (!ops) {
                        run_finish(s, run, TETHER_RC_NOT_SUPPORTED);
                        return STEP_AGAIN;
                }
                return ops->start(s, run);
        case PHASE_HOOK_NEXT:
                return hook_next(s, run);
        case PHASE_HOOK_WAIT:
                return hook_wait(s, run);
        default:
                return ops->step(s, run);
        }
}

int on_kick(sd_event_source *source, void *userdata) {
        struct tether_scheduler *s = userdata;

        for (;;) {
                if (!s->running) {
                        struct run *run = s->queue;
                        if (!run)
                                return 0;
                        s->queue = run->next;
                        run->next = NULL;
                        s->running = run;
                }
                if (run_step(s, s->running) == STEP_WAIT)
                        return 0;
        }
}
