/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/console.h"
#include "mp/mp.h"
#include "transport/rotation.h"
#include "transport/sign.h"
#include "transport/tls.h"

static int session_cmp(const void *a, const void *b) {
        return strcmp(((const struct mp_session *)a)->client_id, ((const struct mp_session *)b)->client_id);
}

struct mp_session *mp_session_find(struct mp_server *srv, const char *client_id) {
        struct mp_session key;
        void *node;

        if (strscpy(key.client_id, sizeof(key.client_id), client_id) < 0)
                return NULL;
        node = tfind(&key, &srv->sessions, session_cmp);
        return node ? *(struct mp_session **)node : NULL;
}

static void session_free(struct mp_session *s) {
        if (!s)
                return;
        tether_key_free(s->key);
        free(s->hostname);
        free(s);
}

void mp_session_drop(struct mp_server *srv, struct mp_session *s) {
        if (!s)
                return;
        /* Write the last-seen time once, when the device goes offline, not
         * on every keepalive. */
        (void)mp_registry_touch(srv->reg, s->client_id, time(NULL), s->address[0] ? s->address : NULL);
        if (tdelete(s, &srv->sessions, session_cmp))
                srv->n_sessions--;
        session_free(s);
}

struct walk_ctx {
        void (*fn)(struct mp_session *s, void *u);
        void *u;
};

static void walk_action(const void *node, VISIT which, void *closure) {
        struct walk_ctx *w = closure;

        if (which == postorder || which == leaf)
                w->fn(*(struct mp_session *const *)node, w->u);
}

void mp_sessions_walk(struct mp_server *srv, void (*fn)(struct mp_session *s, void *u), void *u) {
        struct walk_ctx w = {fn, u};

        twalk_r(srv->sessions, walk_action, &w);
}

bool mp_session_online(struct mp_server *srv, const struct mp_session *s, uint64_t now) {
        if (s->conn && !s->conn->dead)
                return true;
        /* Between two HTTPS polls a device is still online. */
        return s->https && now - s->last_seen_usec < 2ULL * srv->cfg->keepalive * 1000000ULL;
}

static int seal(const struct tether_msg *msg, const struct tether_key *signer, uint32_t max_frame,
                struct mp_buf **ret) {
        uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        r = tether_msg_seal(msg, signer, max_frame, &frame, &len);
        if (r < 0)
                return r;
        *ret = mp_buf_take(frame, len);
        return *ret ? 0 : -ENOMEM;
}

int mp_channel_confirm(struct mp_server *srv, enum tether_signin_status status, bool with_chain,
                       struct mp_buf **ret) {
        struct tether_msg msg = {.type = TETHER_FRAME_SIGNIN_CONFIRM};
        _cleanup_(freep) struct tether_endorsement *chain = NULL;
        size_t n_chain = 0;
        time_t now = time(NULL);
        unsigned k = with_chain ? 1 : 0;
        int r;

        if (status == TETHER_SIGNIN_APPROVED && srv->confirm_cache[k] && srv->confirm_cache_time[k] == now) {
                *ret = mp_buf_ref(srv->confirm_cache[k]);
                return 0;
        }
        /* The chain goes only to agents that list 1.1 (section 7); the
         * SitePublicKey stays serial 1, the root an agent pins. */
        if (with_chain && srv->site_chain) {
                r = tether_site_chain_endorsements(srv->site_chain, &chain, &n_chain);
                if (r < 0)
                        return r;
        }
        msg.signin_confirm.timestamp = now;
        msg.signin_confirm.message_version = 1;
        msg.signin_confirm.status = status;
        msg.signin_confirm.keepalive_seconds = srv->cfg->keepalive;
        msg.signin_confirm.site_public_key = srv->site_key_b64;
        msg.signin_confirm.endorsements = chain;
        msg.signin_confirm.n_endorsements = (unsigned)n_chain;
        r = seal(&msg, mp_site_signer(srv), srv->cfg->max_frame, ret);
        if (r < 0)
                return r;
        if (status == TETHER_SIGNIN_APPROVED) {
                mp_buf_unref(srv->confirm_cache[k]);
                srv->confirm_cache[k] = mp_buf_ref(*ret);
                srv->confirm_cache_time[k] = now;
        }
        return 0;
}

