/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy a policy cycle asked the owner for: verified, validated, stored
 * (or the stored one used), and handed to the hooks as sealed bytes.
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

/* ---- Policy answers --------------------------------------------------------- */

int request_policy(struct tether_scheduler *s, struct run *run, const char *user) {
        int r;

        run->pol.awaiting_user = user;
        run->phase = PHASE_WAIT_POLICY;
        if (!s->policy_request)
                return -EOPNOTSUPP;
        r = s->policy_request(s, user, s->userdata);
        return r < 0 ? r : 0;
}

/* Applies the effective machine policy's Intervals (or the options'). */

/* An errno the channel process sent, as text: it is not trusted to send
 * one in range (abs(INT_MIN) is undefined). */
static const char *peer_strerror(int error) {
        if (error < 0 && error > -4096)
                return strerror(-error);
        if (error > 0 && error < 4096)
                return strerror(error);
        return "unknown error";
}

/* Puts the verified policy in force for the hooks: fd 3, or none (-1)
 * when the scope has no policy. A signed empty Policy is a policy: hooks
 * read it and find nothing to set up. */
void hand_policy(struct run *run, int fd) {
        if (run->policy_fd >= 0)
                close(run->policy_fd);
        run->policy_fd = fd;
}

/* 304 and 404: the stored policy stays in force. A 404 is not signed, so
 * it never removes anything (only a signed empty Policy does). */
static int take_stored(struct tether_scheduler *s, struct run *run, const char *label, bool not_found) {
        const char *user = run->pol.awaiting_user;
        _cleanup_(policy_freep) struct policy *stored = NULL;
        char reason[256] = "";
        int fd = -1, r;

        r = policy_load(s->site_key, s->state_dir, user, &stored, &fd, reason, sizeof(reason));
        if (r == -ENOENT && not_found) {
                detail_add(&run->detail, "%s: no policy", label);
                hand_policy(run, -1);
                return 0;
        }
        if (r == -ENOENT) {
                detail_add(&run->detail,
                           "%s: unchanged, but no stored policy (fetch it again without If-None-Match)",
                           label);
                return -EBADMSG;
        }
        if (r < 0) {
                detail_add(&run->detail, "%s: stored policy refused: %s", label,
                           reason[0] ? reason : strerror(-r));
                return -EBADMSG;
        }
        if (not_found)
                detail_add(&run->detail, "%s: no policy on the MP (404), policy %s%s kept", label,
                           stored->policy_id, stored->empty ? " (empty)" : "");
        else
                detail_add(&run->detail, "%s: policy %s%s unchanged", label, stored->policy_id,
                           stored->empty ? " (empty)" : "");
        if (!user)
                periodic_update(s, stored);
        hand_policy(run, TAKE_FD(fd));
        return 0;
}

/* The newest TimeStamp the scope ever accepted: the floor file, or the
 * stored policy's for a state written before the floor existed. */
static int rollback_floor(struct tether_scheduler *s, const char *user, char floor[POLICY_TIMESTAMP_SIZE]) {
        _cleanup_(policy_freep) struct policy *stored = NULL;
        int r;

        floor[0] = 0;
        r = policy_floor_get(s->state_dir, user, floor);
        if (r < 0 && r != -ENOENT)
                return r;
        if (policy_load(s->site_key, s->state_dir, user, &stored, NULL, NULL, 0) >= 0 &&
            strcmp(stored->timestamp, floor) > 0)
                memcpy(floor, stored->timestamp, POLICY_TIMESTAMP_SIZE);
        return 0;
}

static int take_new(struct tether_scheduler *s, struct run *run, const char *label,
                    struct policy_answer *a) {
        const char *user = run->pol.awaiting_user;
        _cleanup_(policy_freep) struct policy *fresh = NULL;
        char reason[256] = "", floor[POLICY_TIMESTAMP_SIZE];
        int fd, r;

        r = policy_verify_parse(s->site_key, a->body, a->len, a->sig, a->sig_len, user, &fresh, reason,
                                sizeof(reason));
        if (r < 0) {
                detail_add(&run->detail, "%s: policy rejected: %s", label,
                           reason[0] ? reason : strerror(-r));
                return -EBADMSG;
        }
        r = rollback_floor(s, user, floor);
        if (r < 0) {
                detail_add(&run->detail, "%s: policy rejected: the rollback floor is unreadable: %s", label,
                           strerror(-r));
                return -EBADMSG;
        }
        /* A validly signed but older revision is a replay. */
        if (strcmp(fresh->timestamp, floor) < 0) {
                detail_add(&run->detail,
                           "%s: policy rejected: TimeStamp %s is older than %s, the newest accepted", label,
                           fresh->timestamp, floor);
                return -EBADMSG;
        }
        /* The floor first: a crash after it leaves the new floor with the
         * old policy, which only refuses what is older than the new one. */
        r = policy_floor_raise(s->state_dir, user, fresh->timestamp);
        if (r >= 0)
                r = policy_store(s->state_dir, user, a->body, a->len, a->sig, a->sig_len);
        if (r < 0) {
                detail_add(&run->detail, "%s: storing the policy failed: %s", label, strerror(-r));
                return -EBADMSG;
        }
        fd = policy_seal(a->body, a->len);
        if (fd < 0) {
                detail_add(&run->detail, "%s: cannot hand the policy over: %s", label, strerror(-fd));
                return -EBADMSG;
        }
        detail_add(&run->detail, "%s: policy %s%s stored", label, fresh->policy_id,
                   fresh->empty ? " (empty)" : "");
        if (!user)
                periodic_update(s, fresh);
        hand_policy(run, fd);
        return 0;
}

/* Handles the answer for the policy being fetched. Returns 0 when the
 * policy (or its absence) is in place, with run->policy_fd set; negative
 * when the cycle's step failed (Detail written). */
static int take_policy_answer(struct tether_scheduler *s, struct run *run, const char *label) {
        struct policy_answer *a = run->pol.answer;
        int r = -EBADMSG;

        run->pol.answer = NULL;
        if (run->pol.awaiting_user && !policy_user_name_valid(run->pol.awaiting_user)) {
                detail_add(&run->detail, "%s: bad user name", label);
                goto done;
        }
        switch (a->result) {
        case TETHER_POLICY_ERROR:
                detail_add(&run->detail, "%s: fetch failed: %s", label, peer_strerror(a->error));
                break;
        case TETHER_POLICY_NONE:
                r = take_stored(s, run, label, true);
                break;
        case TETHER_POLICY_UNCHANGED:
                r = take_stored(s, run, label, false);
                break;
        case TETHER_POLICY_NEW:
                r = take_new(s, run, label, a);
                break;
        }
done:
        policy_answer_free(a);
        return r;
}

enum step_result policy_wait(struct tether_scheduler *s, struct run *run,
                             enum step_result (*on_failed)(struct tether_scheduler *s, struct run *run)) {
        if (!run->pol.answer) {
                if (now_monotonic(s) < run->deadline)
                        return STEP_WAIT;
                detail_add(&run->detail, "%s%s: timed out waiting for the policy",
                           run->pol.awaiting_user ? "user " : "machine policy",
                           run->pol.awaiting_user ? run->pol.awaiting_user : "");
                run_finish(s, run, TETHER_RC_TIMED_OUT);
                return STEP_AGAIN;
        }
        if (take_policy_answer(s, run,
                               run->pol.current_user ? run->pol.current_user->name : "machine policy") < 0)
                return on_failed(s, run);
        return run_hooks(s, run);
}
