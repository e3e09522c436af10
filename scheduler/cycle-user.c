/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The user-policy cycle (TaskType 2): for each active user (or the one
 * TaskParam names, users.c), fetch that user's policy, verify and store it
 * (policy-answer.c), run the hooks as the user; one user's failure does not
 * stop the others.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/run.h"

static enum step_result user_start(struct tether_scheduler *s, struct run *run) {
        uint32_t rc = resolve_users(s, run);

        if (rc != 0) {
                run_finish(s, run, rc);
                return STEP_AGAIN;
        }
        run->pol.user_index = 0;
        run->phase = PHASE_USER_NEXT;
        return STEP_AGAIN;
}

/* On to the next user, this one's failure recorded. */
static enum step_result user_failed(struct tether_scheduler *s, struct run *run) {
        run_mark_failed(run);
        run->pol.user_index++;
        run->phase = PHASE_USER_NEXT;
        return STEP_AGAIN;
}

static enum step_result user_next(struct tether_scheduler *s, struct run *run) {
        int r;

        if (run->pol.user_index >= run->pol.n_users) {
                run_finish(s, run, run->return_code);
                return STEP_AGAIN;
        }
        run->pol.current_user = &run->pol.users[run->pol.user_index];
        run->hooks_failed = 0;
        r = request_policy(s, run, run->pol.current_user->name);
        if (r < 0) {
                detail_add(&run->detail, "%s: fetch failed: %s", run->pol.current_user->name, strerror(-r));
                return user_failed(s, run);
        }
        return STEP_AGAIN;
}

static enum step_result user_step(struct tether_scheduler *s, struct run *run) {
        switch (run->phase) {
        case PHASE_WAIT_POLICY:
                return policy_wait(s, run, user_failed);
        case PHASE_USER_NEXT:
                return user_next(s, run);
        default:
                return STEP_WAIT;
        }
}

/* After one user's hooks: the next user. */
static enum step_result user_finish(struct tether_scheduler *s, struct run *run) {
        if (run->policy_fd >= 0) {
                close(run->policy_fd);
                run->policy_fd = -1;
        }
        run->pol.user_index++;
        run->phase = PHASE_USER_NEXT;
        return STEP_AGAIN;
}

const struct cycle_ops user_policy_cycle = {
        .start = user_start,
        .step = user_step,
        .finish = user_finish,
        .keyed_by_param = true,
};