int mp_channel_goodbye_frame(struct mp_server *srv, enum tether_goodbye_reason reason, uint32_t retry_after,
                             struct mp_buf **ret) {
        struct tether_msg msg = {.type = TETHER_FRAME_GOODBYE};

        msg.goodbye.reason = reason;
        msg.goodbye.retry_after_seconds = retry_after;
        return seal(&msg, NULL, srv->cfg->max_frame, ret);
}

int mp_channel_goodbye(struct mp_conn *c, enum tether_goodbye_reason reason, uint32_t retry_after) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = NULL;
        int r;

        r = mp_channel_goodbye_frame(c->srv, reason, retry_after, &b);
        if (r < 0)
                return r;
        return mp_conn_send(c, b);
}

static int ack_frame(struct mp_server *srv, uint8_t type, const char *guid, struct mp_buf **ret) {
        struct tether_msg msg = {.type = type};

        strscpy(msg.ack.task_guid, sizeof(msg.ack.task_guid), guid);
        return seal(&msg, NULL, srv->cfg->max_frame, ret);
}

static int keepalive_frame(struct mp_server *srv, struct mp_buf **ret) {
        struct tether_msg msg = {.type = TETHER_FRAME_KEEPALIVE};

        msg.keepalive.timestamp = time(NULL);
        return seal(&msg, NULL, srv->cfg->max_frame, ret);
}

static enum tether_signin_status status_to_wire(enum mp_device_status s) {
        switch (s) {
        case MP_DEVICE_APPROVED:
                return TETHER_SIGNIN_APPROVED;
        case MP_DEVICE_PENDING:
                return TETHER_SIGNIN_PENDING;
        default:
                return TETHER_SIGNIN_REJECTED;
        }
}

/* The connection still looks like a device's: a TCP channel that received
 * a frame within the keepalive interval, or a held HTTPS poll. */
static bool conn_live(struct mp_server *srv, const struct mp_conn *old, uint64_t now) {
        if (old->dead || old->close_after_flush)
                return false;
        if (old->kind == MP_CONN_HTTPS)
                return mp_http_held(old);
        return now - old->last_rx_usec < (uint64_t)srv->cfg->keepalive * 1000000ULL;
}

bool mp_signin_takes_over(const struct mp_session *s, enum mp_signin_via via) {
        return via != MP_VIA_QUICK_POLL || !s->conn;
}

/* A sign-in that would replace the live connection of the same ClientID and
 * key: the duplicate-identity guard decides (mp/dupguard.h). Returns 1 when
 * the newcomer is refused (recorded), 0 when it may replace, < 0 on error. */
static int check_duplicate(struct mp_conn *c, struct mp_session *s, const struct mp_signin_request *req,
                           uint64_t now) {
        struct mp_server *srv = c->srv;
        struct mp_conn *old = s->conn;
        enum mp_dupguard_verdict verdict;
        bool live = conn_live(srv, old, now);
        unsigned count = 0;
        int r;

        r = mp_dupguard_replacement(srv->dupguard, req->client_id, live, now, &verdict, &count);
        if (r < 0)
                return r;
        if (verdict == MP_DUPGUARD_REPLACE) {
                if (live)
                        log_notice("Client '%s' signed in from %s while its connection from %s was live; "
                                   "the new one replaces it (%u such replacement%s in %llu min)",
                                   req->client_id, c->peer, old->peer, count, count == 1 ? "" : "s",
                                   MP_DUPGUARD_WINDOW_USEC / 60000000ULL);
                return 0;
        }

        struct mp_duplicate_record rec = {
                .client_id = req->client_id,
                .fingerprint = req->fingerprint,
                .hostname = req->hostname,
                .address = c->peer,
                .established_hostname = s->hostname,
                .established_address = old->peer,
                .now = req->now,
        };
        r = mp_registry_record_duplicate(srv->reg, &rec);
        if (r < 0)
                return r;
        _cleanup_(freep) char *host = mp_esc(req->hostname), *old_host = mp_esc(s->hostname);
        log_warning("Conflict: ClientID '%s' ('%s') signed in from %s with its bound key while its live "
                    "connection from %s ('%s') %s: two devices share this identity (a clone of an image "
                    "taken after the agent ran?); refused with GOODBYE(conflict), retry after %u s, and "
                    "recorded (duplicate identity)",
                    req->client_id, LOGSTR(host), c->peer, old->peer, LOGSTR(old_host),
                    count > 0 ? "was replaced too often" : "is already known to be shared",
                    MP_DUPGUARD_RETRY_AFTER);
        return 1;
}

