/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The real tether-mp against a protocol-speaking test client built on
 * transport/, over loopback TLS and HTTPS. Each test starts its own server
 * in a temporary state directory and always kills it.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "harness.h"
#include "transport/sign.h"

struct fixture {
        struct mp_server_proc p;
};

static int setup_default(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(mp_proc_start(&f->p, (const char *const[]){"--keepalive", "30", NULL}), 0);
        return 0;
}

static int setup_manual(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(mp_proc_start(&f->p, (const char *const[]){"--approval", "manual", NULL}), 0);
        return 0;
}

static int setup_token(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(mp_proc_start(&f->p, (const char *const[]){"--approval", "token", "--token",
                                                                    "enrol-42", NULL}),
                         0);
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int status, ok = 0;

        /* A clean SIGTERM exit also runs the sanitizers' leak check. */
        if (f->p.pid > 0) {
                status = mp_proc_stop(&f->p, SIGTERM);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "tether-mp did not exit cleanly (status 0x%x); see %s/server.log\n",
                                (unsigned)status, f->p.dir);
                        ok = -1;
                }
        }
        if (ok == 0)
                mp_proc_cleanup(&f->p);
        else
                tether_key_free(f->p.site_key); /* keep the directory for the log */
        free(f);
        return ok;
}

static json_object *find_by(json_object *arr, const char *key, const char *value) {
        json_object *v;

        for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
                json_object *o = json_object_array_get_idx(arr, i);
                if (json_object_object_get_ex(o, key, &v) && strcmp(json_object_get_string(v), value) == 0)
                        return o;
        }
        return NULL;
}

static const char *field(json_object *o, const char *key) {
        json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v))
                return "";
        return json_object_get_string(v);
}

static json_object *device_row(struct mp_server_proc *p, const char *id, json_object **holder) {
        json_object *arr;

        *holder = mp_cli_json(p, (const char *const[]){"devices", NULL});
        assert_non_null(*holder);
        assert_true(json_object_object_get_ex(*holder, "devices", &arr));
        return find_by(arr, "client_id", id);
}

static json_object *push_target(json_object *push, const char *id) {
        json_object *arr;

        assert_true(json_object_object_get_ex(push, "targets", &arr));
        return find_by(arr, "client_id", id);
}

static uint64_t cli_push(struct mp_server_proc *p, const char *type, const char *const *targets,
                         char guid[37]) {
        const char *args[16] = {"push", "--type", type};
        json_object *o;
        uint64_t id;
        size_t n = 3;

        for (size_t i = 0; targets[i]; i++)
                args[n++] = targets[i];
        args[n] = NULL;
        o = mp_cli_json(p, args);
        assert_non_null(o);
        assert_int_equal(parse_u64(field(o, "push_id"), 1, UINT64_MAX, &id), 0);
        if (guid)
                strscpy(guid, 37, field(o, "task_guid"));
        json_object_put(o);
        assert_true(id > 0);
        return id;
}

static json_object *cli_push_status(struct mp_server_proc *p, uint64_t id, const char *wait) {
        char num[32];

        snprintf(num, sizeof(num), "%llu", (unsigned long long)id);
        if (wait)
                return mp_cli_json(p, (const char *const[]){"push-status", num, "--wait", wait, NULL});
        return mp_cli_json(p, (const char *const[]){"push-status", num, NULL});
}

