/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The local scheduler: runs the three cycles (machine policy, user policy,
 * app evaluation) on sd-event, in the root half of tetherd. It never touches
 * the network. Policy bytes reach it from the channel process, through the
 * policy-request callback below, and it verifies them against the site key
 * itself before it parses them.
 *
 * Ownership: the scheduler borrows the sd_event and the site key for its
 * whole life (the caller keeps both alive until tether_scheduler_free()).
 * Strings passed in are copied. Strings passed to callbacks are borrowed
 * for the duration of the call only.
 */

#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

struct tether_key;
struct tether_scheduler;

enum tether_cycle {
        TETHER_CYCLE_MACHINE_POLICY = 1, /* TaskType 1 */
        TETHER_CYCLE_USER_POLICY = 2,    /* TaskType 2 */
        TETHER_CYCLE_APP_EVALUATION = 3, /* TaskType 3 */
};
#define TETHER_CYCLE_MAX 3

struct tether_scheduler_options {
        const char *state_dir;  /* policies/ and hook working directory live here */
        const char *cycles_dir; /* "/etc/tether/cycles.d": machine-policy/, user-policy/ */
        const struct tether_key *site_key; /* verifies policies; borrowed */
        uint64_t time_limit_usec[TETHER_CYCLE_MAX + 1];  /* per cycle, index by enum */
        uint64_t interval_usec[TETHER_CYCLE_MAX + 1];    /* 0: no periodic run */
        uint64_t kill_grace_usec;  /* SIGTERM to SIGKILL; default 5 s when 0 */
        size_t output_cap;         /* bytes of stdout+stderr kept per child; 64 KiB when 0 */
        uint64_t random_seed;      /* for the per-device offset; 0 draws one */
};

/* Called once per submitted request (every joined request gets its own
 * call), and once per periodic run with task_guid NULL. */
typedef void (*tether_cycle_done_fn)(struct tether_scheduler *s, enum tether_cycle cycle,
                                     const char *task_guid, uint32_t return_code,
                                     const char *detail, void *userdata);

/* The scheduler needs the current policy for user (NULL: the machine
 * policy). The owner fetches it and answers with tether_scheduler_policy()
 * later (or from within the callback). Returning a negative errno fails the
 * cycle's fetch step. */
typedef int (*tether_policy_request_fn)(struct tether_scheduler *s, const char *user,
                                        void *userdata);

int tether_scheduler_new(sd_event *event, const struct tether_scheduler_options *options,
                         tether_cycle_done_fn done, tether_policy_request_fn policy_request,
                         void *userdata, struct tether_scheduler **ret);
struct tether_scheduler *tether_scheduler_free(struct tether_scheduler *s); /* accepts NULL */

/*
 * Requests a run. task_guid may be NULL (a local trigger). param is the
 * push's TaskParam ("" or NULL for none). Returns 0 when accepted (queued,
 * joined to a queued run, or scheduled after the running one), -EINVAL for
 * an unknown cycle.
 */
int tether_scheduler_submit(struct tether_scheduler *s, enum tether_cycle cycle,
                            const char *task_guid, const char *param);

enum tether_policy_result {
        TETHER_POLICY_NEW = 0,   /* body and signature follow */
        TETHER_POLICY_UNCHANGED, /* 304: keep the stored one */
        TETHER_POLICY_NONE,      /* 404: the MP has no policy for this scope */
        TETHER_POLICY_ERROR,     /* the fetch failed; error says how */
};

/* Answers a policy request. The body is verified against the site key
 * before it is parsed; one that fails is never stored and the cycle
 * answers Failed (2) with the reason. */
int tether_scheduler_policy(struct tether_scheduler *s, const char *user,
                            enum tether_policy_result result, const uint8_t *body, size_t len,
                            const uint8_t *sig, size_t sig_len, int error);

/* Cancels everything queued or running (SIGTERM to the children, then
 * SIGKILL after the grace). Each pending request is answered Cancelled. */
void tether_scheduler_cancel_all(struct tether_scheduler *s);

/* Number of requests queued or running, for status lines. */
unsigned tether_scheduler_pending(const struct tether_scheduler *s);