int mp_signin(struct mp_conn *c, const struct tether_frame *frame, enum mp_signin_via via,
              enum mp_signin_outcome *ret, struct mp_session **ret_session) {
        struct mp_server *srv = c->srv;
        bool https = via != MP_VIA_CHANNEL;
        struct tether_msg *msg = NULL;
        struct tether_key *offered = NULL;
        _cleanup_(freep) char *key_b64 = NULL, *host = NULL, *version = NULL;
        char fpr[TETHER_FINGERPRINT_LEN];
        struct tether_diag diag = {0};
        enum mp_signin_verdict verdict;
        struct mp_session *s;
        bool is_new = false;
        int r;

        *ret_session = NULL;
        if (frame->type != TETHER_FRAME_SIGNIN) {
                log_warning("Protocol error from %s: first frame is %s, not SIGNIN", c->peer,
                            tether_frame_type_name(frame->type));
                *ret = MP_OUTCOME_PROTOCOL_ERROR;
                return 0;
        }
        if (!c->peer_key) {
                log_warning("SIGNIN from %s refused: no usable client certificate key", c->peer);
                *ret = MP_OUTCOME_UNAUTHORIZED;
                return 0;
        }
        /* Verify before parse: the SIGNIN must be signed by the key of the
         * TLS client certificate, which is the device key. */
        r = tether_msg_open(frame, c->peer_key, &msg, &diag);
        if (r == -EBADMSG) {
                _cleanup_(freep) char *why = mp_esc(diag.text);

                if (diag.kind == TETHER_DIAG_BAD_SIGNATURE) {
                        log_warning("SIGNIN from %s refused: not signed by its TLS client key (%s)", c->peer,
                                    LOGSTR(why));
                        *ret = MP_OUTCOME_UNAUTHORIZED;
                } else {
                        log_warning("Protocol error from %s: SIGNIN: %s (%s)", c->peer, LOGSTR(why),
                                    tether_diag_kind_name(diag.kind));
                        *ret = MP_OUTCOME_PROTOCOL_ERROR;
                }
                return 0;
        }
        if (r < 0)
                return r;

        r = tether_key_from_spki_base64(msg->signin.public_key, &offered);
        if (r < 0 || !tether_key_equal(offered, c->peer_key)) {
                log_warning("SIGNIN from %s for ClientID '%s' refused: PublicKey is not the TLS client "
                            "certificate's key",
                            c->peer, msg->signin.client_id);
                tether_key_free(offered);
                tether_msg_free(msg);
                *ret = MP_OUTCOME_UNAUTHORIZED;
                return 0;
        }
        r = tether_key_spki_base64(c->peer_key, &key_b64);
        if (r >= 0)
                r = tether_key_fingerprint(c->peer_key, fpr);
        if (r < 0)
                goto done;
        /* what the peer wrote, for the log lines only */
        host = mp_esc(msg->signin.hostname);
        version = mp_esc(msg->signin.version ? msg->signin.version : "?");

        struct mp_signin_request req = {
                .client_id = msg->signin.client_id,
                .hostname = msg->signin.hostname,
                .version = msg->signin.version,
                .public_key = key_b64,
                .fingerprint = fpr,
                .enrolment_token = msg->signin.enrolment_token,
                .address = c->address,
                .now = time(NULL),
        };
        if (msg->signin.rollover.previous_public_key) {
                r = mp_rollover(c, &msg->signin, &req);
                if (r < 0)
                        goto done;
                if (r > 0) {
                        *ret = MP_OUTCOME_CONFLICT;
                        r = 0;
                        goto done;
                }
        }
        r = mp_registry_signin(srv->reg, &srv->approval, &req, &verdict, &is_new);
        if (r < 0) {
                log_error_errno(r, "Failed to record the sign-in of '%s': %m", req.client_id);
                goto done;
        }
        if (verdict != MP_SIGNIN_CONFLICT && msg->signin.feature_1_1)
                mp_site_key_signin(srv, req.client_id, req.now);

        if (verdict == MP_SIGNIN_CONFLICT) {
                log_warning(
                        "Conflict: ClientID '%s' ('%s') signed in from %s with key %s, but it is bound to "
                        "another key (cloned image?); refused and recorded",
                        req.client_id, LOGSTR(host), c->peer, fpr);
                *ret = MP_OUTCOME_CONFLICT;
                goto done;
        }
        if (srv->approval.mode == MP_APPROVAL_TOKEN && is_new && verdict == MP_SIGNIN_PENDING &&
            msg->signin.enrolment_token)
                log_warning("ClientID '%s' from %s gave a wrong enrolment token; left pending",
                            req.client_id, c->peer);

        s = mp_session_find(srv, req.client_id);
        if (s && s->conn && s->conn != c && via != MP_VIA_QUICK_POLL) {
                r = check_duplicate(c, s, &req, mp_now_usec());
                if (r < 0)
                        goto done;
                if (r > 0) {
                        *ret = MP_OUTCOME_DUPLICATE;
                        r = 0;
                        goto done;
                }
        }
        if (s && s->conn && s->conn != c && via == MP_VIA_QUICK_POLL &&
            conn_live(srv, s->conn, mp_now_usec())) {
                /* A poll answered at once passes by the device's live
                 * connection (the agent's side request while its long poll
                 * is held): nothing to replace, nothing else changes. */
                s->last_seen_usec = mp_now_usec();
                s->status = verdict == MP_SIGNIN_APPROVED  ? MP_DEVICE_APPROVED
                            : verdict == MP_SIGNIN_PENDING ? MP_DEVICE_PENDING
                                                           : MP_DEVICE_REJECTED;
                *ret = verdict == MP_SIGNIN_APPROVED  ? MP_OUTCOME_APPROVED
                       : verdict == MP_SIGNIN_PENDING ? MP_OUTCOME_PENDING
                                                      : MP_OUTCOME_REJECTED;
                *ret_session = s;
                r = 0;
                goto done;
        }
        if (!s) {
                s = calloc(1, sizeof(*s));
                if (!s) {
                        r = -ENOMEM;
                        goto done;
                }
                strscpy(s->client_id, sizeof(s->client_id), req.client_id);
                if (!tsearch(s, &srv->sessions, session_cmp)) {
                        free(s);
                        r = -ENOMEM;
                        goto done;
                }
                srv->n_sessions++;
        } else if (s->conn && s->conn != c) {
                /* The device came back on a new connection while the old
                 * one still looks alive (half-open, or the transport
                 * changed): the new one wins. */
                struct mp_conn *old = s->conn;

                old->session = NULL;
                s->conn = NULL;
                if (old->kind == MP_CONN_CHANNEL)
                        mp_conn_close(old, "replaced by a newer connection of the same device");
                else
                        mp_conn_close(old, NULL);
        }
        tether_key_free(s->key);
        s->key = TAKE_PTR(offered);
        free(s->hostname);
        s->hostname = strdup_or_null(req.hostname);
        s->status = verdict == MP_SIGNIN_APPROVED  ? MP_DEVICE_APPROVED
                    : verdict == MP_SIGNIN_PENDING ? MP_DEVICE_PENDING
                                                   : MP_DEVICE_REJECTED;
        s->https = https;
        s->feature_1_1 = msg->signin.feature_1_1;
        s->site_serial_unacked = s->feature_1_1 ? mp_site_serial(srv) : 0;
        s->last_seen_usec = mp_now_usec();
        strscpy(s->address, sizeof(s->address), c->address);

        if (!https || is_new || s->status != MP_DEVICE_APPROVED)
                log_info("Client '%s' ('%s', version %s) signed in from %s%s: %s%s", s->client_id,
                         LOGSTR(host), LOGSTR(version), c->peer, https ? " over HTTPS" : "",
                         mp_signin_verdict_name(verdict), is_new ? " (new device)" : "");
        *ret = verdict == MP_SIGNIN_APPROVED  ? MP_OUTCOME_APPROVED
               : verdict == MP_SIGNIN_PENDING ? MP_OUTCOME_PENDING
                                              : MP_OUTCOME_REJECTED;
        *ret_session = s;
        r = 0;
done:
        tether_key_free(offered);
        tether_msg_free(msg);
        return r;
}

