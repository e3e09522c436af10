/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The queue: submit, coalesce, cancel. One run at a time, FIFO.
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

/* ---- Queue ----------------------------------------------------------------- */

static bool run_key_matches(const struct run *run, enum tether_task_type cycle, const char *param) {
        const struct cycle_ops *ops = cycle_ops(cycle);

        if (run->cycle != cycle)
                return false;
        if (ops && ops->keyed_by_param)
                return streq(run->param, param);
        return true;
}

int enqueue(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
            const char *param, bool periodic) {
        struct run *run = NULL, **tail = &s->queue;
        struct waiter *w;

        if (!param)
                param = "";
        for (struct run *q = s->queue; q; q = q->next) {
                tail = &q->next;
                if (!run && run_key_matches(q, cycle, param))
                        run = q;
        }
        if (run && periodic && run->has_periodic)
                return 0;
        /* The channel process is not trusted to send a bounded number of
         * requests; coalescing already bounds the useful work. */
        if (!periodic && tether_scheduler_pending(s) >= TETHER_SCHEDULER_PENDING_MAX)
                return -ENOBUFS;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->periodic = periodic;
        w->cycle = cycle;
        if (task_guid) {
                w->task_guid = strdup(task_guid);
                if (!w->task_guid) {
                        free(w);
                        return -ENOMEM;
                }
        }
        if (!run) {
                run = calloc(1, sizeof(*run));
                if (!run) {
                        waiters_free(w);
                        return -ENOMEM;
                }
                run->cycle = cycle;
                run->policy_fd = -1;
                run->waiters_tail = &run->waiters;
                run->param = strdup(param);
                if (!run->param) {
                        waiters_free(w);
                        run_free(run);
                        return -ENOMEM;
                }
                *tail = run;
        }
        if (!run->first_guid && task_guid)
                run->first_guid = strdup(task_guid); /* best effort: only for TETHER_TASK_GUID */
        if (periodic)
                run->has_periodic = true;
        *run->waiters_tail = w;
        run->waiters_tail = &w->next;
        kick(s);
        return 0;
}

int tether_scheduler_submit(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
                            const char *param) {
        if (!s || !cycle_valid((int)cycle))
                return -EINVAL;
        return enqueue(s, cycle, task_guid, param, false);
}

void tether_scheduler_cancel_all(struct tether_scheduler *s) {
        struct waiter *answers = NULL, **answers_tail = &answers;

        if (!s)
                return;
        /* Collect first, answer last: the callbacks may submit again. */
        while (s->queue) {
                struct run *r = s->queue;
                s->queue = r->next;
                *answers_tail = r->waiters;
                while (*answers_tail)
                        answers_tail = &(*answers_tail)->next;
                r->waiters = NULL;
                run_free(r);
        }
        if (s->running && !s->running->cancelled) {
                struct run *r = s->running;
                *answers_tail = r->waiters;
                r->waiters = NULL;
                r->cancelled = true;
                /* The run stays until its child is gone, so nothing new
                 * starts beside it. */
                if (r->child)
                        child_terminate(r->child);
                kick(s);
        }
        while (answers) {
                struct waiter *next = answers->next;
                if (s->done)
                        s->done(s, answers->cycle, answers->task_guid, TETHER_RC_CANCELLED, "cancelled",
                                s->userdata);
                free(answers->task_guid);
                free(answers);
                answers = next;
        }
}

unsigned tether_scheduler_pending(const struct tether_scheduler *s) {
        unsigned n = 0;

        if (!s)
                return 0;
        for (const struct run *r = s->queue; r; r = r->next)
                for (const struct waiter *w = r->waiters; w; w = w->next)
                        n++;
        if (s->running)
                for (const struct waiter *w = s->running->waiters; w; w = w->next)
                        n++;
        return n;
}
