/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The machine-policy cycle (TaskType 1): fetch the machine policy through
 * the owner, verify and store it (policy-answer.c), then run the hooks with
 * it on fd 3.
 */
#include <errno.h>
#include <string.h>

#include "scheduler/run.h"

static enum step_result machine_start(struct tether_scheduler *s, struct run *run) {
        int r = request_policy(s, run, NULL);

        if (r < 0) {
                detail_add(&run->detail, "machine policy: fetch failed: %s", strerror(-r));
                run_finish(s, run, TETHER_RC_FAILED);
        }
        return STEP_AGAIN;
}

static enum step_result machine_failed(struct tether_scheduler *s, struct run *run) {
        run_finish(s, run, TETHER_RC_FAILED);
        return STEP_AGAIN;
}

static enum step_result machine_step(struct tether_scheduler *s, struct run *run) {
        if (run->phase == PHASE_WAIT_POLICY)
                return policy_wait(s, run, machine_failed);
        return STEP_WAIT;
}

const struct cycle_ops machine_policy_cycle = {
        .start = machine_start,
        .step = machine_step,
        .finish = run_hooks_finish,
};
