/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The periodic timers: one per cycle, at start + offset + k * interval on
 * CLOCK_BOOTTIME, re-armed when the machine policy's Intervals change.
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

/* ---- Periodic runs ---------------------------------------------------------- */

uint64_t splitmix64(uint64_t x) {
        x += 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}

static uint64_t periodic_next(const struct tether_scheduler *s, const struct periodic *p, uint64_t now) {
        uint64_t first = s->anchor + p->offset_seed % p->interval;

        if (now < first)
                return first;
        return first + ((now - first) / p->interval + 1) * p->interval;
}

static int on_periodic(sd_event_source *source, uint64_t usec, void *userdata);

static void periodic_arm(struct tether_scheduler *s, enum tether_task_type cycle) {
        struct periodic *p = &s->periodic[cycle];
        uint64_t now = 0, accuracy;

        if (p->interval == 0) {
                p->source = sd_event_source_disable_unref(p->source);
                return;
        }
        (void)sd_event_now(s->event, CLOCK_BOOTTIME, &now);
        p->next = periodic_next(s, p, now);
        accuracy = p->interval / 100;
        if (accuracy < USEC_PER_SEC)
                accuracy = USEC_PER_SEC;
        if (p->source) {
                (void)sd_event_source_set_time(p->source, p->next);
                (void)sd_event_source_set_time_accuracy(p->source, accuracy);
                (void)sd_event_source_set_enabled(p->source, SD_EVENT_ONESHOT);
        } else if (sd_event_add_time(s->event, &p->source, CLOCK_BOOTTIME, p->next, accuracy, on_periodic,
                                     s) < 0) {
                log_debug("%s: cannot arm the periodic timer", cycle_name(cycle));
                p->source = NULL;
        }
}

static int on_periodic(sd_event_source *source, uint64_t usec, void *userdata) {
        struct tether_scheduler *s = userdata;

        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                if (s->periodic[c].source != source)
                        continue;
                (void)enqueue(s, (enum tether_task_type)c, NULL, NULL, true);
                periodic_arm(s, (enum tether_task_type)c);
        }
        return 0;
}

void periodic_update(struct tether_scheduler *s, const struct policy *machine) {
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                uint64_t interval = s->option_interval[c];

                if (machine && machine->interval_sec[c] > 0)
                        interval = machine->interval_sec[c] * USEC_PER_SEC;
                if (interval == s->periodic[c].interval && (interval == 0 || s->periodic[c].source))
                        continue;
                s->periodic[c].interval = interval;
                periodic_arm(s, (enum tether_task_type)c);
        }
}

int tether_scheduler_next_run(const struct tether_scheduler *s, enum tether_task_type cycle,
                              uint64_t *ret_usec, uint64_t *ret_interval_usec) {
        if (!s || !cycle_valid((int)cycle))
                return -EINVAL;
        if (s->periodic[cycle].interval == 0 || !s->periodic[cycle].source)
                return -ENOENT;
        if (ret_usec)
                *ret_usec = s->periodic[cycle].next;
        if (ret_interval_usec)
                *ret_interval_usec = s->periodic[cycle].interval;
        return 0;
}
