/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Private to scheduler/: the run (one cycle being carried out), the
 * scheduler's own state, and the operations each cycle implements. The
 * queue (queue.c) holds runs, the state machine (run.c) drives the running
 * one through its cycle's ops, the timers (periodic.c) submit runs, and each
 * cycle lives in a file of its own (cycle-*.c) in the manner of curl's
 * protocol handlers.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "scheduler/child.h"
#include "scheduler/internal.h"
#include "scheduler/policy.h"
#include "scheduler/scheduler.h"

#define USEC_PER_SEC 1000000ULL
#define DEFAULT_GRACE_USEC (5 * USEC_PER_SEC)
#define DEFAULT_OUTPUT_CAP (64u * 1024u)
#define DETAIL_WORK_MAX (4 * TETHER_DETAIL_MAX)
#define OUTPUT_EXCERPT_MAX 160
#define FIXED_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- Detail text and string vectors (text.c) ---- */

struct detail {
        char *buf;
        size_t len;
        bool overflow;
};

void detail_add(struct detail *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Valid UTF-8 without control characters, at most max bytes ("..." when cut). */
char *text_clean(const char *src, size_t len, size_t max);
char *output_excerpt(const struct child_result *res);

struct strv {
        char **v;
        size_t n;
        bool oom;
};

void strv_addf(struct strv *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strv_clear(struct strv *sv);

struct waiter {
        struct waiter *next;
        enum tether_task_type cycle;
        char *task_guid;
        bool periodic;
};

struct user_entry {
        char *name;
        uid_t uid;
        gid_t gid;
        char *home;
        gid_t *groups;
        size_t n_groups;
};

struct hook {
        char *name;
        int fd;
};

enum app_step {
        APP_DETECT,
        APP_ACT,
        APP_REDETECT,
};

struct app_item {
        const struct policy_app *app; /* borrowed from run->policies */
        const char *user;             /* borrowed; NULL for the machine policy */
        int policy_fd;                /* borrowed from run->policy_fds: its verified bytes */
};

enum phase {
        PHASE_START,
        PHASE_WAIT_POLICY,
        PHASE_HOOK_NEXT,
        PHASE_HOOK_WAIT,
        PHASE_USER_NEXT,
        PHASE_APP_NEXT,
        PHASE_APP_WAIT,
};

struct policy_answer {
        char *user;
        enum tether_policy_result result;
        uint8_t *body;
        size_t len;
        uint8_t *sig;
        size_t sig_len;
        int error;
};

struct run {
        struct run *next;
        enum tether_task_type cycle;
        char *param;
        char *first_guid;
        struct waiter *waiters;
        struct waiter **waiters_tail;
        bool has_periodic;
        bool cancelled;

        enum phase phase;
        uint64_t deadline;
        sd_event_source *deadline_source;
        struct detail detail;
        uint32_t return_code;

        /* The common head ends here: the hooks, which every cycle runs,
         * with the policy they get on fd 3 (-1 for none). */
        int policy_fd;
        bool hooks_listed;
        struct hook *hooks;
        size_t n_hooks, hook_index;
        size_t hooks_failed;

        /* The policy cycles' own (cycle-machine.c, cycle-user.c,
         * policy-answer.c, users.c). */
        struct {
                struct policy_answer *answer;
                const char *awaiting_user; /* NULL for the machine policy */
                struct user_entry *users;
                size_t n_users, user_index;
                struct user_entry *current_user; /* hooks run as this user */
        } pol;

        /* App evaluation's own (cycle-apps.c). */
        struct {
                struct policy **policies;
                int *policy_fds; /* one per policy: its verified bytes (policy_seal) */
                size_t n_policies;
                struct app_item *apps;
                size_t n_apps, app_index;
                enum app_step app_step;
                bool app_failed;
        } app;

        struct child *child;
};

struct periodic {
        sd_event_source *source;
        uint64_t interval;
        uint64_t offset_seed;
        uint64_t next;
};

struct tether_scheduler {
        sd_event *event;
        char *state_dir;
        char *cycles_dir;
        const struct tether_key *site_key;
        uint64_t time_limit[TETHER_TASK_TYPE_MAX + 1];
        uint64_t option_interval[TETHER_TASK_TYPE_MAX + 1];
        uint64_t grace;
        size_t output_cap;
        uid_t own_uid;

        tether_cycle_done_fn done;
        tether_policy_request_fn policy_request;
        void *userdata;
        tether_child_output_fn output_fn;
        void *output_userdata;
        tether_active_uids_fn active_uids;
        void *active_uids_userdata;

        sd_event_source *kick;
        struct run *queue; /* not yet running, FIFO */
        struct run *running;
        struct periodic periodic[TETHER_TASK_TYPE_MAX + 1];
        uint64_t anchor; /* CLOCK_BOOTTIME at creation */
};

/* ---- The state machine (run.c) ---- */

enum step_result {
        STEP_WAIT,
        STEP_AGAIN,
};

/* What a cycle does, beside what every cycle shares (the time limit, the
 * hooks, the answer). */
struct cycle_ops {
        /* The first step, after the run's clock started. */
        enum step_result (*start)(struct tether_scheduler *s, struct run *run);
        /* The cycle's own phases (every phase but START and the hooks'). */
        enum step_result (*step)(struct tether_scheduler *s, struct run *run);
        /* After the hooks ran: answer, or go on (the next user). */
        enum step_result (*finish)(struct tether_scheduler *s, struct run *run);
        /* Runs are coalesced by cycle, and also by TaskParam when true. */
        bool keyed_by_param;
};

extern const struct cycle_ops machine_policy_cycle; /* cycle-machine.c */
extern const struct cycle_ops user_policy_cycle;    /* cycle-user.c */
extern const struct cycle_ops app_evaluation_cycle; /* cycle-apps.c */

/* The ops of a task type the scheduler runs, or NULL. */
const struct cycle_ops *cycle_ops(enum tether_task_type cycle);
const char *cycle_name(enum tether_task_type cycle);
bool cycle_valid(int cycle);

void kick(struct tether_scheduler *s);
uint64_t now_monotonic(struct tether_scheduler *s);
void run_free(struct run *run);
void waiters_free(struct waiter *w);
void policy_answer_free(struct policy_answer *a);
void user_entry_clear(struct user_entry *u);
/* Ends the running run: detaches it first, so that callbacks may submit. */
void run_finish(struct tether_scheduler *s, struct run *run, uint32_t rc);
/* Marks the run failed without ending it (one user, one hook). */
void run_mark_failed(struct run *run);
int on_kick(sd_event_source *source, void *userdata);
void on_child_done(struct child *c, void *userdata);
void report_output(struct tether_scheduler *s, struct run *run);
void env_common(struct tether_scheduler *s, struct run *run, struct strv *env);
/* Lists the cycle's hooks (once) and starts them. */
enum step_result run_hooks(struct tether_scheduler *s, struct run *run);
/* The common finish: "N hooks ran", and the answer. */
enum step_result run_hooks_finish(struct tether_scheduler *s, struct run *run);

/* ---- Hooks (hooks.c) ---- */

int list_hooks(struct tether_scheduler *s, struct run *run);
int spawn_hook(struct tether_scheduler *s, struct run *run, const struct hook *hook);
/* True when the hook hit the cycle's time limit. */
bool hook_result(struct tether_scheduler *s, struct run *run);

/* ---- Policy answers (policy-answer.c), for the policy cycles ---- */

int request_policy(struct tether_scheduler *s, struct run *run, const char *user);
/* PHASE_WAIT_POLICY: on_failed is called when the answer cannot be used. */
enum step_result policy_wait(struct tether_scheduler *s, struct run *run,
                             enum step_result (*on_failed)(struct tether_scheduler *s, struct run *run));
void hand_policy(struct run *run, int fd);

/* ---- Users (users.c) ---- */

int default_active_uids(uid_t **ret_uids, void *userdata);
/* Fills run->users. Returns 0, or the ReturnCode to finish with (Detail
 * written). */
uint32_t resolve_users(struct tether_scheduler *s, struct run *run);

/* ---- Queue and timers (queue.c, periodic.c) ---- */

int enqueue(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
            const char *param, bool periodic);
void periodic_update(struct tether_scheduler *s, const struct policy *machine);
uint64_t splitmix64(uint64_t x);
