/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/session.h"
#include "agent/session-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/pushstats.h"
#include "agent/session-log.h"
#include "agent/spool.h"
#include "agent/trust.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "transport/message.h"
#include "transport/rotation.h"
#include "transport/sign.h"

void set_error(struct session *s, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
        va_end(ap);
}

void changed(struct session *s) {
        if (s->ops.changed)
                s->ops.changed(s->userdata);
}

int session_new(const struct session_config *config, struct site_trust *trust, struct tether_spool *spool,
                const struct session_ops *ops, void *userdata, struct session **ret) {
        struct session *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        s->hostname = strdup(config->hostname ? config->hostname : "localhost");
        s->enrolment_token = strdup_or_null(config->enrolment_token);
        if (!s->hostname || (config->enrolment_token && !s->enrolment_token) ||
            session_set_identity(s, config->client_id, config->device_key) < 0) {
                session_free(s);
                return -ENOMEM;
        }
        s->max_frame = config->max_frame;
        memcpy(s->enabled, config->enabled, sizeof(s->enabled));
        s->trust = trust;
        s->spool = spool;
        s->ops = *ops;
        s->userdata = userdata;
        s->stats = pushstats_new();
        if (!s->stats) {
                session_free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

static void drop_held(struct session *s) {
        for (size_t i = 0; i < s->n_held; i++)
                tether_frame_free(s->held[i]);
        s->n_held = 0;
}

struct session *session_free(struct session *s) {
        if (!s)
                return NULL;
        drop_held(s);
        free(s->hostname);
        free(s->enrolment_token);
        pushstats_free(s->stats);
        free(s);
        return NULL;
}

int session_set_identity(struct session *s, const char *client_id, const struct tether_key *device_key) {
        if (strscpy(s->client_id, sizeof(s->client_id), client_id) < 0)
                return -EINVAL;
        s->device_key = device_key;
        return 0;
}

void session_set_rollover(struct session *s, const struct tether_key *old_key) {
        s->rollover_key = old_key;
        s->rollover_sent = false;
}

/* SIGNIN's KeyRollover: the old key's proof for the new key. */
static int add_rollover(struct session *s, struct tether_signin *m) {
        int r;

        r = tether_key_spki_base64(s->rollover_key, &m->rollover.previous_public_key);
        if (r < 0)
                return r;
        r = tether_rollover_sign(s->rollover_key, s->client_id, s->device_key, &m->rollover.signature);
        if (r < 0)
                return r;
        s->rollover_sent = true;
        return 0;
}

void session_set_enabled(struct session *s, const bool enabled[TETHER_TASK_TYPE_MAX + 1]) {
        memcpy(s->enabled, enabled, sizeof(s->enabled));
}

const struct pushstats *session_pushstats(const struct session *s) {
        return s->stats;
}

bool session_approved(const struct session *s) {
        return s->approved;
}

const char *session_last_error(const struct session *s) {
        return s->last_error;
}

int session_make_signin(struct session *s, uint8_t **ret_frame, size_t *ret_len) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        int r;

        r = tether_msg_new(TETHER_FRAME_SIGNIN, &m);
        if (r < 0)
                return r;
        m->signin.timestamp = time(NULL);
        memcpy(m->signin.client_id, s->client_id, TETHER_GUID_LEN);
        m->signin.version = strdup(TETHER_VERSION_STR);
        m->signin.hostname = strdup(s->hostname);
        if (!m->signin.version || !m->signin.hostname)
                return -ENOMEM;
        r = tether_key_spki_base64(s->device_key, &m->signin.public_key);
        if (r < 0)
                return r;
        m->signin.n_task_types = TETHER_TASK_TYPE_MAX;
        for (unsigned i = 0; i < TETHER_TASK_TYPE_MAX; i++)
                m->signin.task_types[i] = i + 1;
        m->signin.feature_1_1 = true;
        if (s->rollover_key) {
                r = add_rollover(s, &m->signin);
                if (r < 0)
                        return r;
        }
        if (s->enrolment_token) {
                m->signin.enrolment_token = strdup(s->enrolment_token);
                if (!m->signin.enrolment_token)
                        return -ENOMEM;
        }
        return tether_msg_seal(m, s->device_key, s->max_frame, ret_frame, ret_len);
}

static int send_frame(struct session *s, const uint8_t *frame, size_t len) {
        return s->ops.send(s->userdata, frame, len);
}

/* The MP's address for log lines: the link's "host:port", or a plain
 * phrase when the link does not say. */
const char *peer_name(struct session *s) {
        const char *p = s->ops.peer ? s->ops.peer(s->userdata) : NULL;
        return p && p[0] ? p : "the MP (address unknown)";
}

void send_goodbye_and_reconnect(struct session *s, const char *reason_text) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t len;

        /* The peer on the same line as the reason (contract 7.6). */
        log_error("Protocol error from %s: %s; closing the channel", peer_name(s), reason_text);
        set_error(s, "protocol error: %s", reason_text);
        if (tether_msg_new(TETHER_FRAME_GOODBYE, &m) >= 0) {
                m->goodbye.reason = TETHER_GOODBYE_PROTOCOL_ERROR;
                m->goodbye.retry_after_seconds = 0;
                if (tether_msg_seal(m, NULL, s->max_frame, &frame, &len) >= 0)
                        (void)send_frame(s, frame, len);
        }
        s->approved = false;
        s->ops.reconnect(s->userdata, 0, "protocol-error");
        changed(s);
}

