/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The session layer against PROTOCOL-v1 sections 3 to 5, with a real spool
 * in a temporary directory, real keys and frames, and recording fakes for
 * the link and the scheduler half.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "common/fsutil.h"
#include "agent/session.h"
#include "agent/spool.h"
#include "agent/trust.h"
#include "common/log.h"
#include "transport/message.h"
#include "transport/sign.h"

#define MAX_SENT 32

struct sent {
        uint8_t type;
        struct tether_msg *msg; /* parsed body */
        uint8_t *frame;
        size_t len;
        bool persisted_before; /* RESPONSE: in the spool when it was sent */
};

struct fixture {
        char dir[256];
        struct tether_spool *spool;
        struct site_trust *trust;
        struct tether_config *config;
        struct session *session;
        struct tether_key *site_key, *other_key, *device_key;
        char client_id[TETHER_GUID_LEN];
        struct sent sent[MAX_SENT];
        size_t n_sent;
        unsigned runs;
        uint32_t run_cycle;
        char run_guid[TETHER_GUID_LEN];
        char run_param[64];
        unsigned confirmed, reconnects, site_keys;
        uint32_t reconnect_delay;
        char reconnect_reason[64];
        bool connected;
};

static struct fixture *F;

static int op_send(void *userdata, const uint8_t *frame, size_t len) {
        struct fixture *f = userdata;
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *fr = NULL;
        struct sent *s;
        size_t used;

        if (!f->connected)
                return -ENOTCONN;
        assert_true(f->n_sent < MAX_SENT);
        s = &f->sent[f->n_sent++];
        assert_int_equal(tether_frame_decoder_new(1024 * 1024, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, frame, len, &used, &fr, NULL), 1);
        assert_int_equal(used, len);
        tether_frame_decoder_free(dec);
        s->type = fr->type;
        /* Signed frames must verify with the device key. */
        assert_int_equal(tether_msg_open(fr, tether_frame_type_signed(fr->type) ? f->device_key : NULL,
                                         &s->msg, NULL),
                         0);
        if (fr->type == TETHER_FRAME_RESPONSE)
                s->persisted_before = spool_has_response(f->spool, s->msg->response.task_guid) ||
                                      spool_has_response(f->spool, "U-A43DD1B3-A006-4604-B012-5529380B3B6F");
        s->frame = malloc(len);
        memcpy(s->frame, frame, len);
        s->len = len;
        tether_frame_free(fr);
        return 0;
}

static void op_confirmed(void *userdata, uint32_t keepalive) {
        ((struct fixture *)userdata)->confirmed++;
}

static void op_reconnect(void *userdata, uint32_t min_delay, const char *reason) {
        struct fixture *f = userdata;
        f->reconnects++;
        f->reconnect_delay = min_delay;
        snprintf(f->reconnect_reason, sizeof(f->reconnect_reason), "%s", reason);
}

static int op_run(void *userdata, uint32_t cycle, const char *guid, const char *param) {
        struct fixture *f = userdata;
        f->runs++;
        f->run_cycle = cycle;
        snprintf(f->run_guid, sizeof(f->run_guid), "%s", guid);
        snprintf(f->run_param, sizeof(f->run_param), "%s", param);
        return 0;
}

static void op_site_key(void *userdata, const struct tether_key *key) {
        ((struct fixture *)userdata)->site_keys++;
}

static const char *op_peer(void *userdata) {
        return "mp.test.invalid:10123";
}

static const struct session_ops ops = {
        .send = op_send,
        .confirmed = op_confirmed,
        .reconnect = op_reconnect,
        .run = op_run,
        .site_key = op_site_key,
        .peer = op_peer,
};

static void quiet_sink(int priority, const char *message, const char *const *fields, void *userdata) {
}

/* Captures the last line that has structured fields. */
static char captured_message[8192], captured_fields[512];

static void capture_sink(int priority, const char *message, const char *const *fields, void *userdata) {
        size_t off = 0;

        if (!fields)
                return;
        snprintf(captured_message, sizeof(captured_message), "%s", message);
        captured_fields[0] = 0;
        for (size_t i = 0; fields[i]; i++)
                off += (size_t)snprintf(captured_fields + off, sizeof(captured_fields) - off, "%s;",
                                        fields[i]);
}

/* Every line at warning or worse, appended. */
static char warnings[16384];