static int append_ack(struct mp_buf ***acks, size_t *n_acks, struct mp_buf *b) {
        struct mp_buf **t = realloc(*acks, (*n_acks + 1) * sizeof(**acks));

        if (!t)
                return -ENOMEM;
        t[*n_acks] = mp_buf_ref(b);
        *acks = t;
        (*n_acks)++;
        return 0;
}

static int handle_response(struct mp_session *s, struct mp_conn *c, const struct tether_frame *frame,
                           struct mp_buf ***acks, size_t *n_acks, struct tether_diag *diag) {
        struct mp_server *srv = c->srv;
        _cleanup_(mp_buf_unrefp) struct mp_buf *ack = NULL;
        struct tether_msg *msg = NULL;
        bool duplicate = false;
        int r;

        r = tether_msg_open(frame, s->key, &msg, diag);
        if (r == -EBADMSG && diag->kind == TETHER_DIAG_BAD_SIGNATURE) {
                /* Not the device's registered key: refuse the record, send
                 * no RESPONSE_ACK (the agent keeps it spooled), but keep the
                 * channel, which itself is authenticated. */
                _cleanup_(freep) char *why = mp_esc(diag->text);

                log_warning("Rejected RESPONSE from client '%s' at %s: %s; not recorded, not acknowledged",
                            s->client_id, c->peer, LOGSTR(why));
                return 0;
        }
        if (r < 0)
                return r;

        struct tether_response *resp = &msg->response;
        if (strcmp(resp->client_id, s->client_id) != 0) {
                log_warning("Rejected RESPONSE from client '%s' at %s: it names ClientID '%s'", s->client_id,
                            c->peer, resp->client_id);
                tether_msg_free(msg);
                return 0;
        }

        struct mp_response_record rec = {
                .client_id = s->client_id,
                .task_guid = resp->task_guid,
                .push_id = resp->push_id,
                .task_id = resp->task_id,
                .return_code = resp->return_code,
                .detail = resp->detail,
                .body = frame->body,
                .body_len = frame->body_len,
                .sig = frame->sig,
                .sig_len = frame->sig_len,
                .address = c->address,
                .received = time(NULL),
        };
        r = mp_registry_response_store(srv->reg, &rec, &duplicate);
        if (r < 0) {
                log_error_errno(r, "Failed to store the response of '%s' for TaskGUID %s: %m", s->client_id,
                                resp->task_guid);
                tether_msg_free(msg);
                /* No ACK: the agent re-sends it, but only after it
                 * reconnects; the caller closes a TCP channel for that. */
                return -EAGAIN;
        }
        {
                char push_id[32], guid[64], rc[32];
                const char *fields[] = {push_id, guid, rc, NULL};
                /* the seed's line shows the message; a Detail with a line
                 * break must not start a line of its own */
                _cleanup_(freep) char *body = str_escape_log((const char *)frame->body, frame->body_len);

                snprintf(push_id, sizeof(push_id), "PUSH_ID=%llu", (unsigned long long)resp->push_id);
                snprintf(guid, sizeof(guid), "TASK_GUID=%s", resp->task_guid);
                snprintf(rc, sizeof(rc), "RETURN_CODE=%u", resp->return_code);
                if (duplicate)
                        log_struct(
                                LOG_INFO, fields,
                                "Receive duplicate task response (TaskGUID: %s) from client '%s'; already "
                                "recorded, acknowledged again",
                                resp->task_guid, s->client_id);
                else
                        log_struct(LOG_INFO, fields,
                                   "Receive task response message %s from client '%s' successfully "
                                   "(ReturnCode: %u %s)",
                                   LOGSTR(body), s->client_id, resp->return_code,
                                   tether_return_code_name(resp->return_code));
        }
        if (!duplicate)
                mp_server_push_progress(srv, resp->push_id);

        r = ack_frame(srv, TETHER_FRAME_RESPONSE_ACK, resp->task_guid, &ack);
        tether_msg_free(msg);
        if (r < 0)
                return r;
        /* Sent through the flush after the group commit: the ACK never
         * leaves before the response row is durable. */
        if (acks)
                return append_ack(acks, n_acks, ack);
        return mp_conn_send(c, ack);
}

