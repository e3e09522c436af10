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

/* A cycle is a task type: enum tether_task_type, its number the TaskType. */
#include "common/tasktype.h"
#include "transport/policy-answer.h"

struct tether_scheduler_options {
        const char *state_dir;             /* policies/ and floor/: root's own, 0700, that no
                                            * other user can write or rename (agent/dirs.h) */
        const char *cycles_dir;            /* "/etc/tether/cycles.d": machine-policy/, user-policy/,
                                            * app-evaluation/ */
        const struct tether_key *site_key; /* verifies policies; borrowed */
        uint64_t time_limit_usec[TETHER_TASK_TYPE_MAX + 1]; /* per cycle, index by enum */
        uint64_t interval_usec[TETHER_TASK_TYPE_MAX + 1];   /* 0: no periodic run */
        uint64_t kill_grace_usec;                           /* SIGTERM to SIGKILL; default 5 s when 0 */
        size_t output_cap;    /* bytes of stdout+stderr kept per child; 64 KiB when 0 */
        uint64_t random_seed; /* for the per-device offset; 0 draws one */
};

/* Called once per submitted request (every joined request gets its own
 * call), and once per periodic run with task_guid NULL. */
typedef void (*tether_cycle_done_fn)(struct tether_scheduler *s, enum tether_task_type cycle,
                                     const char *task_guid, uint32_t return_code, const char *detail,
                                     void *userdata);

/* The scheduler needs the current policy for user (NULL: the machine
 * policy). The owner fetches it and answers with tether_scheduler_policy()
 * later (or from within the callback). Returning a negative errno fails the
 * cycle's fetch step. */
typedef int (*tether_policy_request_fn)(struct tether_scheduler *s, const char *user, void *userdata);

int tether_scheduler_new(sd_event *event, const struct tether_scheduler_options *options,
                         tether_cycle_done_fn done, tether_policy_request_fn policy_request, void *userdata,
                         struct tether_scheduler **ret);
struct tether_scheduler *tether_scheduler_free(struct tether_scheduler *s); /* accepts NULL */

/* Requests pending at once (queued, joined or running) beyond which
 * tether_scheduler_submit() refuses. */
#define TETHER_SCHEDULER_PENDING_MAX 256u

/*
 * Requests a run. task_guid may be NULL (a local trigger). param is the
 * push's TaskParam ("" or NULL for none). Returns 0 when accepted (queued,
 * joined to a queued run, or scheduled after the running one), -EINVAL for
 * an unknown cycle, -ENOBUFS when TETHER_SCHEDULER_PENDING_MAX requests
 * are already pending (the request is not queued; periodic ticks are never
 * refused).
 */
int tether_scheduler_submit(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
                            const char *param);

/* Answers a policy request. The body is verified against the site key
 * before it is parsed; one that fails is never stored and the cycle
 * answers Failed (2) with the reason. */
int tether_scheduler_policy(struct tether_scheduler *s, const char *user, enum tether_policy_result result,
                            const uint8_t *body, size_t len, const uint8_t *sig, size_t sig_len, int error);

/* Cancels everything queued or running (SIGTERM to the children, then
 * SIGKILL after the grace). Each pending request is answered Cancelled. */
void tether_scheduler_cancel_all(struct tether_scheduler *s);

/* Number of requests queued or running, for status lines. */
unsigned tether_scheduler_pending(const struct tether_scheduler *s);

