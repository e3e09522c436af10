/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A PUSH, contract section 5, top to bottom: verify, parse, dedupe,
 * validate, persist, ack, dispatch; one function a stage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/pushstats.h"
#include "agent/session-internal.h"
#include "agent/session-log.h"
#include "agent/spool.h"
#include "agent/trust.h"
#include "common/log.h"
#include "common/strutil.h"

/* Step 1 failed: nothing runs; answer Unauthorized naming the IDs if the
 * body can be read at all. */
static void handle_unauthorized_push(struct session *s, struct tether_frame *frame, const char *why) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        struct tether_diag diag = {0};
        char name[64];

        if (tether_msg_parse(TETHER_FRAME_PUSH, frame->body, frame->body_len, &m, &diag) < 0) {
                log_warning("PUSH from %s with a bad signature (%s) and an unreadable body (%s): dropped",
                            peer_name(s), why, diag.text);
                set_error(s, "push with a bad signature dropped");
                return;
        }
        log_warning("PUSH pushid=%llu taskguid=%s from %s: signature did not verify against the site key "
                    "(%s); answering Unauthorized, nothing runs",
                    (unsigned long long)m->push.push_id, m->push.task_guid, peer_name(s), why);
        set_error(s, "push %s: bad signature", m->push.task_guid);
        snprintf(name, sizeof(name), UNAUTH_PREFIX "%s", m->push.task_guid);
        (void)respond(s, name, m->push.push_id, m->push.task_id, m->push.task_guid, TETHER_RC_UNAUTHORIZED,
                      "the PUSH signature did not verify against the site key");
}

static struct recent_task *remember_task(struct session *s, const char *guid, uint64_t push_id,
                                         uint64_t task_id) {
        struct recent_task *t = &s->recent[s->recent_next];

        strscpy(t->task_guid, sizeof(t->task_guid), guid);
        t->push_id = push_id;
        t->task_id = task_id;
        t->run_sent_ns = 0;
        s->recent_next = (s->recent_next + 1) % RECENT_MAX;
        return t;
}

/* One PUSH on its way through the stages of handle_push(): what each stage
 * learned, and the stamps (CLOCK_MONOTONIC ns) that pushstats records. */
struct push_work {
        struct tether_frame **framep; /* set to NULL when the session keeps the frame */
        bool retry;                   /* a held frame again: no receive line */
        struct tether_msg *msg;       /* owned; after parse */
        uint32_t rc;                  /* after validate: 0 runs, else the refusal */
        char detail[256];
        struct {
                uint64_t received, verified, parsed, spooled;
        } t;
};

/* A PUSH that cannot be read: a protocol error. Returns false (stop). */
static bool push_malformed(struct session *s, int error, const struct tether_diag *diag) {
        char text[300];

        snprintf(text, sizeof(text), "malformed PUSH: %s", diag->text[0] ? diag->text : strerror(-error));
        send_goodbye_and_reconnect(s, text);
        return false;
}

/* 1. Verify, before anything reads the body: tether_msg_open() in its two
 * halves, so that each is timed on its own. */
static bool push_verify(struct session *s, struct push_work *w) {
        struct tether_frame *frame = *w->framep;
        struct tether_diag diag = {0};
        int r;

        if (!s->approved || !site_trust_key(s->trust)) {
                send_goodbye_and_reconnect(s, "PUSH before an approved SIGNIN_CONFIRM");
                return false;
        }
        r = tether_msg_verify(frame, site_trust_key(s->trust), &diag);
        if (r == -EBADMSG && diag.kind == TETHER_DIAG_MISSING_SIGNATURE) {
                /* Unsigned is not forged: a protocol error, not ReturnCode 5
                 * (contract 7.6), and nothing of the body is read. */
                send_goodbye_and_reconnect(s, "PUSH without a signature (S = 0)");
                return false;
        }
        if (r == -EBADMSG) {
                handle_unauthorized_push(s, frame, diag.text);
                return false;
        }
        if (r < 0)
                return push_malformed(s, r, &diag);
        w->t.verified = pushstats_now();
        return true;
}

/* 2. Parse. */
static bool push_parse(struct session *s, struct push_work *w) {
        struct tether_frame *frame = *w->framep;
        struct tether_diag diag = {0};
        int r;

        r = tether_msg_parse(frame->type, frame->body, frame->body_len, &w->msg, &diag);
        if (r < 0)
                return push_malformed(s, r, &diag);
        w->t.parsed = pushstats_now();
        pushstats_add(s->stats, PUSHSTATS_VERIFY, w->t.received, w->t.verified);
        pushstats_add(s->stats, PUSHSTATS_PARSE, w->t.verified, w->t.parsed);
        if (!w->retry)
                session_log_push(&w->msg->push);
        return true;
}

/* 3. A TaskGUID seen before never runs again: ACK, and its answer again. */
static bool push_dedupe(struct session *s, struct push_work *w) {
        const struct tether_push *p = &w->msg->push;
        _cleanup_(freep) uint8_t *rsp = NULL;
        size_t rlen;
        uint32_t prc;

        if (!spool_has_task(s->spool, p->task_guid))
                return true;
        log_notice("Task %s was received before: not running it again", p->task_guid);
        (void)send_ack(s, p->task_guid);
        if (spool_load_response(s->spool, p->task_guid, &prc, &rsp, &rlen) >= 0)
                send_stored(s, p->task_guid, p->task_guid, prc, rsp, rlen);
        return false;
}