/* Sends a stored response now if the channel is up and approved. */
void send_stored(struct session *s, const char *name, const char *guid, uint32_t rc, const uint8_t *frame,
                 size_t len) {
        int r;

        if (!s->approved)
                return;
        r = send_frame(s, frame, len);
        if (r < 0) {
                log_debug_errno(r, "Response for task %s stays queued: %m", guid);
                return;
        }
        session_log_sent_response(guid, rc, frame, len);
}

/* Answers to forged PUSHes cost the forger nothing: keep a bounded number
 * of them, so that a flood cannot fill the disk the genuine tasks need. */
static void make_room_unauth(struct session *s, size_t incoming) {
        int n = spool_make_room(s->spool, UNAUTH_PREFIX, SESSION_UNAUTH_MAX, SESSION_UNAUTH_BYTES_MAX,
                                incoming);

        if (n < 0)
                log_warning_errno(n, "Cannot bound the stored answers to forged PUSHes, ignoring: %m");
        else if (n > 0)
                log_warning(
                        "Dropped the %d oldest stored answer%s to PUSHes with a bad signature: at most %u "
                        "(%u KiB) are kept",
                        n, n == 1 ? "" : "s", SESSION_UNAUTH_MAX, SESSION_UNAUTH_BYTES_MAX / 1024);
}

/* The signed RESPONSE frame of a task: tether_msg_seal(), the one
 * build-sign-frame path of every signed frame. */
static int seal_response(struct session *s, uint64_t push_id, uint64_t task_id, const char *guid,
                         uint32_t rc, const char *detail, uint8_t **ret_frame, size_t *ret_len) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        int r;

        r = tether_msg_new(TETHER_FRAME_RESPONSE, &m);
        if (r < 0)
                return r;
        m->response.timestamp = time(NULL);
        m->response.push_id = push_id;
        m->response.task_id = task_id;
        m->response.return_code = rc;
        strscpy(m->response.task_guid, sizeof(m->response.task_guid), guid);
        memcpy(m->response.client_id, s->client_id, TETHER_GUID_LEN);
        m->response.detail = strdup(detail ? detail : "");
        if (!m->response.detail)
                return -ENOMEM;
        r = tether_msg_seal(m, s->device_key, s->max_frame, ret_frame, ret_len);
        if (r == -EINVAL && detail && detail[0]) {
                /* A Detail the contract refuses must not leave the task
                 * unanswered for ever: answer without it. */
                log_warning("Detail of task %s cannot be sent as it is; answering without it", guid);
                free(m->response.detail);
                m->response.detail = strdup("(the detail could not be encoded)");
                if (!m->response.detail)
                        return -ENOMEM;
                r = tether_msg_seal(m, s->device_key, s->max_frame, ret_frame, ret_len);
        }
        return r;
}