/* ------------------------------------------------------------------------
 * Added by the scheduler implementation (nothing above was changed).
 *
 * Event loop. Child processes are waited for with sd-event child sources,
 * which need SIGCHLD blocked (sigprocmask) in every thread of the process
 * BEFORE the sd_event is created and the scheduler made. Without that,
 * cycles that run a child answer Failed with "SIGCHLD is not blocked".
 *
 * What runs in parallel: nothing. One cycle runs at a time, in FIFO order
 * of submission, with coalescing. Why: every cycle touches shared state.
 * Machine and user policy write the policies that app evaluation reads;
 * hooks of both policy cycles configure the same machine; package managers
 * take a global lock anyway. Cycles are rare (pushes, hourly schedules), so
 * serial execution costs nothing that matters, and it makes each result
 * reproducible. The price is latency behind a long cycle, bounded by the
 * per-cycle time limits below. So app evaluation never overlaps a machine
 * or user policy cycle, in either direction.
 *
 * Coalescing: requests are keyed by cycle, and for the user policy cycle
 * also by TaskParam (one user, or "" for all active users); TaskParam of
 * the other cycles is passed to hooks but does not split runs. A request
 * whose key matches a queued (not yet running) run joins it; otherwise it
 * queues a new run, which for a running key is exactly one more run after
 * the current one. Every joined request gets its own done call, in order
 * of submission. A periodic tick joins like a request with task_guid NULL,
 * and at most one periodic caller per run.
 *
 * Time limits: time_limit_usec[] 0 means 1800 s for the policy cycles and
 * 14400 s for app evaluation. On the limit the running child's process
 * group gets SIGTERM, then SIGKILL after kill_grace_usec, and the cycle
 * answers TimedOut (6) naming the step. An application's own
 * TimeoutSeconds stops only that step: the application is listed as
 * "timed out (<step>)" and the cycle answers Failed (2).
 *
 * Periodic runs: interval_usec[] from options, replaced by the effective
 * machine policy's <Intervals> (the user policies' Intervals are ignored:
 * there is one schedule per device). Each cycle's ticks fall at
 * start + offset + k * interval on CLOCK_BOOTTIME, offset being a per-device
 * random value in [0, interval) derived from random_seed (pass a value
 * derived from the machine ID to keep it across restarts), with an
 * accuracy of interval/100 (at least 1 s), so an idle device wakes once
 * per tick.
 *
 * Children: fork into their own process group; stdin /dev/null;
 * stdout+stderr into one pipe, output_cap bytes kept, the rest read and
 * dropped; cwd "/" (never a directory another user can write, where an
 * interpreter would pick up modules); umask 022; signal mask and dispositions
 * reset; only fds 0-2 (and 3/4 below) open. When the child exits, what
 * it left running in its process group is killed (SIGKILL): a hook that
 * wants a lasting process starts it through systemd. Environment, nothing
 * else:
 *   PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
 *   TETHER_CYCLE=machine-policy|user-policy|app-evaluation
 *   TETHER_TASK_GUID (the run's first request, "" for periodic/local)
 *   TETHER_TASK_PARAM, TETHER_STATE_DIR (options.state_dir)
 *   TETHER_POLICY: "/dev/fd/3", a sealed read-only memfd holding exactly
 *     the bytes the scheduler verified (never a path that could be swapped
 *     after the check), positioned at 0 for each child: for machine and
 *     user hooks the policy in force for the scope, for application
 *     commands the policy the application came from. "" for hooks when the
 *     scope has no policy at all (never had one, or only 404s).
 *   TETHER_USER (user hooks, and commands from a user policy)
 *   HOME, USER, LOGNAME (user hooks only, from the passwd entry)
 *   TETHER_APP_ID, TETHER_APP_VERSION (application commands)
 * User hooks run as the user: supplementary groups from getgrouplist()
 * (initgroups() done in the parent, because NSS is not fork-safe), then
 * setgid, setuid, each checked, and a check that root cannot be regained;
 * cwd is the user's HOME, or "/" when that is not reachable. A user
 * policy cycle never runs hooks as uid 0: root sessions are skipped and
 * TaskParam "root" answers InvalidTask (4).
 *
 * Hooks (cycles_dir/machine-policy/, cycles_dir/user-policy/,
 * cycles_dir/app-evaluation/): names
 * matching ^[A-Za-z0-9_-]+$ (others ignored silently, like run-parts), in
 * strcmp order. A hook must be a regular file (symlinks are followed),
 * owned by root (or by the scheduler's own uid when it is not root),
 * executable by its owner and not writable by group or others; each other
 * file is skipped and listed in Detail as "skipped: name (reason)". The
 * file checked is the file executed (opened once, fstat, execveat). All
 * hooks run even after one fails; the cycle answers Failed (2) naming each
 * failed hook and its exit status.
 *
 * Policy answers: NEW is verified (type byte 0x50, site key) before it is
 * parsed, then validated (docs/PROTOCOL.md section 7; a user policy must
 * name that user; a TimeStamp older than the newest one accepted for the
 * scope is refused as a rollback), then stored. UNCHANGED uses the stored policy, verified
 * again; if there is none, the cycle answers Failed. ERROR answers Failed
 * "fetch failed: ...". A rejected policy is never stored and the previous
 * one stays in force. NONE (404) is not signed, so it changes nothing: the
 * stored policy, if any, stays in force and the hooks run with it (with
 * TETHER_POLICY="" when there is none), and the cycle succeeds. Only a
 * signed Policy can replace a policy: to withdraw one, the MP serves a
 * signed empty Policy (no child element), stored and handed to the hooks
 * like any other, which then find nothing to set up.
 * Rollback: a NEW policy whose TimeStamp is older than the newest one ever
 * accepted for its scope (kept in state_dir/floor/, also when the policy
 * file is gone) is refused.
 *
 * App evaluation hooks run as root after every application has been
 * evaluated, with TETHER_POLICY the stored machine policy ("" when there is
 * none); Detail lists the applications first, then the hooks as above
 * ("N hooks ran" when all of them succeeded).
 *
 * App evaluation: for every Application of the stored machine policy, then
 * of each stored user policy (by user name), all verified again before use;
 * commands run as root through /bin/sh -c. Detail lists "ID: state", with
 * " (user NAME)" after the ID for a user policy's applications; states:
 * compliant, installed, removed, failed (exit N), failed (signal N),
 * failed (not detected after install), failed (still detected after
 * uninstall), timed out (detect|install|uninstall).
 *
 * Detail is at most TETHER_DETAIL_MAX bytes of valid UTF-8 without control
 * characters; longer text is cut at a character boundary and ends in
 * "...".
 *
 * Callbacks (done, policy_request, output, session query) may call
 * tether_scheduler_submit(), _policy(), _cancel_all() and _pending(), but
 * never tether_scheduler_free(). Done calls are made from the event loop,
 * never from inside tether_scheduler_submit() or _policy(), which only queue
 * work; tether_scheduler_cancel_all() answers Cancelled (7) synchronously,
 * from inside the call, for every request queued or running, and stops the
 * running child in the background (SIGTERM, SIGKILL after the grace); no
 * new run starts until that child is gone. tether_scheduler_free() answers
 * nothing (call cancel_all first to answer), kills a running child's
 * process group with SIGKILL and reaps it before returning.
 *
 * User-policy hooks must be executable by the user (e.g. 0755): they are
 * executed after the switch to the user's credentials.
 * ------------------------------------------------------------------------ */

