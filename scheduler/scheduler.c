/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's public face (scheduler.h): creation, the owner's policy
 * answers, cancellation, settings. The work is in queue.c, periodic.c,
 * run.c and the cycle-*.c files (run.h).
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

/* ---- Public ---------------------------------------------------------------- */

int tether_scheduler_new(sd_event *event, const struct tether_scheduler_options *options,
                         tether_cycle_done_fn done, tether_policy_request_fn policy_request, void *userdata,
                         struct tether_scheduler **ret) {
        struct tether_scheduler *s;
        struct policy *machine = NULL;
        uint64_t seed;
        int r;

        if (!event || !options || !options->state_dir || !ret)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->state_dir = strdup(options->state_dir);
        s->cycles_dir = strdup_or_null(options->cycles_dir);
        if (!s->state_dir || (options->cycles_dir && !s->cycles_dir)) {
                r = -ENOMEM;
                goto fail;
        }
        s->site_key = options->site_key;
        s->grace = options->kill_grace_usec ? options->kill_grace_usec : DEFAULT_GRACE_USEC;
        s->output_cap = options->output_cap ? options->output_cap : DEFAULT_OUTPUT_CAP;
        s->own_uid = geteuid();
        s->done = done;
        s->policy_request = policy_request;
        s->userdata = userdata;
        s->active_uids = default_active_uids;
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                s->time_limit[c] = options->time_limit_usec[c];
                if (s->time_limit[c] == 0)
                        s->time_limit[c] =
                                tether_task_type_info((uint32_t)c)->fallback_limit_sec * USEC_PER_SEC;
                s->option_interval[c] = options->interval_usec[c];
        }

        r = sd_event_add_defer(event, &s->kick, on_kick, s);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_enabled(s->kick, SD_EVENT_OFF);
        if (r < 0)
                goto fail;

        seed = options->random_seed;
        if (seed == 0 && getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
                r = -errno;
                goto fail;
        }
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++)
                s->periodic[c].offset_seed = splitmix64(seed + (uint64_t)c);
        r = sd_event_now(event, CLOCK_BOOTTIME, &s->anchor);
        if (r < 0)
                goto fail;
        /* The stored machine policy's Intervals apply from the start, if it
         * still verifies. */
        (void)policy_load(s->site_key, s->state_dir, NULL, &machine, NULL, NULL, 0);
        periodic_update(s, machine);
        policy_free(machine);

        *ret = s;
        return 0;

fail:
        tether_scheduler_free(s);
        return r;
}

struct tether_scheduler *tether_scheduler_free(struct tether_scheduler *s) {
        if (!s)
                return NULL;
        while (s->queue) {
                struct run *next = s->queue->next;
                run_free(s->queue);
                s->queue = next;
        }
        run_free(s->running);
        s->running = NULL;
        for (int c = 0; c <= TETHER_TASK_TYPE_MAX; c++)
                s->periodic[c].source = sd_event_source_disable_unref(s->periodic[c].source);
        s->kick = sd_event_source_disable_unref(s->kick);
        sd_event_unref(s->event);
        free(s->state_dir);
        free(s->cycles_dir);
        free(s);
        return NULL;
}

int tether_scheduler_policy(struct tether_scheduler *s, const char *user, enum tether_policy_result result,
                            const uint8_t *body, size_t len, const uint8_t *sig, size_t sig_len, int error) {
        struct run *run;
        struct policy_answer *a;

        if (!s)
                return -EINVAL;
        run = s->running;
        if (!run || run->cancelled || run->phase != PHASE_WAIT_POLICY || run->pol.answer)
                return -ESRCH;
        if ((user == NULL) != (run->pol.awaiting_user == NULL) ||
            (user && !streq(user, run->pol.awaiting_user)))
                return -ESRCH;
        if (result < TETHER_POLICY_NEW || result > TETHER_POLICY_ERROR)
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->result = result;
        a->error = error;
        if (result == TETHER_POLICY_NEW) {
                if (len > POLICY_MAX_BYTES) {
                        a->result = TETHER_POLICY_ERROR;
                        a->error = -EFBIG;
                } else {
                        a->body = len ? malloc(len) : NULL;
                        a->sig = sig_len ? malloc(sig_len) : NULL;
                        if ((len && !a->body) || (sig_len && !a->sig)) {
                                policy_answer_free(a);
                                return -ENOMEM;
                        }
                        if (len)
                                memcpy(a->body, body, len);
                        if (sig_len)
                                memcpy(a->sig, sig, sig_len);
                        a->len = len;
                        a->sig_len = sig_len;
                }
        }
        run->pol.answer = a;
        kick(s);
        return 0;
}

void tether_scheduler_set_site_key(struct tether_scheduler *s, const struct tether_key *key) {
        s->site_key = key;
}

void tether_scheduler_set_output_handler(struct tether_scheduler *s, tether_child_output_fn fn,
                                         void *userdata) {
        s->output_fn = fn;
        s->output_userdata = userdata;
}

void tether_scheduler_set_session_query(struct tether_scheduler *s, tether_active_uids_fn fn,
                                        void *userdata) {
        s->active_uids = fn ? fn : default_active_uids;
        s->active_uids_userdata = fn ? userdata : NULL;
}