/* 4. Validate: a task that cannot run is still persisted and ACKed, then
 * answered with the refusal. */
static void push_validate(struct session *s, struct push_work *w) {
        const struct tether_push *p = &w->msg->push;
        time_t now = time(NULL);

        if (p->expires <= now)
                w->rc = TETHER_RC_INVALID_TASK, snprintf(w->detail, sizeof(w->detail), "the task expired");
        else if (p->timestamp > now + PUSH_FUTURE_SECONDS)
                w->rc = TETHER_RC_INVALID_TASK,
                snprintf(w->detail, sizeof(w->detail), "TimeStamp is %llds ahead of the device clock",
                         (long long)(p->timestamp - now));
        else if (p->client_id[0] && strcmp(p->client_id, s->client_id) != 0)
                w->rc = TETHER_RC_INVALID_TASK,
                snprintf(w->detail, sizeof(w->detail), "addressed to another ClientID");
        else if (!tether_task_type_info(p->task_type))
                w->rc = TETHER_RC_NOT_SUPPORTED,
                snprintf(w->detail, sizeof(w->detail), "unknown TaskType %u", p->task_type);
        else if (!s->enabled[p->task_type])
                w->rc = TETHER_RC_NOT_SUPPORTED,
                snprintf(w->detail, sizeof(w->detail), "disabled by local configuration");
}

/* 5. Persist (also the replay memory), before the ACK. On failure the
 * frame is held (while there is room) and tried again. */
static bool push_persist(struct session *s, struct push_work *w) {
        const struct tether_push *p = &w->msg->push;
        struct spool_task task = {0};
        time_t now = time(NULL);
        bool keep;
        int r;

        memcpy(task.task_guid, p->task_guid, TETHER_GUID_LEN);
        task.push_id = p->push_id;
        task.task_id = p->task_id;
        task.task_type = p->task_type;
        task.param = p->task_param;
        task.timestamp = p->timestamp;
        /* A refused task is remembered at least a week from now. */
        task.expires = w->rc && p->expires < now ? now : p->expires;
        task.received = now;
        r = spool_save_task(s->spool, &task);
        if (r >= 0) {
                w->t.spooled = pushstats_now();
                if (w->retry)
                        log_info("Task %s persisted now that the spool takes it again", p->task_guid);
                return true;
        }
        keep = s->n_held < HELD_MAX;
        if (w->retry)
                log_debug_errno(r, "Task %s still cannot be persisted: %m", p->task_guid);
        else
                log_error_errno(r, "Cannot persist task %s, refusing it for now (no PUSH_ACK)%s: %m",
                                p->task_guid,
                                keep ? "; trying again while connected"
                                     : "; the MP delivers it again at the next sign-in");
        set_error(s, "refusing task %s: cannot persist it: %s", p->task_guid, strerror(-r));
        if (keep) {
                s->held[s->n_held++] = *w->framep;
                *w->framep = NULL;
        }
        changed(s);
        return false;
}

/* 6. Acknowledge. */
static void push_ack(struct session *s, struct push_work *w) {
        int r = send_ack(s, w->msg->push.task_guid);

        if (r < 0)
                log_debug_errno(r, "PUSH_ACK for %s not sent: %m", w->msg->push.task_guid);
        pushstats_add(s->stats, PUSHSTATS_SPOOL, w->t.parsed, w->t.spooled);
        pushstats_add(s->stats, PUSHSTATS_ACK, w->t.spooled, pushstats_now());
}

/* 7. Dispatch: the refusal's answer, or the task to the scheduler. */
static void push_dispatch(struct session *s, struct push_work *w) {
        const struct tether_push *p = &w->msg->push;
        struct recent_task *recent;
        int r;

        if (w->rc) {
                log_warning("Task %s refused: %s (%s)", p->task_guid, tether_return_code_name(w->rc),
                            w->detail);
                (void)respond(s, p->task_guid, p->push_id, p->task_id, p->task_guid, w->rc, w->detail);
                return;
        }
        recent = remember_task(s, p->task_guid, p->push_id, p->task_id);
        recent->run_sent_ns = pushstats_now();
        r = s->ops.run(s->userdata, p->task_type, p->task_guid, p->task_param);
        if (r < 0) {
                log_error_errno(r, "Cannot hand task %s to the scheduler: %m", p->task_guid);
                (void)respond(s, p->task_guid, p->push_id, p->task_id, p->task_guid, TETHER_RC_FAILED,
                              "the scheduler is not available");
        }
        changed(s);
}

/* Handles a PUSH (contract section 5), one named stage after the other; a
 * retry of a held frame does not log the receive line again. Sets *framep
 * to NULL when it keeps the frame. */
void handle_push(struct session *s, struct tether_frame **framep, bool retry) {
        struct push_work w = {.framep = framep, .retry = retry, .t.received = pushstats_now()};

        if (push_verify(s, &w) && push_parse(s, &w) && push_dedupe(s, &w)) {
                push_validate(s, &w);
                if (push_persist(s, &w)) {
                        push_ack(s, &w);
                        push_dispatch(s, &w);
                }
        }
        tether_msg_free(w.msg);
}