#include <stdbool.h>
#include <sys/types.h>

/* tether_scheduler_policy() returns -ESRCH when no cycle is waiting for
 * that policy (it came too late, or the cycle was cancelled or timed out);
 * the answer is then dropped. */

/* Receives each child's captured output (at most output_cap bytes, not
 * NUL-terminated; total is what the child wrote) when the child has ended,
 * for the program's logs. status: the exit code, or minus the signal. */
typedef void (*tether_child_output_fn)(struct tether_scheduler *s, enum tether_task_type cycle,
                                       const char *step, int status, const char *output, size_t len,
                                       uint64_t total, void *userdata);
/* Replaces the key that verifies policies (borrowed; after a site key
 * rotation, a key that accepts the current key and its predecessors in
 * their overlap: transport/rotation.h). */
void tether_scheduler_set_site_key(struct tether_scheduler *s, const struct tether_key *key);

void tether_scheduler_set_output_handler(struct tether_scheduler *s, tether_child_output_fn fn,
                                         void *userdata);

/* Lists the uids that are logged in. Returns their number and sets *ret_uids
 * to an array that the scheduler frees with free(), or a negative errno.
 * The default uses sd-login: users whose state is "active" or "online"
 * (logged in, whether or not in the foreground). Tests inject their own. */
typedef int (*tether_active_uids_fn)(uid_t **ret_uids, void *userdata);
void tether_scheduler_set_session_query(struct tether_scheduler *s, tether_active_uids_fn fn,
                                        void *userdata);

/* When the cycle's next periodic run is due, CLOCK_BOOTTIME in usec, and
 * its current interval (after any policy override). Returns -ENOENT when
 * the cycle has no periodic run, -EINVAL for an unknown cycle. */
int tether_scheduler_next_run(const struct tether_scheduler *s, enum tether_task_type cycle,
                              uint64_t *ret_usec, uint64_t *ret_interval_usec);