int mp_session_frame(struct mp_session *s, struct mp_conn *c, const struct tether_frame *frame,
                     struct mp_buf ***acks, size_t *n_acks, struct tether_diag *diag) {
        struct mp_server *srv = c->srv;
        struct tether_msg *msg = NULL;
        int r;

        s->last_seen_usec = mp_now_usec();
        if (s->site_serial_unacked && frame->type != TETHER_FRAME_GOODBYE) {
                /* An agent that refused the confirm would have said GOODBYE. */
                r = mp_registry_site_key_confirmed(srv->reg, s->client_id, s->site_serial_unacked,
                                                   time(NULL));
                if (r < 0)
                        log_warning_errno(r, "Failed to record the site key confirmed by '%s', ignoring: %m",
                                          s->client_id);
                s->site_serial_unacked = 0;
        }
        switch (frame->type) {
        case TETHER_FRAME_KEEPALIVE: {
                _cleanup_(mp_buf_unrefp) struct mp_buf *ka = NULL;

                r = tether_msg_open(frame, NULL, &msg, diag);
                if (r < 0)
                        return r;
                tether_msg_free(msg);
                if (acks)
                        return 0; /* over HTTPS the poll itself is the keepalive */
                r = keepalive_frame(srv, &ka);
                if (r < 0)
                        return r;
                return mp_conn_send(c, ka);
        }
        case TETHER_FRAME_PUSH_ACK:
                r = tether_msg_open(frame, NULL, &msg, diag);
                if (r < 0)
                        return r;
                if (s->status == MP_DEVICE_APPROVED) {
                        r = mp_registry_target_advance_guid(srv->reg, msg->ack.task_guid, s->client_id,
                                                            MP_TARGET_ACKNOWLEDGED, time(NULL));
                        if (r < 0)
                                log_warning_errno(r, "Failed to record PUSH_ACK, ignoring: %m");
                        log_debug("Received PUSH_ACK (TaskGUID: %s) from client '%s'", msg->ack.task_guid,
                                  s->client_id);
                }
                tether_msg_free(msg);
                return 0;
        case TETHER_FRAME_RESPONSE:
                if (s->status != MP_DEVICE_APPROVED) {
                        log_warning("Ignored RESPONSE from client '%s', which is not approved",
                                    s->client_id);
                        return 0;
                }
                return handle_response(s, c, frame, acks, n_acks, diag);
        case TETHER_FRAME_GOODBYE:
                r = tether_msg_open(frame, NULL, &msg, diag);
                if (r < 0)
                        return r;
                log_info("Client '%s' at %s said goodbye (%s)", s->client_id, c->peer,
                         tether_goodbye_reason_name(msg->goodbye.reason));
                {
                        char why[96];
                        snprintf(why, sizeof(why), "the agent said goodbye (%s)",
                                 tether_goodbye_reason_name(msg->goodbye.reason));
                        mp_console_device_offline(c->srv->console, s->client_id, why, false);
                }
                tether_msg_free(msg);
                if (!acks)
                        mp_conn_close_after_flush(c);
                return 0;
        default:
                return tether_diag_set(diag, TETHER_DIAG_BAD_TYPE, "unexpected %s frame from the agent",
                                       tether_frame_type_name(frame->type));
        }
}