/* Builds, signs, persists, then sends a RESPONSE. name is the spool name. */
int respond(struct session *s, const char *name, uint64_t push_id, uint64_t task_id, const char *guid,
            uint32_t rc, const char *detail) {
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t frame_len;
        uint64_t t_start = pushstats_now(), t_signed, t_saved;
        int r;

        r = seal_response(s, push_id, task_id, guid, rc, detail, &frame, &frame_len);
        if (r < 0)
                return log_error_errno(r, "Cannot build, sign and frame the response for task %s: %m", guid);
        t_signed = pushstats_now();

        if (startswith(name, UNAUTH_PREFIX) && !spool_has_response(s->spool, name))
                make_room_unauth(s, frame_len);
        r = spool_save_response(s->spool, name, rc, frame, frame_len);
        if (r < 0) {
                /* Still send it: the task stays pending in the spool, so a
                 * restart re-runs and answers it; the MP de-duplicates. */
                log_error_errno(r, "Cannot persist the response for task %s, sending it unpersisted: %m",
                                guid);
                set_error(s, "cannot persist response %s: %s", guid, strerror(-r));
        }
        t_saved = pushstats_now();
        send_stored(s, name, guid, rc, frame, frame_len);
        pushstats_add(s->stats, PUSHSTATS_SIGN, t_start, t_signed);
        pushstats_add(s->stats, PUSHSTATS_SPOOL_RESPONSE, t_signed, t_saved);
        pushstats_add(s->stats, PUSHSTATS_SEND, t_saved, pushstats_now());
        changed(s);
        return 0;
}

int send_ack(struct session *s, const char *guid) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t len;
        int r;

        r = tether_msg_new(TETHER_FRAME_PUSH_ACK, &m);
        if (r < 0)
                return r;
        memcpy(m->ack.task_guid, guid, TETHER_GUID_LEN);
        r = tether_msg_seal(m, NULL, s->max_frame, &frame, &len);
        if (r < 0)
                return r;
        return send_frame(s, frame, len);
}

static int resend_one(struct tether_spool *spool, const char *name, uint32_t rc, const uint8_t *frame,
                      size_t len, void *userdata) {
        struct session *s = userdata;
        const char *guid = startswith(name, UNAUTH_PREFIX) ? name + strlen(UNAUTH_PREFIX) : name;

        send_stored(s, name, guid, rc, frame, len);
        return 0;
}

static void handle_confirm(struct session *s, struct tether_frame *frame) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        char why[256] = "";
        bool learned = false, was_approved = s->approved;
        long long skew;
        int r;

        r = site_trust_open_confirm(s->trust, frame, &m, &learned, why);
        if (r < 0) {
                char text[300];
                snprintf(text, sizeof(text), "SIGNIN_CONFIRM not trusted: %s", why);
                send_goodbye_and_reconnect(s, text);
                return;
        }
        if (learned) {
                char fp[TETHER_FINGERPRINT_LEN] = "";
                (void)tether_key_fingerprint(site_trust_root(s->trust), fp);
                log_notice("Site keys trusted from SIGNIN_CONFIRM: serial 1 %s and %zu endorsed after it",
                           fp, tether_site_chain_len(site_trust_chain(s->trust)) - 1);
                /* The root and the chain: the scheduler half checks both
                 * from its own configuration. */
                if (s->ops.site_key)
                        s->ops.site_key(s->userdata, site_trust_root(s->trust));
        }
        skew = (long long)m->signin_confirm.timestamp - (long long)time(NULL);
        if (skew > SKEW_WARN_SECONDS || skew < -SKEW_WARN_SECONDS)
                log_warning("Clock skew: the MP's clock is %+llds from ours; check time synchronisation",
                            skew);

        switch (m->signin_confirm.status) {
        case TETHER_SIGNIN_APPROVED:
                s->approved = true;
                s->last_error[0] = 0;
                if (s->rollover_key && s->rollover_sent) {
                        s->rollover_key = NULL;
                        s->rollover_sent = false;
                        if (s->ops.rollover_done)
                                s->ops.rollover_done(s->userdata);
                }
                s->ops.confirmed(s->userdata, m->signin_confirm.keepalive_seconds);
                if (!was_approved) {
                        log_info("Signed in to the MP as %s (keepalive %u s)", s->client_id,
                                 m->signin_confirm.keepalive_seconds);
                        (void)spool_foreach_unacked_response(s->spool, resend_one, s);
                }
                break;
        case TETHER_SIGNIN_PENDING:
                s->approved = false;
                if (was_approved || !s->last_error[0])
                        log_notice("Sign-in as %s is pending approval at the MP; waiting", s->client_id);
                set_error(s, "sign-in pending approval at the MP");
                break;
        case TETHER_SIGNIN_REJECTED:
                s->approved = false;
                log_warning("The MP rejected sign-in as %s; trying again in %d min or more", s->client_id,
                            REJECTED_DELAY_SECONDS / 60);
                set_error(s, "sign-in rejected by the MP");
                s->ops.reconnect(s->userdata, REJECTED_DELAY_SECONDS, "rejected");
                break;
        }
        changed(s);
}