static void warning_sink(int priority, const char *message, const char *const *fields, void *userdata) {
        size_t off = strlen(warnings);

        if (priority <= LOG_WARNING && off < sizeof(warnings) - 1)
                snprintf(warnings + off, sizeof(warnings) - off, "%s\n", message);
}

static void make_session(struct fixture *f, bool fingerprint_mode) {
        char pub[400], err[256];
        struct session_config sc = {0};

        assert_int_equal(tether_config_new_default(&f->config), 0);
        if (fingerprint_mode) {
                char fp[TETHER_FINGERPRINT_LEN];
                assert_int_equal(tether_key_fingerprint(f->site_key, fp), 0);
                assert_int_equal(tether_config_set(f->config, "t", 1, "trust", "site_key_fingerprint", fp),
                                 0);
        } else {
                snprintf(pub, sizeof(pub), "%s/site.pub", f->dir);
                assert_int_equal(tether_key_save_public(f->site_key, pub), 0);
                assert_int_equal(tether_config_set(f->config, "t", 1, "trust", "site_key", pub), 0);
        }
        assert_int_equal(site_trust_new(f->config, f->dir, &f->trust, err), 0);
        sc.client_id = f->client_id;
        sc.device_key = f->device_key;
        sc.hostname = "host";
        sc.max_frame = 1024 * 1024;
        sc.enabled[1] = sc.enabled[2] = true;
        sc.enabled[3] = false; /* app evaluation disabled locally */
        assert_int_equal(session_new(&sc, f->trust, f->spool, &ops, f, &f->session), 0);
}

static int setup_common(void **state, bool fingerprint_mode) {
        struct fixture *f = calloc(1, sizeof(*f));
        char sp[300];

        log_set_sink(quiet_sink, NULL);
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-agent-session-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(sp, sizeof(sp), "%s/spool", f->dir);
        assert_int_equal(spool_open(sp, &f->spool, NULL), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->site_key), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->other_key), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->device_key), 0);
        assert_int_equal(tether_guid_new(f->client_id), 0);
        f->connected = true;
        make_session(f, fingerprint_mode);
        F = f;
        *state = f;
        return 0;
}

static int setup(void **state) {
        return setup_common(state, false);
}

static int setup_fingerprint(void **state) {
        return setup_common(state, true);
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[300];

        fsutil_fault_hook = NULL;
        for (size_t i = 0; i < f->n_sent; i++) {
                tether_msg_free(f->sent[i].msg);
                free(f->sent[i].frame);
        }
        session_free(f->session);
        site_trust_free(f->trust);
        spool_close(f->spool);
        tether_config_free(f->config);
        tether_key_free(f->site_key);
        tether_key_free(f->other_key);
        tether_key_free(f->device_key);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        log_set_sink(NULL, NULL);
        return 0;
}

/* Seals msg with key and hands the decoded frame to the session. */
static void deliver(struct fixture *f, struct tether_msg *m, const struct tether_key *key) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *fr = NULL;
        uint8_t *buf = NULL;
        size_t len, used;

        assert_int_equal(tether_msg_seal(m, key, 1024 * 1024, &buf, &len), 0);
        assert_int_equal(tether_frame_decoder_new(1024 * 1024, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &fr, NULL), 1);
        tether_frame_decoder_free(dec);
        free(buf);
        tether_msg_free(m);
        session_on_frame(f->session, fr);
}

static struct tether_msg *confirm_msg(enum tether_signin_status status, const struct tether_key *site_pub) {
        struct tether_msg *m = NULL;

        assert_int_equal(tether_msg_new(TETHER_FRAME_SIGNIN_CONFIRM, &m), 0);
        m->signin_confirm.timestamp = time(NULL);
        m->signin_confirm.message_version = 1;
        m->signin_confirm.status = status;
        m->signin_confirm.keepalive_seconds = 180;
        if (site_pub)
                assert_int_equal(tether_key_spki_base64(site_pub, &m->signin_confirm.site_public_key), 0);
        return m;
}

#define GUID "A43DD1B3-A006-4604-B012-5529380B3B6F"

static struct tether_msg *push_msg(const char *guid, uint32_t type, const char *param) {
        struct tether_msg *m = NULL;