static int backlog_cb(uint64_t push_id, const uint8_t *frame, size_t len, void *userdata) {
        struct mp_session *s = userdata;
        struct mp_conn *c = s->conn;
        int r;

        r = mp_conn_send_bytes(c, frame, len);
        if (r < 0)
                return r;
        log_info("Send queued push task (PushID: %llu) to client '%s' at sign-in",
                 (unsigned long long)push_id, s->client_id);
        return mp_registry_target_advance(c->srv->reg, push_id, s->client_id, MP_TARGET_DELIVERED,
                                          time(NULL));
}

int mp_session_deliver_backlog(struct mp_server *srv, struct mp_session *s) {
        if (!s->conn || s->conn->dead || s->conn->kind != MP_CONN_CHANNEL || s->status != MP_DEVICE_APPROVED)
                return 0;
        return mp_registry_undelivered(srv->reg, s->client_id, time(NULL), backlog_cb, s);
}

void mp_session_decided(struct mp_server *srv, const char *client_id, enum mp_device_status status) {
        struct mp_session *s = mp_session_find(srv, client_id);
        _cleanup_(mp_buf_unrefp) struct mp_buf *confirm = NULL;
        int r;

        if (!s)
                return;
        s->status = status;
        if (!s->conn || s->conn->dead)
                return;
        if (s->conn->kind == MP_CONN_HTTPS) {
                (void)mp_https_finish_poll(s->conn);
                return;
        }
        r = mp_channel_confirm(srv, status_to_wire(status), s->feature_1_1, &confirm);
        if (r >= 0)
                r = mp_conn_send(s->conn, confirm);
        if (r < 0) {
                log_warning_errno(r, "Failed to tell '%s' of its new status, ignoring: %m", client_id);
                return;
        }
        if (status == MP_DEVICE_APPROVED)
                (void)mp_session_deliver_backlog(srv, s);
        else if (status == MP_DEVICE_REJECTED)
                mp_conn_close_after_flush(s->conn);
}