/* A signed-in channel; asserts the expected status. */
static void signin_ok(struct chan *c, struct mp_server_proc *p, struct device *d,
                      enum tether_signin_status want) {
        struct tether_msg *m = NULL;

        assert_int_equal(chan_open(c, p, d), 0);
        assert_int_equal(chan_signin(c, p, d, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(m->signin_confirm.status, want);
        tether_msg_free(m);
}

static void expect_goodbye(struct chan *c, struct mp_server_proc *p, enum tether_goodbye_reason reason) {
        struct tether_msg *m = NULL;

        assert_int_equal(chan_recv_msg(c, p, 10000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, reason);
        tether_msg_free(m);
        /* then the server closes */
        struct tether_frame *fr = NULL;
        assert_int_equal(chan_recv(c, 10000, &fr), -ECONNRESET);
}

/* ---- sign-in ---- */

static void test_signin(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d, other;
        struct chan c;
        struct tether_msg *m = NULL;
        _cleanup_(freep) char *site_b64 = NULL;
        json_object *holder, *row;

        assert_int_equal(device_new(&d, NULL, NULL), 0);
        assert_int_equal(chan_open(&c, p, &d), 0);
        assert_int_equal(chan_signin(&c, p, &d, NULL, NULL, NULL, &m), 0);
        /* chan_recv_msg verified SIGNIN_CONFIRM against site.pub */
        assert_int_equal(m->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        assert_int_equal(m->signin_confirm.keepalive_seconds, 30);
        assert_int_equal(tether_key_spki_base64(p->site_key, &site_b64), 0);
        assert_non_null(m->signin_confirm.site_public_key);
        assert_string_equal(m->signin_confirm.site_public_key, site_b64);
        assert_true(labs((long)(m->signin_confirm.timestamp - time(NULL))) < 5);
        tether_msg_free(m);

        /* KEEPALIVE is answered */
        struct tether_msg ka = {.type = TETHER_FRAME_KEEPALIVE};
        ka.keepalive.timestamp = time(NULL);
        assert_int_equal(chan_send(&c, &ka, NULL), 0);
        assert_int_equal(chan_recv_msg(&c, p, 5000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_KEEPALIVE);
        tether_msg_free(m);

        row = device_row(p, d.client_id, &holder);
        assert_non_null(row);
        assert_string_equal(field(row, "status"), "approved");
        assert_string_equal(field(row, "online"), "true");
        assert_string_equal(field(row, "address"), "127.0.0.1");
        char fpr[65];
        assert_int_equal(tether_key_fingerprint(d.key, fpr), 0);
        assert_string_equal(field(row, "fingerprint"), fpr);
        json_object_put(holder);

        /* offline once the channel closes */
        chan_close(&c);
        assert_int_equal(chan_open(&c, p, &d), 0); /* a round trip orders the close before the query */
        assert_int_equal(chan_signin(&c, p, &d, NULL, NULL, NULL, &m), 0);
        tether_msg_free(m);
        chan_close(&c);

        /* should-fail: SIGNIN signed by a key other than the TLS certificate's */
        assert_int_equal(device_new(&other, NULL, NULL), 0);
        assert_int_equal(chan_open(&c, p, &d), 0);
        assert_int_equal(chan_signin(&c, p, &d, other.key, other.key, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_UNAUTHORIZED);
        tether_msg_free(m);
        chan_close(&c);

        /* should-fail: signed by the certificate's key, but PublicKey names another */
        assert_int_equal(chan_open(&c, p, &d), 0);
        assert_int_equal(chan_signin(&c, p, &d, d.key, other.key, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_UNAUTHORIZED);
        tether_msg_free(m);
        chan_close(&c);

        /* should-fail: garbage instead of a frame */
        assert_int_equal(chan_open(&c, p, &d), 0);
        assert_int_equal(chan_send_raw(&c, "GET / HTTP/1.1\r\n\r\n", 18), 0);
        expect_goodbye(&c, p, TETHER_GOODBYE_PROTOCOL_ERROR);
        chan_close(&c);

        /* should-fail: a first frame that is not SIGNIN */
        assert_int_equal(chan_open(&c, p, &d), 0);
        assert_int_equal(chan_send(&c, &ka, NULL), 0);
        expect_goodbye(&c, p, TETHER_GOODBYE_PROTOCOL_ERROR);
        chan_close(&c);

        device_done(&d);
        device_done(&other);
}

/* ---- conflict ---- */

static void test_conflict(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device a, clone;
        struct chan ca, cb;
        struct tether_msg *m = NULL;
        json_object *o, *arr, *row, *holder;
        char fa[65], fb[65];

        assert_int_equal(device_new(&a, NULL, NULL), 0);
        assert_int_equal(device_new(&clone, a.client_id, NULL),
                         0); /* cloned image: same ClientID, new key */
        signin_ok(&ca, p, &a, TETHER_SIGNIN_APPROVED);

        assert_int_equal(chan_open(&cb, p, &clone), 0);
        assert_int_equal(chan_signin(&cb, p, &clone, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        tether_msg_free(m);
        chan_close(&cb);

        o = mp_cli_json(p, (const char *const[]){"conflicts", NULL});
        assert_non_null(o);
        assert_true(json_object_object_get_ex(o, "conflicts", &arr));
        assert_int_equal(json_object_array_length(arr), 1);
        row = json_object_array_get_idx(arr, 0);
        assert_int_equal(tether_key_fingerprint(a.key, fa), 0);
        assert_int_equal(tether_key_fingerprint(clone.key, fb), 0);
        assert_string_equal(field(row, "client_id"), a.client_id);
        assert_string_equal(field(row, "known_fingerprint"), fa);
        assert_string_equal(field(row, "offered_fingerprint"), fb);
        json_object_put(o);

        /* the binding is kept and the original stays online */
        row = device_row(p, a.client_id, &holder);
        assert_string_equal(field(row, "fingerprint"), fa);
        assert_string_equal(field(row, "online"), "true");
        json_object_put(holder);

        /* the text listing shows it too */
        char *out = NULL;
        assert_int_equal(mp_cli(p, &out, (const char *const[]){"conflicts", NULL}), 0);
        assert_non_null(strstr(out, a.client_id));
        free(out);

        chan_close(&ca);
        device_done(&a);
        device_done(&clone);
}

/* ---- approval modes ---- */

static void test_manual_approval(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d, r;
        struct chan c;
        struct tether_msg *m = NULL;
        json_object *holder, *row;

        assert_int_equal(device_new(&d, NULL, NULL), 0);
        signin_ok(&c, p, &d, TETHER_SIGNIN_PENDING);
        row = device_row(p, d.client_id, &holder);
        assert_string_equal(field(row, "status"), "pending");
        json_object_put(holder);

        /* the administrator approves: a new SIGNIN_CONFIRM on the same connection */
        assert_int_equal(mp_cli(p, NULL, (const char *const[]){"approve", d.client_id, NULL}), 0);
        assert_int_equal(chan_recv_msg(&c, p, 10000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        tether_msg_free(m);
        chan_close(&c);

        /* rejection: told, then disconnected */
        assert_int_equal(device_new(&r, NULL, NULL), 0);
        signin_ok(&c, p, &r, TETHER_SIGNIN_PENDING);
        assert_int_equal(mp_cli(p, NULL, (const char *const[]){"reject", r.client_id, NULL}), 0);
        assert_int_equal(chan_recv_msg(&c, p, 10000, &m), 0);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_REJECTED);
        tether_msg_free(m);
        struct tether_frame *fr = NULL;
        assert_int_equal(chan_recv(&c, 10000, &fr), -ECONNRESET);
        chan_close(&c);
        /* and stays rejected */
        assert_int_equal(chan_open(&c, p, &r), 0);
        assert_int_equal(chan_signin(&c, p, &r, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_REJECTED);
        tether_msg_free(m);
        chan_close(&c);

        /* should-fail: unknown ClientID, and not a GUID */
        assert_int_not_equal(
                mp_cli(p, NULL,
                       (const char *const[]){"approve", "00000000-0000-0000-0000-000000000001", NULL}),
                0);
        assert_int_not_equal(mp_cli(p, NULL, (const char *const[]){"approve", "nope", NULL}), 0);
        device_done(&d);
        device_done(&r);
}

static void test_token_approval(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device good, bad;
        struct chan c;
        struct tether_msg *m = NULL;

        assert_int_equal(device_new(&good, NULL, NULL), 0);
        assert_int_equal(device_new(&bad, NULL, NULL), 0);
        assert_int_equal(chan_open(&c, p, &good), 0);
        assert_int_equal(chan_signin(&c, p, &good, NULL, NULL, "enrol-42", &m), 0);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        tether_msg_free(m);
        chan_close(&c);
        assert_int_equal(chan_open(&c, p, &bad), 0);
        assert_int_equal(chan_signin(&c, p, &bad, NULL, NULL, "enrol-43", &m), 0);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_PENDING);
        tether_msg_free(m);
        chan_close(&c);
        device_done(&good);
        device_done(&bad);
}

/* ---- pushes ---- */

static struct tether_msg *expect_push(struct chan *c, struct mp_server_proc *p, const char *guid) {
        struct tether_msg *m = NULL;

        assert_int_equal(chan_recv_msg(c, p, 10000, &m), 0); /* signature checked with site.pub */
        assert_int_equal(m->type, TETHER_FRAME_PUSH);
        if (guid)
                assert_string_equal(m->push.task_guid, guid);
        assert_string_equal(m->push.client_id, ""); /* one body for the whole fan-out */
        assert_true(m->push.expires > time(NULL));
        return m;
}

static void ack_and_answer(struct chan *c, struct mp_server_proc *p, struct device *d,
                           struct tether_msg *push, uint32_t rc, const char *detail) {
        struct tether_msg ack = {.type = TETHER_FRAME_PUSH_ACK}, resp, *m = NULL;

        strscpy(ack.ack.task_guid, sizeof(ack.ack.task_guid), push->push.task_guid);
        assert_int_equal(chan_send(c, &ack, NULL), 0);
        make_response(d, &push->push, rc, detail, &resp);
        assert_int_equal(chan_send(c, &resp, d->key), 0);
        assert_int_equal(chan_recv_msg(c, p, 10000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_RESPONSE_ACK);
        assert_string_equal(m->ack.task_guid, push->push.task_guid);
        tether_msg_free(m);
}

static void test_push_online_and_later(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device a, b;
        struct chan ca, cb;
        struct tether_msg *pa, *pb, *m = NULL;
        char guid[37];
        json_object *st, *t;

        assert_int_equal(device_new(&a, NULL, NULL), 0);
        assert_int_equal(device_new(&b, NULL, NULL), 0);
        signin_ok(&cb, p, &b, TETHER_SIGNIN_APPROVED);
        chan_close(&cb); /* b is known, and offline */
        signin_ok(&ca, p, &a, TETHER_SIGNIN_APPROVED);

        uint64_t id =
                cli_push(p, "machine-policy",
                         (const char *const[]){"--param", "x=1", a.client_id, b.client_id, NULL}, guid);
        pa = expect_push(&ca, p, guid);
        assert_int_equal(pa->push.push_id, id);
        assert_int_equal(pa->push.task_type, 1);
        assert_string_equal(pa->push.task_param, "x=1");

        st = cli_push_status(p, id, NULL);
        assert_non_null(st);
        t = push_target(st, b.client_id);
        assert_string_equal(field(t, "state"), "pending");
        json_object_put(st);

        ack_and_answer(&ca, p, &a, pa, TETHER_RC_SUCCESS, "machine policy applied");
        st = cli_push_status(p, id, NULL);
        t = push_target(st, a.client_id);
        assert_string_equal(field(t, "state"), "answered");
        assert_string_equal(field(t, "return_code"), "1");
        assert_string_equal(field(t, "return_code_name"), "Success");
        assert_string_equal(field(t, "detail"), "machine policy applied");
        assert_non_null(strstr(field(t, "response_xml"), "<BgbResponseMessage"));
        assert_non_null(strstr(field(t, "response_xml"), guid));
        assert_string_equal(field(st, "done"), "false");
        json_object_put(st);

        /* b comes online later: SIGNIN_CONFIRM, then the kept push */
        signin_ok(&cb, p, &b, TETHER_SIGNIN_APPROVED);
        pb = expect_push(&cb, p, guid);
        assert_int_equal(pb->push.push_id, id);
        /* delivered, not yet acknowledged */
        st = cli_push_status(p, id, NULL);
        assert_string_equal(field(push_target(st, b.client_id), "state"), "delivered");
        json_object_put(st);
        struct tether_msg ack = {.type = TETHER_FRAME_PUSH_ACK};
        strscpy(ack.ack.task_guid, sizeof(ack.ack.task_guid), guid);
        assert_int_equal(chan_send(&cb, &ack, NULL), 0);
        /* a keepalive round trip orders the ACK before the query */
        struct tether_msg ka = {.type = TETHER_FRAME_KEEPALIVE};
        ka.keepalive.timestamp = time(NULL);
        assert_int_equal(chan_send(&cb, &ka, NULL), 0);
        assert_int_equal(chan_recv_msg(&cb, p, 5000, &m), 0);
        tether_msg_free(m);
        st = cli_push_status(p, id, NULL);
        assert_string_equal(field(push_target(st, b.client_id), "state"), "acknowledged");
        json_object_put(st);

        ack_and_answer(&cb, p, &b, pb, TETHER_RC_FAILED, "hook failed");
        /* --wait returns at once now: all answered */
        st = cli_push_status(p, id, "10");
        assert_non_null(st);
        assert_string_equal(field(st, "done"), "true");
        assert_string_equal(field(push_target(st, b.client_id), "return_code_name"), "Failed");
        json_object_put(st);

        /* push --all reaches both online devices; --wait times out (exit 3) while unanswered */
        uint64_t id2 = cli_push(p, "3", (const char *const[]){"--all", NULL}, guid);
        tether_msg_free(expect_push(&ca, p, guid));
        tether_msg_free(expect_push(&cb, p, guid));
        char num[32];
        snprintf(num, sizeof(num), "%llu", (unsigned long long)id2);
        assert_int_equal(mp_cli(p, NULL, (const char *const[]){"push-status", num, "--wait", "1", NULL}), 3);

        /* should-fail: bad type, unknown target */
        assert_int_not_equal(
                mp_cli(p, NULL, (const char *const[]){"push", "--type", "bogus", "--all", NULL}), 0);
        assert_int_not_equal(mp_cli(p, NULL,
                                    (const char *const[]){"push", "--type", "1",
                                                          "00000000-0000-0000-0000-0000000000AA", NULL}),
                             0);

        tether_msg_free(pa);
        tether_msg_free(pb);
        chan_close(&ca);
        chan_close(&cb);
        device_done(&a);
        device_done(&b);
}

static size_t count_responses(struct mp_server_proc *p, const char *id) {
        json_object *o = mp_cli_json(p, (const char *const[]){"responses", "--limit", "100", NULL}), *arr;
        size_t n = 0;

        assert_non_null(o);
        assert_true(json_object_object_get_ex(o, "responses", &arr));
        for (size_t i = 0; i < json_object_array_length(arr); i++)
                if (strcmp(field(json_object_array_get_idx(arr, i), "client_id"), id) == 0)
                        n++;
        json_object_put(o);
        return n;
}

static void test_bad_signature_and_duplicate(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d, wrong;
        struct chan c;
        struct tether_msg *push, resp, *m = NULL;
        struct tether_frame *fr = NULL;
        char guid[37];

        assert_int_equal(device_new(&d, NULL, NULL), 0);
        assert_int_equal(device_new(&wrong, NULL, NULL), 0);
        signin_ok(&c, p, &d, TETHER_SIGNIN_APPROVED);
        cli_push(p, "2", (const char *const[]){"--param", "alice", d.client_id, NULL}, guid);
        push = expect_push(&c, p, guid);
        assert_string_equal(push->push.task_param, "alice");

        /* should-fail: signed by another key: refused, not recorded, no ACK */
        make_response(&d, &push->push, TETHER_RC_SUCCESS, "forged", &resp);
        assert_int_equal(chan_send(&c, &resp, wrong.key), 0);
        assert_int_equal(chan_recv(&c, 1500, &fr), -ETIMEDOUT);
        assert_int_equal(count_responses(p, d.client_id), 0);
        /* the channel stays up */
        struct tether_msg ka = {.type = TETHER_FRAME_KEEPALIVE};
        ka.keepalive.timestamp = time(NULL);
        assert_int_equal(chan_send(&c, &ka, NULL), 0);
        assert_int_equal(chan_recv_msg(&c, p, 5000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_KEEPALIVE);
        tether_msg_free(m);

        /* the real one, twice: stored once, acknowledged twice */
        make_response(&d, &push->push, TETHER_RC_SUCCESS, "user policy done", &resp);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(chan_send(&c, &resp, d.key), 0);
                assert_int_equal(chan_recv_msg(&c, p, 10000, &m), 0);
                assert_int_equal(m->type, TETHER_FRAME_RESPONSE_ACK);
                assert_string_equal(m->ack.task_guid, guid);
                tether_msg_free(m);
        }
        /* a re-send with another code after reconnecting changes nothing */
        chan_close(&c);
        signin_ok(&c, p, &d, TETHER_SIGNIN_APPROVED);
        make_response(&d, &push->push, TETHER_RC_FAILED, "late copy", &resp);
        assert_int_equal(chan_send(&c, &resp, d.key), 0);
        assert_int_equal(chan_recv_msg(&c, p, 10000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_RESPONSE_ACK);
        tether_msg_free(m);
        assert_int_equal(count_responses(p, d.client_id), 1);
        json_object *o = mp_cli_json(p, (const char *const[]){"responses", NULL}), *arr;
        assert_true(json_object_object_get_ex(o, "responses", &arr));
        assert_string_equal(field(json_object_array_get_idx(arr, 0), "detail"), "user policy done");
        assert_true(strlen(field(json_object_array_get_idx(arr, 0), "signature_hex")) > 16);
        json_object_put(o);

        /* should-fail: a RESPONSE without signature is a protocol error */
        uint8_t *frame = NULL;
        size_t len = 0;
        char *body = NULL;
        size_t blen = 0;
        assert_int_equal(tether_msg_build(&resp, &body, &blen), 0);
        assert_int_equal(tether_frame_encode(TETHER_FRAME_RESPONSE, (const uint8_t *)body, blen, NULL, 0,
                                             TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &len),
                         0);
        assert_int_equal(chan_send_raw(&c, frame, len), 0);
        expect_goodbye(&c, p, TETHER_GOODBYE_PROTOCOL_ERROR);
        free(frame);
        free(body);

        tether_msg_free(push);
        chan_close(&c);
        device_done(&d);
        device_done(&wrong);
}

/* ---- restart ---- */

static void test_restart_keeps_records(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device a, b, clone;
        struct chan c;
        struct tether_msg *push, *m = NULL;
        char guid[37];
        json_object *st, *holder, *row;

        assert_int_equal(device_new(&a, NULL, NULL), 0);
        assert_int_equal(device_new(&b, NULL, NULL), 0);
        signin_ok(&c, p, &b, TETHER_SIGNIN_APPROVED);
        chan_close(&c);
        signin_ok(&c, p, &a, TETHER_SIGNIN_APPROVED);
        uint64_t id = cli_push(p, "1", (const char *const[]){a.client_id, b.client_id, NULL}, guid);
        push = expect_push(&c, p, guid);
        ack_and_answer(&c, p, &a, push, TETHER_RC_SUCCESS, "kept across restarts");

        /* SIGTERM: GOODBYE(shutdown) with a RetryAfterSeconds, then exit 0 */
        pid_t pid = p->pid;
        kill(pid, SIGTERM);
        assert_int_equal(chan_recv_msg(&c, p, 10000, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_SHUTDOWN);
        assert_true(m->goodbye.retry_after_seconds >= 5);
        tether_msg_free(m);
        chan_close(&c);
        int status = mp_proc_stop(p, SIGTERM);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        assert_int_equal(mp_proc_restart(p, NULL), 0);
        st = cli_push_status(p, id, NULL);
        assert_non_null(st);
        assert_string_equal(field(push_target(st, a.client_id), "state"), "answered");
        assert_string_equal(field(push_target(st, a.client_id), "detail"), "kept across restarts");
        assert_string_equal(field(push_target(st, b.client_id), "state"), "pending");
        json_object_put(st);

        /* SIGKILL: what was acknowledged is still there */
        signin_ok(&c, p, &b, TETHER_SIGNIN_APPROVED);
        tether_msg_free(push);
        push = expect_push(&c, p, guid); /* the kept push, after a restart */
        ack_and_answer(&c, p, &b, push, TETHER_RC_SUCCESS, "answered before SIGKILL");
        mp_proc_stop(p, SIGKILL);
        chan_close(&c);
        assert_int_equal(mp_proc_restart(p, NULL), 0);
        st = cli_push_status(p, id, NULL);
        assert_string_equal(field(push_target(st, b.client_id), "state"), "answered");
        assert_string_equal(field(st, "done"), "true");
        json_object_put(st);

        /* the binding survives: the clone is still a conflict, the device is known */
        assert_int_equal(device_new(&clone, a.client_id, NULL), 0);
        assert_int_equal(chan_open(&c, p, &clone), 0);
        assert_int_equal(chan_signin(&c, p, &clone, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        tether_msg_free(m);
        chan_close(&c);
        row = device_row(p, a.client_id, &holder);
        assert_string_equal(field(row, "status"), "approved");
        json_object_put(holder);

        /* PushIDs continue */
        uint64_t id2 = cli_push(p, "1", (const char *const[]){a.client_id, NULL}, NULL);
        assert_true(id2 > id);

        tether_msg_free(push);
        device_done(&a);
        device_done(&b);
        device_done(&clone);
}

/* ---- throttling ---- */

static int setup_throttled(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(
                mp_proc_start(&f->p, (const char *const[]){"--push-rate", "2", "--push-batch", "1", NULL}),
                0);
        return 0;
}

static double mono(void);

static void test_throttled_fanout(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d[3];
        struct chan c[3];
        double t[3] = {0, 0, 0};
        char guid[37], line[512], path[256];
        bool seen = false;

        for (int i = 0; i < 3; i++) {
                assert_int_equal(device_new(&d[i], NULL, NULL), 0);
                signin_ok(&c[i], p, &d[i], TETHER_SIGNIN_APPROVED);
        }
        double t0 = mono();
        uint64_t id = cli_push(p, "1", (const char *const[]){"--all", NULL}, guid);
        /* the fan-out order is not the sign-in order: wait on all three */
        for (int got = 0; got < 3;) {
                for (int i = 0; i < 3; i++) {
                        struct tether_msg *m = NULL;
                        if (t[i] > 0 || chan_recv_msg(&c[i], p, 10, &m) < 0)
                                continue;
                        assert_int_equal(m->type, TETHER_FRAME_PUSH);
                        assert_string_equal(m->push.task_guid, guid);
                        t[i] = mono() - t0;
                        tether_msg_free(m);
                        got++;
                }
                assert_true(mono() - t0 < 10);
        }
        double first = t[0], last = t[0];
        for (int i = 1; i < 3; i++) {
                first = t[i] < first ? t[i] : first;
                last = t[i] > last ? t[i] : last;
        }
        /* one token at once, then one every 0.5 s: the third at 1 s (the
         * margin absorbs a late first measurement on a loaded machine) */
        assert_true(last - first >= 0.6);

        /* the seed-style line */
        snprintf(path, sizeof(path), "%s/server.log", p->dir);
        FILE *log = fopen(path, "re");
        assert_non_null(log);
        char expect[256];
        snprintf(expect, sizeof(expect),
                 "Starting to send push task (PushID: %llu TaskID: %llu TaskGUID: %s TaskType: 1 TaskParam: "
                 ") to 3 "
                 "clients with throttling (strategy: 1 param: 2)",
                 (unsigned long long)id, (unsigned long long)id, guid);
        while (fgets(line, sizeof(line), log))
                if (strstr(line, expect))
                        seen = true;
        fclose(log);
        assert_true(seen);
        for (int i = 0; i < 3; i++) {
                chan_close(&c[i]);
                device_done(&d[i]);
        }
}

/* ---- liveness ---- */

static int setup_short_keepalive(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(mp_proc_start(&f->p, (const char *const[]){"--keepalive", "1", NULL}), 0);
        return 0;
}

static void test_two_missed_keepalives(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d;
        struct chan c;
        struct tether_frame *fr = NULL;
        json_object *holder, *row;
        struct timespec t0, t1;

        assert_int_equal(device_new(&d, NULL, NULL), 0);
        signin_ok(&c, p, &d, TETHER_SIGNIN_APPROVED);
        /* silent: closed after two keepalive intervals (1 s each) plus 2 s of grace */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(chan_recv(&c, 15000, &fr), -ECONNRESET);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        assert_true(waited >= 3.0 && waited < 10.0);
        row = device_row(p, d.client_id, &holder);
        assert_string_equal(field(row, "online"), "false");
        assert_true(strlen(field(row, "last_seen")) == 20);
        json_object_put(holder);
        chan_close(&c);
        device_done(&d);
}

/* ---- duplicate identity: two devices, one ClientID and one key ---- */

static json_object *conflict_row(struct mp_server_proc *p, const char *id, const char *kind,
                                 json_object **holder) {
        json_object *arr;

        *holder = mp_cli_json(p, (const char *const[]){"conflicts", NULL});
        assert_non_null(*holder);
        assert_true(json_object_object_get_ex(*holder, "conflicts", &arr));
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *row = json_object_array_get_idx(arr, i);
                if (strcmp(field(row, "client_id"), id) == 0 && strcmp(field(row, "kind"), kind) == 0)
                        return row;
        }
        return NULL;
}

static void expect_closed(struct chan *c) {
        struct tether_frame *fr = NULL;

        assert_int_equal(chan_recv(c, 10000, &fr), -ECONNRESET);
}

/* The local address of a channel, as the MP logs its peer ("ADDR:PORT"). */
static void chan_local_peer(struct chan *c, char *buf, size_t n) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char host[64];

        assert_int_equal(getsockname(c->fd, (struct sockaddr *)&ss, &sl), 0);
        assert_int_equal(
                getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST), 0);
        snprintf(buf, n, "%s:%u", host, (unsigned)ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

static void test_duplicate_identity(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device a;
        struct chan c1, c2, c3, c4;
        struct tether_msg *m = NULL, *push;
        json_object *holder, *row;
        char guid[37], peer1[80], peer3[80];

        assert_int_equal(device_new(&a, NULL, NULL), 0);
        signin_ok(&c1, p, &a, TETHER_SIGNIN_APPROVED);

        /* should-fail: one fast restart (the old channel still live) is a
         * reconnection, not a conflict: the new channel wins */
        signin_ok(&c2, p, &a, TETHER_SIGNIN_APPROVED);
        expect_closed(&c1);
        chan_close(&c1);
        row = conflict_row(p, a.client_id, "duplicate-identity", &holder);
        assert_null(row);
        json_object_put(holder);
        row = device_row(p, a.client_id, &holder);
        assert_string_equal(field(row, "duplicate_identity"), "false");
        json_object_put(holder);

        /* a second device with the same identity takes it back: tolerated once more */
        signin_ok(&c1, p, &a, TETHER_SIGNIN_APPROVED);
        expect_closed(&c2);
        chan_close(&c2);
        chan_local_peer(&c1, peer1, sizeof(peer1));

        /* the third live replacement in the window: the newcomer is refused
         * with GOODBYE(conflict) and a long RetryAfterSeconds */
        assert_int_equal(chan_open(&c3, p, &a), 0);
        chan_local_peer(&c3, peer3, sizeof(peer3));
        assert_int_equal(chan_signin(&c3, p, &a, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        assert_int_equal(m->goodbye.retry_after_seconds, 900);
        tether_msg_free(m);
        expect_closed(&c3);
        chan_close(&c3);

        /* recorded, with both places */
        row = conflict_row(p, a.client_id, "duplicate-identity", &holder);
        assert_non_null(row);
        assert_string_equal(field(row, "count"), "1");
        assert_string_equal(field(row, "address"), peer3);
        assert_string_equal(field(row, "established_address"), peer1);
        assert_string_equal(field(row, "known_fingerprint"), field(row, "offered_fingerprint"));
        json_object_put(holder);
        row = device_row(p, a.client_id, &holder);
        assert_string_equal(field(row, "conflict"), "duplicate-identity");
        assert_string_equal(field(row, "duplicate_identity"), "true");
        assert_string_equal(field(row, "online"), "true");
        json_object_put(holder);
        char *out = NULL;
        assert_int_equal(mp_cli(p, &out, (const char *const[]){"conflicts", NULL}), 0);
        assert_non_null(strstr(out, "duplicate-identity"));
        assert_non_null(strstr(out, peer1));
        free(out);
        out = NULL;
        assert_int_equal(mp_cli(p, &out, (const char *const[]){"devices", NULL}), 0);
        assert_non_null(strstr(out, "duplicate-identity"));
        free(out);

        /* the established channel keeps working: a push reaches it and is answered */
        uint64_t id = cli_push(p, "1", (const char *const[]){a.client_id, NULL}, guid);
        push = expect_push(&c1, p, guid);
        assert_int_equal(push->push.push_id, id);
        ack_and_answer(&c1, p, &a, push, TETHER_RC_SUCCESS, "from the established device");
        tether_msg_free(push);

        /* while flagged, the next newcomer is refused at once; counted */
        assert_int_equal(chan_open(&c4, p, &a), 0);
        assert_int_equal(chan_signin(&c4, p, &a, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        tether_msg_free(m);
        chan_close(&c4);
        row = conflict_row(p, a.client_id, "duplicate-identity", &holder);
        assert_string_equal(field(row, "count"), "2");
        json_object_put(holder);

        /* the established device leaves: whoever comes next is let in */
        struct tether_msg bye = {.type = TETHER_FRAME_GOODBYE};
        bye.goodbye.reason = TETHER_GOODBYE_SHUTDOWN;
        assert_int_equal(chan_send(&c1, &bye, NULL), 0);
        expect_closed(&c1);
        chan_close(&c1);
        for (int i = 0; i < 100; i++) {
                row = device_row(p, a.client_id, &holder);
                bool online = strcmp(field(row, "online"), "true") == 0;
                json_object_put(holder);
                if (!online)
                        break;
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        signin_ok(&c4, p, &a, TETHER_SIGNIN_APPROVED);
        chan_close(&c4);
        device_done(&a);
}

/* Should-fail: replacing a channel that has been silent for a keepalive
 * interval (a half-open connection of a restarted device) is never
 * counted, however often. Keepalive 1 s: silent 1.3 s is dead enough,
 * while the MP still holds it (it closes after 2 x 1 s + 2 s). */
static void test_dead_replacements_not_conflicts(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device a;
        struct chan old, cur;
        json_object *holder, *row;

        assert_int_equal(device_new(&a, NULL, NULL), 0);
        signin_ok(&old, p, &a, TETHER_SIGNIN_APPROVED);
        for (int i = 0; i < 4; i++) {
                struct timespec ts = {1, 300 * 1000 * 1000};
                nanosleep(&ts, NULL);
                signin_ok(&cur, p, &a, TETHER_SIGNIN_APPROVED);
                expect_closed(&old);
                chan_close(&old);
                old = cur;
        }
        chan_close(&old);
        row = conflict_row(p, a.client_id, "duplicate-identity", &holder);
        assert_null(row);
        json_object_put(holder);
        device_done(&a);
}

/* ---- HTTPS ---- */

struct http_result {
        long status;
        char *body;
        size_t len;
        char etag[128];
        char sig[512];
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
        struct http_result *r = ud;
        size_t n = size * nmemb;
        char *t = realloc(r->body, r->len + n + 1);

        if (!t)
                return 0;
        memcpy(t + r->len, ptr, n);
        r->body = t;
        r->len += n;
        t[r->len] = 0;
        return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
        struct http_result *r = ud;
        size_t n = size * nmemb;
        char line[600];

        snprintf(line, sizeof(line), "%.*s", (int)n, ptr);
        line[strcspn(line, "\r\n")] = 0;
        if (strncasecmp(line, "ETag: ", 6) == 0)
                strscpy(r->etag, sizeof(r->etag), line + 6);
        if (strncasecmp(line, "Tether-Signature: ", 18) == 0)
                strscpy(r->sig, sizeof(r->sig), line + 18);
        return n;
}

static CURLcode https_try(struct mp_server_proc *p, const struct device *d, const char *path,
                          const void *body, size_t len, const char *if_none_match, struct http_result *res) {
        char url[256], cafile[256], inm[200];
        struct curl_slist *h = NULL;
        CURL *curl = curl_easy_init();

        memset(res, 0, sizeof(*res));
        assert_non_null(curl);
        snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", p->https_port, path);
        snprintf(cafile, sizeof(cafile), "%s/tls.crt", p->state);
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_CAINFO, cafile); /* self-signed, with 127.0.0.1 in its SANs */
        curl_easy_setopt(curl, CURLOPT_SSLCERT, d->cert_path);
        curl_easy_setopt(curl, CURLOPT_SSLKEY, d->key_path);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, res);
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, res);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        if (body) {
                h = curl_slist_append(h, "Content-Type: application/x-tether-frames");
                /* as libcurl does for larger bodies: the server must answer 100 */
                h = curl_slist_append(h, "Expect: 100-continue");
                curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)len);
        }
        if (if_none_match) {
                snprintf(inm, sizeof(inm), "If-None-Match: %s", if_none_match);
                h = curl_slist_append(h, inm);
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
        CURLcode rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
        curl_slist_free_all(h);
        curl_easy_cleanup(curl);
        return rc;
}

static void https(struct mp_server_proc *p, const struct device *d, const char *path, const void *body,
                  size_t len, const char *if_none_match, struct http_result *res) {
        CURLcode rc = https_try(p, d, path, body, len, if_none_match, res);

        if (rc != CURLE_OK)
                fail_msg("HTTPS %s: %s", path, curl_easy_strerror(rc));
}

/* Appends a sealed frame to a poll body. */
static void add_frame(uint8_t **buf, size_t *len, const struct tether_msg *msg,
                      const struct tether_key *signer) {
        uint8_t *frame = NULL;
        size_t flen = 0;

        assert_int_equal(tether_msg_seal(msg, signer, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &flen), 0);
        *buf = realloc(*buf, *len + flen);
        assert_non_null(*buf);
        memcpy(*buf + *len, frame, flen);
        *len += flen;
        free(frame);
}

static void add_signin(uint8_t **buf, size_t *len, const struct device *d) {
        struct tether_msg msg = {.type = TETHER_FRAME_SIGNIN};
        char *b64 = NULL;

        assert_int_equal(tether_key_spki_base64(d->key, &b64), 0);
        msg.signin.timestamp = time(NULL);
        strscpy(msg.signin.client_id, sizeof(msg.signin.client_id), d->client_id);
        msg.signin.version = (char *)"0.1.0-test";
        msg.signin.hostname = (char *)"https-host";
        msg.signin.public_key = b64;
        msg.signin.n_task_types = 1;
        msg.signin.task_types[0] = 1;
        add_frame(buf, len, &msg, d->key);
        free(b64);
}

/* Splits an answer into opened messages. */
static size_t parse_answer(struct mp_server_proc *p, const struct http_result *res, struct tether_msg **out,
                           size_t max) {
        struct tether_frame_decoder *dec = NULL;
        const uint8_t *data = (const uint8_t *)res->body;
        size_t left = res->len, n = 0;

        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
        while (left > 0 && n < max) {
                struct tether_frame *fr = NULL;
                struct tether_diag diag = {0};
                size_t used = 0;
                int r = tether_frame_decoder_feed(dec, data, left, &used, &fr, &diag);

                assert_true(r >= 0);
                data += used;
                left -= used;
                if (r == 1) {
                        assert_int_equal(
                                tether_msg_open(fr, tether_frame_type_signed(fr->type) ? p->site_key : NULL,
                                                &out[n], &diag),
                                0);
                        n++;
                        tether_frame_free(fr);
                }
        }
        assert_false(tether_frame_decoder_partial(dec));
        tether_frame_decoder_free(dec);
        return n;
}

struct held_poll {
        struct mp_server_proc *p;
        const struct device *d;
        uint8_t *body;
        size_t len;
        struct http_result res;
        double seconds;
};

static double mono(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *held_poll_thread(void *arg) {
        struct held_poll *h = arg;
        double t0 = mono();

        https(h->p, h->d, "/tether/v1/channel?hold=20", h->body, h->len, NULL, &h->res);
        h->seconds = mono() - t0;
        return NULL;
}

static void test_https_fallback(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d;
        struct http_result res;
        struct tether_msg *msgs[8];
        uint8_t *body = NULL;
        size_t len = 0, n;
        char guid[37];

        assert_int_equal(device_new(&d, NULL, p->dir), 0);

        /* nothing queued and hold=0: SIGNIN_CONFIRM only, at once */
        add_signin(&body, &len, &d);
        https(p, &d, "/tether/v1/channel?hold=0", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        n = parse_answer(p, &res, msgs, 8);
        assert_int_equal(n, 1);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(msgs[0]->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        tether_msg_free(msgs[0]);
        free(res.body);

        /* held with hold=1: answered after about a second */
        double t0 = mono();
        https(p, &d, "/tether/v1/channel?hold=1", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_true(mono() - t0 >= 0.5);
        assert_int_equal(parse_answer(p, &res, msgs, 8), 1);
        tether_msg_free(msgs[0]);
        free(res.body);

        /* a held poll is answered as soon as a push arrives */
        struct held_poll hp = {.p = p, .d = &d, .body = body, .len = len};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, held_poll_thread, &hp), 0);
        /* wait until the server holds it: the device shows online over https */
        for (int i = 0; i < 100; i++) {
                json_object *holder, *row = device_row(p, d.client_id, &holder);
                bool held = row && strcmp(field(row, "held"), "true") == 0;
                json_object_put(holder);
                if (held)
                        break;
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        uint64_t id = cli_push(p, "1", (const char *const[]){d.client_id, NULL}, guid);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(hp.res.status, 200);
        assert_true(hp.seconds < 15);
        n = parse_answer(p, &hp.res, msgs, 8);
        assert_int_equal(n, 2);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(msgs[1]->type, TETHER_FRAME_PUSH);
        assert_string_equal(msgs[1]->push.task_guid, guid);
        struct tether_msg *push = msgs[1];
        tether_msg_free(msgs[0]);
        free(hp.res.body);

        /* the next poll carries PUSH_ACK and RESPONSE; its answer the RESPONSE_ACK */
        struct tether_msg ack = {.type = TETHER_FRAME_PUSH_ACK}, resp;
        strscpy(ack.ack.task_guid, sizeof(ack.ack.task_guid), guid);
        add_frame(&body, &len, &ack, NULL);
        make_response(&d, &push->push, TETHER_RC_SUCCESS, "over https", &resp);
        add_frame(&body, &len, &resp, d.key);
        t0 = mono();
        https(p, &d, "/tether/v1/channel", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        /* no 1 s wait for a "100 Continue" that never comes */
        assert_true(mono() - t0 < 0.9);
        n = parse_answer(p, &res, msgs, 8);
        assert_int_equal(n, 2);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(msgs[1]->type, TETHER_FRAME_RESPONSE_ACK);
        assert_string_equal(msgs[1]->ack.task_guid, guid);
        for (size_t i = 0; i < n; i++)
                tether_msg_free(msgs[i]);
        free(res.body);
        json_object *st = cli_push_status(p, id, NULL);
        assert_string_equal(field(push_target(st, d.client_id), "state"), "answered");
        json_object_put(st);

        /* should-fail: a poll that does not start with SIGNIN: still 200 (the
         * contract), with one GOODBYE(protocol-error) */
        https(p, &d, "/tether/v1/channel?hold=0", "", 0, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(parse_answer(p, &res, msgs, 8), 1);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(msgs[0]->goodbye.reason, TETHER_GOODBYE_PROTOCOL_ERROR);
        tether_msg_free(msgs[0]);
        free(res.body);
        /* should-fail: a cloned device over HTTPS: GOODBYE(conflict) */
        struct device clone;
        uint8_t *cbody = NULL;
        size_t clen = 0;
        assert_int_equal(device_new(&clone, d.client_id, p->dir), 0);
        add_signin(&cbody, &clen, &clone);
        https(p, &clone, "/tether/v1/channel?hold=0", cbody, clen, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(parse_answer(p, &res, msgs, 8), 1);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(msgs[0]->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        tether_msg_free(msgs[0]);
        free(res.body);
        free(cbody);
        device_done(&clone);
        /* should-fail: GET on the channel */
        https(p, &d, "/tether/v1/channel", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 405);
        free(res.body);

        tether_msg_free(push);
        free(body);
        device_done(&d);
}

struct long_poll {
        pthread_t thread;
        struct mp_server_proc *p;
        const struct device *d;
        const uint8_t *body;
        size_t len;
        struct http_result res;
        CURLcode rc;
};

static void *long_poll_thread(void *arg) {
        struct long_poll *lp = arg;

        lp->rc = https_try(lp->p, lp->d, "/tether/v1/channel?hold=30", lp->body, lp->len, NULL, &lp->res);
        return NULL;
}

/* Starts a long poll and waits until the MP holds a poll of the device. */
static void long_poll_start(struct long_poll *lp, struct mp_server_proc *p, const struct device *d,
                            const uint8_t *body, size_t len) {
        *lp = (struct long_poll){.p = p, .d = d, .body = body, .len = len};
        assert_int_equal(pthread_create(&lp->thread, NULL, long_poll_thread, lp), 0);
}

static void wait_held(struct mp_server_proc *p, const char *id) {
        for (int i = 0; i < 200; i++) {
                json_object *holder, *row = device_row(p, id, &holder);
                bool held = row && strcmp(field(row, "held"), "true") == 0;
                json_object_put(holder);
                if (held)
                        return;
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        fail_msg("no held poll for %s", id);
}

/* Over HTTPS: two devices long-polling as one identity take each other's
 * held poll; the third such replacement is refused with GOODBYE(conflict)
 * in a 200 answer. A quick (hold=0) poll beside a held one, as the agent
 * sends its PUSH_ACK and RESPONSE, neither replaces nor counts. */
static void test_https_duplicate_identity(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d;
        struct long_poll a, b, a2;
        struct http_result res;
        struct tether_msg *msgs[8];
        uint8_t *body = NULL;
        size_t len = 0, n;
        json_object *holder, *row;
        char guid[37];

        assert_int_equal(device_new(&d, NULL, p->dir), 0);
        add_signin(&body, &len, &d);
        https(p, &d, "/tether/v1/channel?hold=0", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        free(res.body);

        long_poll_start(&a, p, &d, body, len);
        wait_held(p, d.client_id);
        /* a quick poll beside it: answered, the held poll stays */
        https(p, &d, "/tether/v1/channel?hold=0", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(parse_answer(p, &res, msgs, 8), 1);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_SIGNIN_CONFIRM);
        tether_msg_free(msgs[0]);
        free(res.body);
        row = device_row(p, d.client_id, &holder);
        assert_string_equal(field(row, "held"), "true");
        json_object_put(holder);

        /* device B takes the held poll (1), A takes it back (2) */
        long_poll_start(&b, p, &d, body, len);
        assert_int_equal(pthread_join(a.thread, NULL), 0);
        assert_int_not_equal(a.rc, CURLE_OK); /* its poll was closed unanswered */
        free(a.res.body);
        wait_held(p, d.client_id);
        long_poll_start(&a2, p, &d, body, len);
        assert_int_equal(pthread_join(b.thread, NULL), 0);
        assert_int_not_equal(b.rc, CURLE_OK);
        free(b.res.body);
        wait_held(p, d.client_id);

        /* B again (3): refused at once, 200 with GOODBYE(conflict) */
        https(p, &d, "/tether/v1/channel?hold=30", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(parse_answer(p, &res, msgs, 8), 1);
        assert_int_equal(msgs[0]->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(msgs[0]->goodbye.reason, TETHER_GOODBYE_CONFLICT);
        assert_int_equal(msgs[0]->goodbye.retry_after_seconds, 900);
        tether_msg_free(msgs[0]);
        free(res.body);
        row = conflict_row(p, d.client_id, "duplicate-identity", &holder);
        assert_non_null(row);
        json_object_put(holder);

        /* A's held poll still works: a push answers it */
        cli_push(p, "1", (const char *const[]){d.client_id, NULL}, guid);
        assert_int_equal(pthread_join(a2.thread, NULL), 0);
        assert_int_equal(a2.rc, CURLE_OK);
        n = parse_answer(p, &a2.res, msgs, 8);
        assert_int_equal(n, 2);
        assert_int_equal(msgs[1]->type, TETHER_FRAME_PUSH);
        assert_string_equal(msgs[1]->push.task_guid, guid);
        for (size_t i = 0; i < n; i++)
                tether_msg_free(msgs[i]);
        free(a2.res.body);
        free(body);
        device_done(&d);
}

static void test_https_pending_then_approved(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d;
        struct http_result res;
        struct tether_msg *msgs[4];
        uint8_t *body = NULL;
        size_t len = 0;

        assert_int_equal(device_new(&d, NULL, p->dir), 0);
        add_signin(&body, &len, &d);
        /* pending, not held: told at once */
        https(p, &d, "/tether/v1/channel?hold=0", body, len, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(parse_answer(p, &res, msgs, 4), 1);
        assert_int_equal(msgs[0]->signin_confirm.status, TETHER_SIGNIN_PENDING);
        tether_msg_free(msgs[0]);
        free(res.body);

        /* a held pending poll is answered Approved as soon as the administrator decides */
        struct held_poll hp = {.p = p, .d = &d, .body = body, .len = len};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, held_poll_thread, &hp), 0);
        for (int i = 0; i < 100; i++) {
                json_object *holder, *row = device_row(p, d.client_id, &holder);
                bool held = row && strcmp(field(row, "held"), "true") == 0;
                json_object_put(holder);
                if (held)
                        break;
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        assert_int_equal(mp_cli(p, NULL, (const char *const[]){"approve", d.client_id, NULL}), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(hp.res.status, 200);
        assert_true(hp.seconds < 15);
        assert_int_equal(parse_answer(p, &hp.res, msgs, 4), 1);
        assert_int_equal(msgs[0]->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        tether_msg_free(msgs[0]);
        free(hp.res.body);
        free(body);
        device_done(&d);
}

static void write_policy(const char *dir, const char *rel, const char *text) {
        char path[512], cmd[600];

        snprintf(path, sizeof(path), "%s/%s", dir, rel);
        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
        assert_int_equal(system(cmd), 0);
        FILE *fp = fopen(path, "we");
        assert_non_null(fp);
        fputs(text, fp);
        assert_int_equal(fclose(fp), 0);
}

static void test_policy_fetch(void **state) {
        struct fixture *f = *state;
        struct mp_server_proc *p = &f->p;
        struct device d, stranger;
        struct http_result res;
        struct chan c;
        char pdir[256], etag[128], expect[80];
        const char *machine = "<Policy Version=\"1\" Scope=\"machine\"/>\n";

        snprintf(pdir, sizeof(pdir), "%s/policies", p->state);
        write_policy(pdir, "machine.xml", machine);
        write_policy(pdir, "users/alice.xml", "<Policy Version=\"1\" Scope=\"user\" User=\"alice\"/>\n");
        assert_int_equal(device_new(&d, NULL, p->dir), 0);
        assert_int_equal(device_new(&stranger, NULL, p->dir), 0);

        /* should-fail: a device that never signed in */
        https(p, &stranger, "/tether/v1/policy/machine", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 403);
        free(res.body);

        signin_ok(&c, p, &d, TETHER_SIGNIN_APPROVED);
        chan_close(&c);

        https(p, &d, "/tether/v1/policy/machine", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(res.len, strlen(machine));
        assert_memory_equal(res.body, machine, res.len);
        /* ETag: quoted sha256 hex */
        uint8_t digest[32];
        char hex[65];
        assert_int_equal(EVP_Digest(machine, strlen(machine), digest, NULL, EVP_sha256(), NULL), 1);
        hex_encode(digest, 32, hex);
        snprintf(expect, sizeof(expect), "\"%s\"", hex);
        assert_string_equal(res.etag, expect);
        /* Tether-Signature over TETHER1 || 0x50 || body, by the site key */
        uint8_t *sig = NULL;
        size_t sig_len = 0;
        assert_int_equal(tether_base64_decode(res.sig, &sig, &sig_len), 0);
        assert_int_equal(tether_verify(p->site_key, TETHER_SIG_TYPE_POLICY, (const uint8_t *)res.body,
                                       res.len, sig, sig_len),
                         0);
        /* should-fail: not valid for another type byte */
        assert_int_equal(tether_verify(p->site_key, TETHER_FRAME_PUSH, (const uint8_t *)res.body, res.len,
                                       sig, sig_len),
                         -EBADMSG);
        free(sig);
        strscpy(etag, sizeof(etag), res.etag);
        free(res.body);

        /* unchanged: 304 */
        https(p, &d, "/tether/v1/policy/machine", NULL, 0, etag, &res);
        assert_int_equal(res.status, 304);
        assert_int_equal(res.len, 0);
        free(res.body);
        /* changed: 200 with a new ETag */
        write_policy(pdir, "machine.xml", "<Policy Version=\"1\" Scope=\"machine\" Changed=\"1\"/>\n");
        https(p, &d, "/tether/v1/policy/machine", NULL, 0, etag, &res);
        assert_int_equal(res.status, 200);
        assert_string_not_equal(res.etag, etag);
        free(res.body);

        /* a per-device override wins */
        char rel[128];
        snprintf(rel, sizeof(rel), "devices/%s/machine.xml", d.client_id);
        write_policy(pdir, rel, "<Policy Version=\"1\" Scope=\"machine\" Device=\"yes\"/>\n");
        https(p, &d, "/tether/v1/policy/machine", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_non_null(strstr(res.body, "Device=\"yes\""));
        free(res.body);

        https(p, &d, "/tether/v1/policy/user/alice", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 200);
        assert_non_null(strstr(res.body, "alice"));
        free(res.body);
        /* should-fail: no such user, and path tricks */
        https(p, &d, "/tether/v1/policy/user/bob", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 404);
        free(res.body);
        https(p, &d, "/tether/v1/policy/user/..%2Fmachine", NULL, 0, NULL, &res);
        assert_int_equal(res.status, 404);
        free(res.body);

        device_done(&d);
        device_done(&stranger);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_signin, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_conflict, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_manual_approval, setup_manual, teardown),
                cmocka_unit_test_setup_teardown(test_token_approval, setup_token, teardown),
                cmocka_unit_test_setup_teardown(test_push_online_and_later, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_bad_signature_and_duplicate, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_restart_keeps_records, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_throttled_fanout, setup_throttled, teardown),
                cmocka_unit_test_setup_teardown(test_two_missed_keepalives, setup_short_keepalive, teardown),
                cmocka_unit_test_setup_teardown(test_duplicate_identity, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_dead_replacements_not_conflicts, setup_short_keepalive,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_https_fallback, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_https_duplicate_identity, setup_default, teardown),
                cmocka_unit_test_setup_teardown(test_https_pending_then_approved, setup_manual, teardown),
                cmocka_unit_test_setup_teardown(test_policy_fetch, setup_default, teardown),
        };

        curl_global_init(CURL_GLOBAL_DEFAULT);
        signal(SIGPIPE, SIG_IGN);
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        curl_global_cleanup();
        return r;
}