        assert_int_equal(tether_msg_new(TETHER_FRAME_PUSH, &m), 0);
        m->push.timestamp = time(NULL);
        m->push.push_id = 7;
        m->push.task_id = 8;
        snprintf(m->push.task_guid, sizeof(m->push.task_guid), "%s", guid);
        m->push.task_type = type;
        m->push.task_param = strdup(param);
        m->push.expires = time(NULL) + 3600;
        return m;
}

static void approve(struct fixture *f) {
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->site_key);
        assert_true(session_approved(f->session));
        assert_int_equal(f->confirmed, 1);
}

static struct sent *last(struct fixture *f) {
        assert_true(f->n_sent > 0);
        return &f->sent[f->n_sent - 1];
}

static void test_signin_is_signed_and_complete(void **state) {
        struct fixture *f = *state;
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *fr = NULL;
        struct tether_msg *m = NULL;
        uint8_t *buf = NULL;
        size_t len, used;

        assert_int_equal(session_make_signin(f->session, &buf, &len), 0);
        assert_int_equal(tether_frame_decoder_new(1024 * 1024, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &fr, NULL), 1);
        assert_int_equal(tether_msg_open(fr, f->device_key, &m, NULL), 0);
        assert_string_equal(m->signin.client_id, f->client_id);
        assert_int_equal(m->signin.n_task_types, 3);
        assert_int_equal(m->signin.task_types[2], 3);
        /* Not verifiable with another key. */
        tether_msg_free(m);
        m = NULL;
        assert_int_not_equal(tether_msg_open(fr, f->other_key, &m, NULL), 0);
        tether_frame_free(fr);
        tether_frame_decoder_free(dec);
        free(buf);
}

static void test_confirm_states(void **state) {
        struct fixture *f = *state;

        /* Signed by another key: not trusted, protocol error. */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->other_key);
        assert_false(session_approved(f->session));
        assert_int_equal(f->reconnects, 1);
        assert_string_equal(f->reconnect_reason, "protocol-error");
        assert_int_equal(last(f)->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(last(f)->msg->goodbye.reason, TETHER_GOODBYE_PROTOCOL_ERROR);

        deliver(f, confirm_msg(TETHER_SIGNIN_PENDING, NULL), f->site_key);
        assert_false(session_approved(f->session));
        assert_non_null(strstr(session_last_error(f->session), "pending"));
        assert_int_equal(f->reconnects, 1);

        approve(f);

        deliver(f, confirm_msg(TETHER_SIGNIN_REJECTED, NULL), f->site_key);
        assert_false(session_approved(f->session));
        assert_int_equal(f->reconnects, 2);
        assert_true(f->reconnect_delay >= 15 * 60);
}

static void test_push_before_approval_is_protocol_error(void **state) {
        struct fixture *f = *state;

        deliver(f, push_msg(GUID, 1, ""), f->site_key);
        assert_int_equal(f->runs, 0);
        assert_int_equal(f->reconnects, 1);
        assert_int_equal(last(f)->type, TETHER_FRAME_GOODBYE);
        assert_false(spool_has_task(f->spool, GUID));
}