static void protocol_error(struct mp_conn *c, const struct tether_diag *diag) {
        _cleanup_(freep) char *why = mp_esc(diag->text);

        log_warning("Protocol error from %s%s%s%s: %s (%s)", c->peer, c->session ? " (client '" : "",
                    c->session ? c->session->client_id : "", c->session ? "')" : "", LOGSTR(why),
                    tether_diag_kind_name(diag->kind));
        (void)mp_channel_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
        mp_conn_close_after_flush(c);
}

/* After a verified SIGNIN: frames up to MaxFrameBytes. The decoder sits
 * between two frames here (it just returned the SIGNIN), so nothing of the
 * stream is lost by replacing it. */
static int channel_widen_decoder(struct mp_conn *c) {
        struct tether_frame_decoder *dec = NULL;
        int r;

        if (c->srv->cfg->max_signin >= c->srv->cfg->max_frame)
                return 0;
        r = tether_frame_decoder_new(c->srv->cfg->max_frame, &dec);
        if (r < 0)
                return r;
        tether_frame_decoder_free(c->dec);
        c->dec = dec;
        return 0;
}

static int channel_frame(struct mp_conn *c, const struct tether_frame *frame) {
        struct mp_server *srv = c->srv;
        struct tether_diag diag = {0};
        enum mp_signin_outcome outcome;
        struct mp_session *s;
        int r;

        if (!c->session) {
                _cleanup_(mp_buf_unrefp) struct mp_buf *confirm = NULL;

                r = mp_signin(c, frame, MP_VIA_CHANNEL, &outcome, &s);
                if (r < 0) {
                        mp_conn_close(c, "internal error during sign-in");
                        return r;
                }
                switch (outcome) {
                case MP_OUTCOME_PROTOCOL_ERROR:
                        (void)mp_channel_goodbye(c, TETHER_GOODBYE_PROTOCOL_ERROR, 0);
                        mp_conn_close_after_flush(c);
                        return -EBADMSG;
                case MP_OUTCOME_UNAUTHORIZED:
                        (void)mp_channel_goodbye(c, TETHER_GOODBYE_UNAUTHORIZED, 0);
                        mp_conn_close_after_flush(c);
                        return -EPERM;
                case MP_OUTCOME_CONFLICT:
                        (void)mp_channel_goodbye(c, TETHER_GOODBYE_CONFLICT, 0);
                        mp_conn_close_after_flush(c);
                        return -EEXIST;
                case MP_OUTCOME_DUPLICATE:
                        /* The newcomer goes; the established connection
                         * stays. Its RetryAfterSeconds keeps a clone from
                         * knocking every few seconds. */
                        (void)mp_channel_goodbye(c, TETHER_GOODBYE_CONFLICT, MP_DUPGUARD_RETRY_AFTER);
                        mp_conn_close_after_flush(c);
                        return -EEXIST;
                default:
                        break;
                }
                c->session = s;
                s->conn = c;
                mp_conn_authenticated(c);
                r = channel_widen_decoder(c);
                if (r >= 0)
                        r = mp_channel_confirm(srv, status_to_wire(s->status), s->feature_1_1, &confirm);
                if (r >= 0)
                        r = mp_conn_send(c, confirm);
                if (r < 0) {
                        mp_conn_close(c, "failed to build SIGNIN_CONFIRM");
                        return r;
                }
                if (s->status == MP_DEVICE_REJECTED) {
                        c->session = NULL;
                        s->conn = NULL;
                        mp_session_drop(srv, s);
                        mp_conn_close_after_flush(c);
                        return -EPERM;
                }
                r = mp_session_deliver_backlog(srv, s);
                if (r < 0)
                        log_warning_errno(r, "Failed to deliver queued pushes to '%s', ignoring: %m",
                                          s->client_id);
                return 0;
        }

        if (frame->type == TETHER_FRAME_SIGNIN) {
                tether_diag_set(&diag, TETHER_DIAG_BAD_TYPE, "a second SIGNIN on the same connection");
                protocol_error(c, &diag);
                return -EBADMSG;
        }
        r = mp_session_frame(c->session, c, frame, NULL, NULL, &diag);
        if (r == -EBADMSG) {
                protocol_error(c, &diag);
                return r;
        }
        if (r == -EAGAIN) {
                /* A response the store could not take (the database is
                 * away): the agent re-sends its unacknowledged responses at
                 * every connection, so this one must end, or the response
                 * would wait for the next link failure. */
                log_warning("Closing the channel of '%s' so that it re-sends the response not stored",
                            c->session->client_id);
                mp_conn_close_after_flush(c);
                return r;
        }
        if (r < 0)
                log_warning_errno(r, "Failed to handle %s from '%s', ignoring: %m",
                                  tether_frame_type_name(frame->type), c->session->client_id);
        return 0;
}