/* Takes a task out of the recent ones: its answer comes once. */
static bool take_recent_task(struct session *s, const char *guid, uint64_t *ret_push_id,
                             uint64_t *ret_task_id, uint64_t *ret_run_sent_ns) {
        for (size_t i = 0; i < RECENT_MAX; i++) {
                struct recent_task *t = &s->recent[i];
                if (t->task_guid[0] && strcmp(t->task_guid, guid) == 0) {
                        *ret_push_id = t->push_id;
                        *ret_task_id = t->task_id;
                        *ret_run_sent_ns = t->run_sent_ns;
                        t->task_guid[0] = 0;
                        return true;
                }
        }
        return false;
}

static void handle_response_ack(struct session *s, struct tether_frame *frame) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        struct tether_diag diag = {0};
        char name[64];
        int r;

        r = tether_msg_open(frame, NULL, &m, &diag);
        if (r < 0) {
                char text[300];
                snprintf(text, sizeof(text), "malformed RESPONSE_ACK: %s", diag.text);
                send_goodbye_and_reconnect(s, text);
                return;
        }
        snprintf(name, sizeof(name), UNAUTH_PREFIX "%s", m->ack.task_guid);
        if (spool_has_response(s->spool, name))
                (void)spool_drop_response(s->spool, name);
        else if (spool_mark_acked(s->spool, m->ack.task_guid) < 0)
                log_debug("RESPONSE_ACK for unknown task %s ignored", m->ack.task_guid);
        else
                log_debug("Response for task %s acknowledged", m->ack.task_guid);
        changed(s);
}

static void handle_goodbye(struct session *s, struct tether_frame *frame) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        struct tether_diag diag = {0};
        char reason[64];
        int r;

        r = tether_msg_open(frame, NULL, &m, &diag);
        if (r < 0) {
                char text[300];
                snprintf(text, sizeof(text), "malformed GOODBYE: %s", diag.text);
                send_goodbye_and_reconnect(s, text);
                return;
        }
        snprintf(reason, sizeof(reason), "%s", tether_goodbye_reason_name(m->goodbye.reason));
        log_notice("The MP said GOODBYE (%s), retry after %u s", reason, m->goodbye.retry_after_seconds);
        if (m->goodbye.retry_after_seconds > SESSION_RETRY_AFTER_MAX) {
                /* An MP (or whoever holds its TLS key) must not be able to
                 * take a device offline for up to 136 years. */
                log_warning("GOODBYE from %s asks to wait %u s before reconnecting; waiting %u s instead "
                            "(the most any GOODBYE gets)",
                            peer_name(s), m->goodbye.retry_after_seconds, SESSION_RETRY_AFTER_MAX);
                m->goodbye.retry_after_seconds = SESSION_RETRY_AFTER_MAX;
        }
        if (m->goodbye.reason == TETHER_GOODBYE_CONFLICT)
                log_warning("The MP reports a ClientID conflict for %s: another device uses this identity "
                            "(a cloned image?); 'tetherctl identity reset' makes a new one",
                            s->client_id);
        if (m->goodbye.reason == TETHER_GOODBYE_CONFLICT)
                /* The one place an administrator looks on the device: say
                 * what it means and what fixes it. */
                set_error(s,
                          "GOODBYE from the MP: conflict (ClientID %s is in use by another device, "
                          "or bound to another key; if this machine is a clone, run 'tetherctl "
                          "identity reset'; retry after %u s)",
                          s->client_id, m->goodbye.retry_after_seconds);
        else
                set_error(s, "GOODBYE from the MP: %s", reason);
        s->approved = false;
        s->ops.reconnect(s->userdata, m->goodbye.retry_after_seconds, reason);
        changed(s);
}