static void test_push_flow_and_duplicate(void **state) {
        struct fixture *f = *state;
        struct sent *rsp;
        size_t n;

        approve(f);
        log_set_sink(capture_sink, NULL);
        deliver(f, push_msg(GUID, 2, "alice"), f->site_key);
        log_set_sink(quiet_sink, NULL);
        /* The seed's line, with the journal fields. */
        assert_string_equal(captured_message,
                            "Receive task from server with pushid=7, taskid=8, taskguid=" GUID
                            ", tasktype=2 and taskParam=alice");
        assert_string_equal(captured_fields, "PUSH_ID=7;TASK_ID=8;TASK_GUID=" GUID ";TASK_TYPE=2;");
        /* Persisted, acknowledged, then handed over. */
        assert_true(spool_has_task(f->spool, GUID));
        assert_int_equal(f->n_sent, 1);
        assert_int_equal(f->sent[0].type, TETHER_FRAME_PUSH_ACK);
        assert_string_equal(f->sent[0].msg->ack.task_guid, GUID);
        assert_int_equal(f->runs, 1);
        assert_int_equal(f->run_cycle, 2);
        assert_string_equal(f->run_guid, GUID);
        assert_string_equal(f->run_param, "alice");

        /* The same TaskGUID while running: ACK again, never run twice. */
        deliver(f, push_msg(GUID, 2, "alice"), f->site_key);
        assert_int_equal(f->runs, 1);
        assert_int_equal(last(f)->type, TETHER_FRAME_PUSH_ACK);

        /* The result: signed RESPONSE, persisted before it was sent. */
        log_set_sink(capture_sink, NULL);
        assert_int_equal(session_task_done(f->session, 2, GUID, 1, "ok"), 0);
        log_set_sink(quiet_sink, NULL);
        assert_true(strncmp(captured_message, "Send Task response message <BgbResponseMessage TimeStamp=\"",
                            58) == 0);
        assert_non_null(
                strstr(captured_message, "<PushID>7</PushID><TaskID>8</TaskID><ReturnCode>1</ReturnCode>"));
        assert_non_null(strstr(captured_message, "</BgbResponseMessage> successfully."));
        assert_string_equal(captured_fields, "TASK_GUID=" GUID ";RETURN_CODE=1;PUSH_ID=7;TASK_ID=8;");
        rsp = last(f);
        assert_int_equal(rsp->type, TETHER_FRAME_RESPONSE);
        assert_true(rsp->persisted_before);
        assert_int_equal(rsp->msg->response.return_code, 1);
        assert_int_equal(rsp->msg->response.push_id, 7);
        assert_int_equal(rsp->msg->response.task_id, 8);
        assert_string_equal(rsp->msg->response.client_id, f->client_id);
        assert_string_equal(rsp->msg->response.detail, "ok");

        /* A replay after the answer: the stored response, byte for byte. */
        n = f->n_sent;
        deliver(f, push_msg(GUID, 2, "alice"), f->site_key);
        assert_int_equal(f->runs, 1);
        assert_int_equal(f->n_sent, n + 2);
        assert_int_equal(f->sent[n].type, TETHER_FRAME_PUSH_ACK);
        assert_int_equal(f->sent[n + 1].len, rsp->len);
        assert_memory_equal(f->sent[n + 1].frame, rsp->frame, rsp->len);

        /* A Detail the contract refuses (over 4 KiB) still gets an answer. */
        {
                char big[5000];
                memset(big, 'x', sizeof(big) - 1);
                big[sizeof(big) - 1] = 0;
                struct tether_msg *p2 = push_msg("99999999-9999-4999-8999-999999999999", 1, "");
                deliver(f, p2, f->site_key);
                assert_int_equal(
                        session_task_done(f->session, 1, "99999999-9999-4999-8999-999999999999", 2, big), 0);
                assert_int_equal(last(f)->type, TETHER_FRAME_RESPONSE);
                assert_int_equal(last(f)->msg->response.return_code, 2);
                assert_string_equal(last(f)->msg->response.detail, "(the detail could not be encoded)");
        }

        /* A second result for the same task is ignored. */
        n = f->n_sent;
        assert_int_equal(session_task_done(f->session, 2, GUID, 2, "late"), 0);
        assert_int_equal(f->n_sent, n);
}

static void test_bad_signature_answers_5_and_runs_nothing(void **state) {
        struct fixture *f = *state;
        struct sent *rsp;

        approve(f);
        deliver(f, push_msg(GUID, 1, ""), f->other_key);
        assert_int_equal(f->runs, 0);
        assert_false(spool_has_task(f->spool, GUID));
        assert_int_equal(f->n_sent, 1); /* no PUSH_ACK */
        rsp = last(f);
        assert_int_equal(rsp->type, TETHER_FRAME_RESPONSE);
        assert_int_equal(rsp->msg->response.return_code, TETHER_RC_UNAUTHORIZED);
        assert_string_equal(rsp->msg->response.task_guid, GUID);
        assert_true(rsp->persisted_before);

        /* The forged GUID does not shadow the genuine task. */
        deliver(f, push_msg(GUID, 1, ""), f->site_key);
        assert_int_equal(f->runs, 1);
}