int mp_channel_input(struct mp_conn *c, const uint8_t *data, size_t len) {
        struct tether_diag diag = {0};
        int r;

        while (len > 0 && !c->dead && !c->close_after_flush) {
                struct tether_frame *frame = NULL;
                size_t used = 0;

                if (!tether_frame_decoder_partial(c->dec))
                        c->frame_start_usec = mp_now_usec();
                r = tether_frame_decoder_feed(c->dec, data, len, &used, &frame, &diag);
                if (r == -EBADMSG) {
                        protocol_error(c, &diag);
                        return r;
                }
                if (r < 0) {
                        mp_conn_close(c, "out of memory");
                        return r;
                }
                data += used;
                len -= used;
                if (r == 1 && c->overloaded) {
                        /* Refused at the handshake (GOODBYE(overloaded)
                         * sent): its first frame, read, is not looked at. */
                        tether_frame_free(frame);
                        mp_conn_close_after_flush(c);
                        return 0;
                }
                if (r == 1) {
                        r = channel_frame(c, frame);
                        tether_frame_free(frame);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

void mp_channel_closed(struct mp_conn *c) {
        struct mp_session *s = c->session;

        if (!s)
                return;
        c->session = NULL;
        if (s->conn != c)
                return;
        s->conn = NULL;
        if (c->kind == MP_CONN_CHANNEL) {
                log_info("Client '%s' at %s is offline", s->client_id, c->peer);
                mp_console_device_offline(c->srv->console, s->client_id, "the connection closed", true);
                mp_session_drop(c->srv, s);
        } else {
                s->last_seen_usec = mp_now_usec();
        }
}