void session_on_frame(struct session *s, struct tether_frame *frame) {
        switch (frame->type) {
        case TETHER_FRAME_SIGNIN_CONFIRM:
                handle_confirm(s, frame);
                break;
        case TETHER_FRAME_PUSH:
                handle_push(s, &frame, false);
                break;
        case TETHER_FRAME_RESPONSE_ACK:
                handle_response_ack(s, frame);
                break;
        case TETHER_FRAME_GOODBYE:
                handle_goodbye(s, frame);
                break;
        case TETHER_FRAME_KEEPALIVE:
                break; /* the link keeps time */
        default: {
                char text[64];
                snprintf(text, sizeof(text), "unexpected %s frame", tether_frame_type_name(frame->type));
                send_goodbye_and_reconnect(s, text);
                break;
        }
        }
        tether_frame_free(frame);
}

void session_on_disconnect(struct session *s) {
        s->approved = false;
        /* Not acknowledged: the MP delivers them again at the next sign-in. */
        drop_held(s);
}

size_t session_held(const struct session *s) {
        return s->n_held;
}

size_t session_retry_held(struct session *s) {
        struct tether_frame *frames[HELD_MAX];
        size_t n = s->n_held;

        if (!s->approved) {
                drop_held(s);
                return 0;
        }
        memcpy(frames, s->held, n * sizeof(frames[0]));
        s->n_held = 0;
        for (size_t i = 0; i < n; i++) {
                handle_push(s, &frames[i], true);
                tether_frame_free(frames[i]);
        }
        return s->n_held;
}

int session_task_done(struct session *s, uint32_t cycle, const char *task_guid, uint32_t return_code,
                      const char *detail) {
        struct spool_task t;
        uint64_t done_ns = pushstats_now(), push_id, task_id, run_sent_ns = 0;
        int r;

        if (!task_guid || !task_guid[0]) {
                log_info("Local %s cycle finished: %s%s%s",
                         cycle == 1   ? "machine policy"
                         : cycle == 2 ? "user policy"
                                      : "app evaluation",
                         tether_return_code_name(return_code), detail && detail[0] ? ": " : "",
                         detail ? detail : "");
                return 0;
        }
        /* A task handed over lately is answered from memory; the spool still
         * says whether it is known and whether it was answered. */
        if (take_recent_task(s, task_guid, &push_id, &task_id, &run_sent_ns) &&
            spool_has_task(s->spool, task_guid)) {
                /* The round trip through the privilege split, cycle included. */
                pushstats_add(s->stats, PUSHSTATS_IPC_RUN, run_sent_ns, done_ns);
                if (spool_has_response(s->spool, task_guid)) {
                        log_debug("Task %s already answered; ignoring the second result", task_guid);
                        return 0;
                }
                return respond(s, task_guid, push_id, task_id, task_guid, return_code, detail);
        }
        r = spool_load_task(s->spool, task_guid, &t);
        if (r < 0)
                return log_error_errno(r, "Cycle finished for unknown task %s: %m", task_guid);
        if (spool_has_response(s->spool, task_guid)) {
                spool_task_done(&t);
                log_debug("Task %s already answered; ignoring the second result", task_guid);
                return 0;
        }
        r = respond(s, task_guid, t.push_id, t.task_id, task_guid, return_code, detail);
        spool_task_done(&t);
        return r;
}

static int resume_one(struct tether_spool *spool, const struct spool_task *t, void *userdata) {
        struct session *s = userdata;
        int r;

        if (!tether_task_type_info(t->task_type) || !s->enabled[t->task_type])
                return respond(s, t->task_guid, t->push_id, t->task_id, t->task_guid,
                               TETHER_RC_NOT_SUPPORTED,
                               "unknown TaskType, or disabled by local configuration");
        log_info("Task %s (pushid=%llu, tasktype=%u) was accepted before a restart and not answered: "
                 "running it",
                 t->task_guid, (unsigned long long)t->push_id, t->task_type);
        r = s->ops.run(s->userdata, t->task_type, t->task_guid, t->param);
        if (r < 0)
                log_error_errno(r, "Cannot hand task %s to the scheduler: %m", t->task_guid);
        return 0;
}

int session_resume(struct session *s) {
        return spool_foreach_pending_task(s->spool, resume_one, s);
}