static void test_refusals(void **state) {
        struct fixture *f = *state;
        struct {
                const char *guid;
                uint32_t type;
                int mutate; /* 1 expired, 2 future, 3 other ClientID, 0 none */
                uint32_t want;
        } cases[] = {
                {"11111111-1111-4111-8111-111111111111", 1, 1, TETHER_RC_INVALID_TASK},
                {"22222222-2222-4222-8222-222222222222", 1, 2, TETHER_RC_INVALID_TASK},
                {"33333333-3333-4333-8333-333333333333", 1, 3, TETHER_RC_INVALID_TASK},
                {"44444444-4444-4444-8444-444444444444", 7, 0, TETHER_RC_NOT_SUPPORTED},
                {"55555555-5555-4555-8555-555555555555", 3, 0, TETHER_RC_NOT_SUPPORTED}, /* disabled */
        };

        approve(f);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct tether_msg *m = push_msg(cases[i].guid, cases[i].type, "");
                if (cases[i].mutate == 1)
                        m->push.expires = time(NULL) - 1;
                if (cases[i].mutate == 2)
                        m->push.timestamp = time(NULL) + 301;
                if (cases[i].mutate == 3)
                        assert_int_equal(tether_guid_new(m->push.client_id), 0);
                deliver(f, m, f->site_key);
                assert_int_equal(last(f)->type, TETHER_FRAME_RESPONSE);
                assert_int_equal(last(f)->msg->response.return_code, cases[i].want);
                assert_string_equal(last(f)->msg->response.task_guid, cases[i].guid);
                /* Remembered, so that a replay never runs either. */
                assert_true(spool_has_task(f->spool, cases[i].guid));
        }
        /* 300 s ahead is still accepted, and our own ClientID too. */
        struct tether_msg *m = push_msg("66666666-6666-4666-8666-666666666666", 1, "");
        m->push.timestamp = time(NULL) + 290;
        memcpy(m->push.client_id, f->client_id, TETHER_GUID_LEN);
        deliver(f, m, f->site_key);
        assert_int_equal(f->runs, 1);
}

static int enospc_hook(enum fsutil_step step) {
        return step == FSUTIL_STEP_WRITE_ALL ? -ENOSPC : 0;
}

static void test_disk_full_refuses_work(void **state) {
        struct fixture *f = *state;
        size_t n;

        approve(f);
        n = f->n_sent;
        fsutil_fault_hook = enospc_hook;
        deliver(f, push_msg(GUID, 1, ""), f->site_key);
        fsutil_fault_hook = NULL;
        assert_int_equal(f->runs, 0);
        assert_int_equal(f->n_sent, n); /* no PUSH_ACK: the MP pushes again later */
        assert_false(spool_has_task(f->spool, GUID));
        assert_non_null(strstr(session_last_error(f->session), "No space left on device"));
        assert_int_equal(session_held(f->session), 1);

        /* Still full: still held, still no ACK. */
        fsutil_fault_hook = enospc_hook;
        assert_int_equal(session_retry_held(f->session), 1);
        fsutil_fault_hook = NULL;
        assert_int_equal(f->n_sent, n);
        assert_int_equal(f->runs, 0);

        /* Space again: the held push is persisted, acknowledged, run. */
        assert_int_equal(session_retry_held(f->session), 0);
        assert_int_equal(f->runs, 1);
        assert_int_equal(last(f)->type, TETHER_FRAME_PUSH_ACK);
        assert_true(spool_has_task(f->spool, GUID));

        /* The MP's re-delivery at the next sign-in is a duplicate now. */
        deliver(f, push_msg(GUID, 1, ""), f->site_key);
        assert_int_equal(f->runs, 1);

        /* Held pushes are dropped when the link goes (the MP re-delivers). */
        fsutil_fault_hook = enospc_hook;
        deliver(f, push_msg("88888888-8888-4888-8888-888888888888", 1, ""), f->site_key);
        fsutil_fault_hook = NULL;
        assert_int_equal(session_held(f->session), 1);
        session_on_disconnect(f->session);
        assert_int_equal(session_held(f->session), 0);
        assert_int_equal(f->runs, 1);
}

static void test_acks_goodbye_resend_resume(void **state) {
        struct fixture *f = *state;
        struct tether_msg *m = NULL;
        struct spool_counts c;

        approve(f);
        deliver(f, push_msg(GUID, 1, ""), f->site_key);

        /* Answered while the link is down: kept, sent after the next approval. */
        f->connected = false;
        session_on_disconnect(f->session);
        assert_int_equal(session_task_done(f->session, 1, GUID, 1, ""), 0);
        assert_int_equal(spool_count(f->spool, &c), 0);
        assert_int_equal(c.unacked, 1);
        f->connected = true;
        size_t n = f->n_sent;
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->site_key);
        assert_int_equal(f->n_sent, n + 1);
        assert_int_equal(last(f)->type, TETHER_FRAME_RESPONSE);

        assert_int_equal(tether_msg_new(TETHER_FRAME_RESPONSE_ACK, &m), 0);
        memcpy(m->ack.task_guid, GUID, TETHER_GUID_LEN);
        deliver(f, m, NULL);
        assert_int_equal(spool_count(f->spool, &c), 0);
        assert_int_equal(c.unacked, 0);

        /* Re-approval does not re-send acknowledged responses. */
        session_on_disconnect(f->session);
        n = f->n_sent;
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->site_key);
        assert_int_equal(f->n_sent, n);

        assert_int_equal(tether_msg_new(TETHER_FRAME_GOODBYE, &m), 0);
        m->goodbye.reason = TETHER_GOODBYE_SHUTDOWN;
        m->goodbye.retry_after_seconds = 77;
        deliver(f, m, NULL);
        assert_int_equal(f->reconnect_delay, 77);
        assert_false(session_approved(f->session));

        /* A task accepted before a restart and not answered runs again. */
        struct spool_task t = {0};
        snprintf(t.task_guid, sizeof(t.task_guid), "%s", "77777777-7777-4777-8777-777777777777");
        t.task_type = 1;
        t.param = "";
        t.expires = time(NULL) + 60;
        assert_int_equal(spool_save_task(f->spool, &t), 0);
        f->runs = 0;
        assert_int_equal(session_resume(f->session), 0);
        assert_int_equal(f->runs, 1);
        assert_string_equal(f->run_guid, "77777777-7777-4777-8777-777777777777");
}

static void test_fingerprint_mode_learns_and_pins(void **state) {
        struct fixture *f = *state;
        char pin[300];

        /* Without SitePublicKey nothing can be trusted. */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->site_key);
        assert_false(session_approved(f->session));
        /* Another key presented: its fingerprint does not match. */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, f->other_key), f->other_key);
        assert_false(session_approved(f->session));
        /* The right key, but the confirm signed by another one. */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, f->site_key), f->other_key);
        assert_false(session_approved(f->session));
        assert_int_equal(f->site_keys, 0);
        /* The right key, properly signed: learned and pinned. */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, f->site_key), f->site_key);
        assert_true(session_approved(f->session));
        assert_int_equal(f->site_keys, 1);
        snprintf(pin, sizeof(pin), "%s/site.pub", f->dir);
        assert_int_equal(access(pin, F_OK), 0);
        assert_true(tether_key_equal(site_trust_key(f->trust), f->site_key));
}

/* Contract 7.6: a PUSH without a signature is a protocol error (GOODBYE and
 * close), not a forged PUSH answered with ReturnCode 5; the error line
 * names the peer. */
static void test_unsigned_push_is_protocol_error(void **state) {
        struct fixture *f = *state;
        struct tether_msg *m = push_msg(GUID, 1, "");
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *fr = NULL;
        char *body = NULL;
        uint8_t *buf = NULL;
        size_t body_len, len, used;
        struct spool_counts c;

        approve(f);
        assert_int_equal(tether_msg_build(m, &body, &body_len), 0);
        tether_msg_free(m);
        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, (const uint8_t *)body, body_len, NULL, 0,
                                             1024 * 1024, &buf, &len),
                         0);
        free(body);
        assert_int_equal(tether_frame_decoder_new(1024 * 1024, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &fr, NULL), 1);
        tether_frame_decoder_free(dec);
        free(buf);
        warnings[0] = 0;
        log_set_sink(warning_sink, NULL);
        session_on_frame(f->session, fr);
        log_set_sink(quiet_sink, NULL);

        assert_int_equal(f->runs, 0);
        assert_int_equal(f->reconnects, 1);
        assert_string_equal(f->reconnect_reason, "protocol-error");
        assert_int_equal(last(f)->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(last(f)->msg->goodbye.reason, TETHER_GOODBYE_PROTOCOL_ERROR);
        /* No ReturnCode 5 answer, nothing stored. */
        for (size_t i = 0; i < f->n_sent; i++)
                assert_int_not_equal(f->sent[i].type, TETHER_FRAME_RESPONSE);
        assert_false(spool_has_response(f->spool, "U-" GUID));
        assert_int_equal(spool_count(f->spool, &c), 0);
        assert_int_equal(c.unacked, 0);
        assert_non_null(
                strstr(warnings, "Protocol error from mp.test.invalid:10123: PUSH without a signature"));
}

/* Every protocol-error line names the peer on the same line. */
static void test_protocol_error_names_peer(void **state) {
        struct fixture *f = *state;

        warnings[0] = 0;
        log_set_sink(warning_sink, NULL);
        deliver(f, push_msg(GUID, 1, ""), f->site_key); /* before approval */
        deliver(f, confirm_msg(TETHER_SIGNIN_APPROVED, NULL), f->other_key);
        log_set_sink(quiet_sink, NULL);
        assert_int_equal(f->reconnects, 2);
        for (char *line = warnings, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
                *nl = 0;
                if (strstr(line, "rotocol error"))
                        assert_non_null(strstr(line, "from mp.test.invalid:10123: "));
        }
}

/* GOODBYE's RetryAfterSeconds is capped (and the cap logged). */
static void test_goodbye_retry_after_capped(void **state) {
        struct fixture *f = *state;
        struct tether_msg *m = NULL;

        approve(f);
        assert_int_equal(tether_msg_new(TETHER_FRAME_GOODBYE, &m), 0);
        m->goodbye.reason = TETHER_GOODBYE_OVERLOADED;
        m->goodbye.retry_after_seconds = UINT32_MAX;
        warnings[0] = 0;
        log_set_sink(warning_sink, NULL);
        deliver(f, m, NULL);
        log_set_sink(quiet_sink, NULL);
        assert_int_equal(f->reconnects, 1);
        assert_int_equal(f->reconnect_delay, SESSION_RETRY_AFTER_MAX);
        assert_non_null(strstr(warnings, "asks to wait 4294967295 s"));

        /* At or under the cap: as asked. */
        assert_int_equal(tether_msg_new(TETHER_FRAME_GOODBYE, &m), 0);
        m->goodbye.reason = TETHER_GOODBYE_OVERLOADED;
        m->goodbye.retry_after_seconds = SESSION_RETRY_AFTER_MAX;
        deliver(f, m, NULL);
        assert_int_equal(f->reconnect_delay, SESSION_RETRY_AFTER_MAX);
}

/* Answers to forged PUSHes are bounded in the spool, oldest dropped first. */
static void test_unauthorized_answers_bounded(void **state) {
        struct fixture *f = *state;
        char guid[TETHER_GUID_LEN], name[64];
        unsigned kept = 0;
        const unsigned total = SESSION_UNAUTH_MAX + 6;

        approve(f);
        f->connected = false; /* stored, not sent: the fixture records 32 frames at most */
        warnings[0] = 0;
        log_set_sink(warning_sink, NULL);
        for (unsigned i = 0; i < total; i++) {
                snprintf(guid, sizeof(guid), "00000000-0000-4000-8000-%012u", i);
                deliver(f, push_msg(guid, 1, ""), f->other_key);
        }
        log_set_sink(quiet_sink, NULL);
        assert_int_equal(f->runs, 0);
        for (unsigned i = 0; i < total; i++) {
                snprintf(name, sizeof(name), "U-00000000-0000-4000-8000-%012u", i);
                if (spool_has_response(f->spool, name)) {
                        kept++;
                        /* Only the newest survive. */
                        assert_true(i >= total - SESSION_UNAUTH_MAX);
                }
        }
        assert_int_equal(kept, SESSION_UNAUTH_MAX);
        assert_non_null(
                strstr(warnings, "Dropped the 1 oldest stored answer to PUSHes with a bad signature"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_signin_is_signed_and_complete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_confirm_states, setup, teardown),
                cmocka_unit_test_setup_teardown(test_push_before_approval_is_protocol_error, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_push_flow_and_duplicate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_signature_answers_5_and_runs_nothing, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disk_full_refuses_work, setup, teardown),
                cmocka_unit_test_setup_teardown(test_acks_goodbye_resend_resume, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fingerprint_mode_learns_and_pins, setup_fingerprint,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unsigned_push_is_protocol_error, setup, teardown),
                cmocka_unit_test_setup_teardown(test_protocol_error_names_peer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_goodbye_retry_after_capped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unauthorized_answers_bounded, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
