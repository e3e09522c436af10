/* SPDX-License-Identifier: Apache-2.0 */
/* The message codec: builders, strict parsers, seal and verify-then-parse. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/frame.h"
#include "transport/message.h"
#include "transport/sign.h"

#define T0 ((time_t)1579621423) /* 2020-01-21T15:43:43Z */
#define GUID_A "A43DD1B3-A006-4604-B012-5529380B3B6F"
#define GUID_B "0F5D6C3E-9B1A-4C2D-8E7F-112233445566"
#define ALL_TYPES 8

static char *xstrdup(const char *s) {
        char *d = strdup(s);

        assert_non_null(d);
        return d;
}

/* A sample message of each type, every field set. */
static struct tether_msg *sample(uint8_t type) {
        struct tether_msg *m = NULL;

        assert_int_equal(tether_msg_new(type, &m), 0);
        switch (type) {
        case TETHER_FRAME_SIGNIN:
                m->signin.timestamp = T0;
                memcpy(m->signin.client_id, GUID_B, TETHER_GUID_LEN);
                m->signin.version = xstrdup("0.1.0");
                m->signin.hostname = xstrdup("host-1.example.test");
                m->signin.public_key = xstrdup("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE");
                m->signin.n_task_types = 3;
                m->signin.task_types[0] = 1;
                m->signin.task_types[1] = 2;
                m->signin.task_types[2] = 3;
                m->signin.enrolment_token = xstrdup("tok-123");
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                m->signin_confirm.timestamp = T0 + 1;
                m->signin_confirm.message_version = 1;
                m->signin_confirm.status = TETHER_SIGNIN_PENDING;
                m->signin_confirm.keepalive_seconds = 180;
                m->signin_confirm.site_public_key = xstrdup("MCowBQYDK2VwAyEA");
                break;
        case TETHER_FRAME_PUSH:
                m->push.timestamp = T0;
                m->push.push_id = 7;
                m->push.task_id = 8;
                memcpy(m->push.task_guid, GUID_A, TETHER_GUID_LEN);
                m->push.task_type = 2;
                m->push.task_param = xstrdup("alice & <bob>");
                m->push.expires = T0 + 3600;
                memcpy(m->push.client_id, GUID_B, TETHER_GUID_LEN);
                break;
        case TETHER_FRAME_PUSH_ACK:
        case TETHER_FRAME_RESPONSE_ACK:
                memcpy(m->ack.task_guid, GUID_A, TETHER_GUID_LEN);
                break;
        case TETHER_FRAME_RESPONSE:
                m->response.timestamp = T0;
                m->response.push_id = 8;
                m->response.task_id = 9;
                m->response.return_code = TETHER_RC_FAILED;
                memcpy(m->response.task_guid, GUID_A, TETHER_GUID_LEN);
                memcpy(m->response.client_id, GUID_B, TETHER_GUID_LEN);
                m->response.detail = xstrdup("step \"install\" failed: <exit 1> & more\r\n\ttab");
                break;
        case TETHER_FRAME_KEEPALIVE:
                m->keepalive.timestamp = T0 + 5;
                break;
        case TETHER_FRAME_GOODBYE:
                m->goodbye.reason = TETHER_GOODBYE_PROTOCOL_ERROR;
                m->goodbye.retry_after_seconds = 60;
                break;
        default:
                fail();
        }
        return m;
}

static void assert_str_or_null_equal(const char *a, const char *b) {
        if (!a || !b)
                assert_ptr_equal(a, b);
        else
                assert_string_equal(a, b);
}

static void assert_msg_equal(const struct tether_msg *a, const struct tether_msg *b) {
        assert_int_equal(a->type, b->type);
        switch (a->type) {
        case TETHER_FRAME_SIGNIN:
                assert_int_equal(a->signin.timestamp, b->signin.timestamp);
                assert_string_equal(a->signin.client_id, b->signin.client_id);
                assert_string_equal(a->signin.version, b->signin.version);
                assert_string_equal(a->signin.hostname, b->signin.hostname);
                assert_string_equal(a->signin.public_key, b->signin.public_key);
                assert_int_equal(a->signin.n_task_types, b->signin.n_task_types);
                for (unsigned i = 0; i < a->signin.n_task_types; i++)
                        assert_int_equal(a->signin.task_types[i], b->signin.task_types[i]);
                assert_str_or_null_equal(a->signin.enrolment_token, b->signin.enrolment_token);
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                assert_int_equal(a->signin_confirm.timestamp, b->signin_confirm.timestamp);
                assert_int_equal(a->signin_confirm.message_version, b->signin_confirm.message_version);
                assert_int_equal(a->signin_confirm.status, b->signin_confirm.status);
                assert_int_equal(a->signin_confirm.keepalive_seconds, b->signin_confirm.keepalive_seconds);
                assert_str_or_null_equal(a->signin_confirm.site_public_key,
                                         b->signin_confirm.site_public_key);
                break;
        case TETHER_FRAME_PUSH:
                assert_int_equal(a->push.timestamp, b->push.timestamp);
                assert_true(a->push.push_id == b->push.push_id);
                assert_true(a->push.task_id == b->push.task_id);
                assert_string_equal(a->push.task_guid, b->push.task_guid);
                assert_int_equal(a->push.task_type, b->push.task_type);
                assert_string_equal(a->push.task_param, b->push.task_param);
                assert_int_equal(a->push.expires, b->push.expires);
                assert_string_equal(a->push.client_id, b->push.client_id);
                break;
        case TETHER_FRAME_PUSH_ACK:
        case TETHER_FRAME_RESPONSE_ACK:
                assert_string_equal(a->ack.task_guid, b->ack.task_guid);
                break;
        case TETHER_FRAME_RESPONSE:
                assert_int_equal(a->response.timestamp, b->response.timestamp);
                assert_true(a->response.push_id == b->response.push_id);
                assert_true(a->response.task_id == b->response.task_id);
                assert_int_equal(a->response.return_code, b->response.return_code);
                assert_string_equal(a->response.task_guid, b->response.task_guid);
                assert_string_equal(a->response.client_id, b->response.client_id);
                assert_string_equal(a->response.detail, b->response.detail);
                break;
        case TETHER_FRAME_KEEPALIVE:
                assert_int_equal(a->keepalive.timestamp, b->keepalive.timestamp);
                break;
        case TETHER_FRAME_GOODBYE:
                assert_int_equal(a->goodbye.reason, b->goodbye.reason);
                assert_int_equal(a->goodbye.retry_after_seconds, b->goodbye.retry_after_seconds);
                break;
        default:
                fail();
        }
}

static char *build(const struct tether_msg *m) {
        char *body = NULL;
        size_t len = 0;

        assert_int_equal(tether_msg_build(m, &body, &len), 0);
        assert_int_equal(strlen(body), len);
        return body;
}

static struct tether_msg *parse_ok(uint8_t type, const char *body) {
        struct tether_diag diag = {};
        struct tether_msg *m = NULL;
        int r;

        r = tether_msg_parse(type, (const uint8_t *)body, strlen(body), &m, &diag);
        if (r != 0)
                fail_msg("parse of %s failed: %d %s (%s)", body, r, tether_diag_kind_name(diag.kind),
                         diag.text);
        assert_non_null(m);
        return m;
}

/* Parses body, expects a rejection of the given kind whose text mentions
 * what (when not NULL). */
static void parse_bad(uint8_t type, const char *body, enum tether_diag_kind kind, const char *what) {
        struct tether_diag diag = {};
        struct tether_msg *m = NULL;
        int r;

        r = tether_msg_parse(type, (const uint8_t *)body, strlen(body), &m, &diag);
        if (r != -EBADMSG || diag.kind != kind)
                fail_msg("%s: expected %s, got %d %s (%s)", body, tether_diag_kind_name(kind), r,
                         tether_diag_kind_name(diag.kind), diag.text);
        assert_null(m);
        if (what && !strstr(diag.text, what))
                fail_msg("diag '%s' does not name '%s'", diag.text, what);
}

/* body with the first occurrence of from replaced by to. */
static char *replace(const char *body, const char *from, const char *to) {
        const char *p = strstr(body, from);
        size_t n;
        char *out;

        if (!p)
                fail_msg("'%s' not in %s", from, body);
        n = strlen(body) - strlen(from) + strlen(to) + 1;
        out = malloc(n);
        assert_non_null(out);
        snprintf(out, n, "%.*s%s%s", (int)(p - body), body, to, p + strlen(from));
        return out;
}

/* The whole first <name>...</name> (or <name/>) element of body. */
static char *element_of(const char *body, const char *name) {
        char open[64], close[64], empty[64];
        const char *p, *e;
        char *out;

        snprintf(open, sizeof(open), "<%s>", name);
        snprintf(close, sizeof(close), "</%s>", name);
        snprintf(empty, sizeof(empty), "<%s/>", name);
        p = strstr(body, open);
        if (p) {
                e = strstr(p, close);
                assert_non_null(e);
                e += strlen(close);
        } else {
                p = strstr(body, empty);
                if (!p)
                        fail_msg("no element %s in %s", name, body);
                e = p + strlen(empty);
        }
        out = strndup(p, (size_t)(e - p));
        assert_non_null(out);
        return out;
}

static char *without_element(const char *body, const char *name) {
        char *el = element_of(body, name), *out = replace(body, el, "");

        free(el);
        return out;
}

static char *with_duplicate(const char *body, const char *name) {
        char *el = element_of(body, name), *twice, *out;
        size_t n = 2 * strlen(el) + 1;

        twice = malloc(n);
        assert_non_null(twice);
        snprintf(twice, n, "%s%s", el, el);
        out = replace(body, el, twice);
        free(el);
        free(twice);
        return out;
}

/* body with the element's text replaced by value. */
static char *with_value(const char *body, const char *name, const char *value) {
        char *el = element_of(body, name), *out;
        char repl[8192];

        snprintf(repl, sizeof(repl), "<%s>%s</%s>", name, value, name);
        out = replace(body, el, repl);
        free(el);
        return out;
}

static void test_round_trip_every_type(void **state) {
        for (uint8_t type = 1; type <= ALL_TYPES; type++) {
                struct tether_msg *m = sample(type), *back;
                char *body = build(m), *again;

                back = parse_ok(type, body);
                assert_msg_equal(m, back);
                /* Building the parsed struct gives the same bytes. */
                again = build(back);
                assert_string_equal(body, again);
                free(again);
                free(body);
                tether_msg_free(back);
                tether_msg_free(m);
        }
}

static void test_response_exact_shape(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_RESPONSE);
        char *body;

        free(m->response.detail);
        m->response.detail = xstrdup("a<b & \"c\"");
        body = build(m);
        assert_string_equal(body,
                            "<BgbResponseMessage TimeStamp=\"2020-01-21T15:43:43Z\"><PushID>8</PushID>"
                            "<TaskID>9</TaskID><ReturnCode>2</ReturnCode><TaskGUID>" GUID_A "</TaskGUID>"
                            "<ClientID>" GUID_B "</ClientID><Detail>a&lt;b &amp; \"c\"</Detail>"
                            "</BgbResponseMessage>");
        free(body);
        tether_msg_free(m);
}

static void test_other_exact_shapes(void **state) {
        struct tether_msg *m;
        char *body;

        m = sample(TETHER_FRAME_KEEPALIVE);
        body = build(m);
        assert_string_equal(body, "<BgbKeepAliveMessage TimeStamp=\"2020-01-21T15:43:48Z\"/>");
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_GOODBYE);
        body = build(m);
        assert_string_equal(body, "<BgbGoodbyeMessage Reason=\"protocol-error\" RetryAfterSeconds=\"60\"/>");
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_PUSH_ACK);
        body = build(m);
        assert_string_equal(body, "<BgbAckMessage><TaskGUID>" GUID_A "</TaskGUID></BgbAckMessage>");
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_SIGNIN);
        body = build(m);
        assert_string_equal(
                body, "<BgbSignInMessage TimeStamp=\"2020-01-21T15:43:43Z\" ClientID=\"" GUID_B
                      "\" Version=\"0.1.0\"><Hostname>host-1.example.test</Hostname>"
                      "<PublicKey>MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE</PublicKey>"
                      "<Capabilities><TaskType>1</TaskType><TaskType>2</TaskType><TaskType>3</TaskType>"
                      "</Capabilities><EnrolmentToken>tok-123</EnrolmentToken></BgbSignInMessage>");
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_SIGNIN_CONFIRM);
        body = build(m);
        assert_string_equal(body, "<BgbSignInConfirmMessage TimeStamp=\"2020-01-21T15:43:44Z\" "
                                  "MessageVersion=\"1\"><Status>Pending</Status><KeepAliveSeconds>180"
                                  "</KeepAliveSeconds><SitePublicKey>MCowBQYDK2VwAyEA</SitePublicKey>"
                                  "</BgbSignInConfirmMessage>");
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_PUSH);
        body = build(m);
        assert_string_equal(body, "<BgbRequestMessage TimeStamp=\"2020-01-21T15:43:43Z\"><PushID>7</PushID>"
                                  "<TaskID>8</TaskID><TaskGUID>" GUID_A "</TaskGUID><TaskType>2</TaskType>"
                                  "<TaskParam>alice &amp; &lt;bob&gt;</TaskParam>"
                                  "<Expires>2020-01-21T16:43:43Z</Expires><ClientID>" GUID_B "</ClientID>"
                                  "</BgbRequestMessage>");
        free(body);
        tether_msg_free(m);
}

static void test_optional_fields_absent(void **state) {
        struct tether_msg *m, *back;
        char *body;

        /* SIGNIN without capabilities or token. */
        m = sample(TETHER_FRAME_SIGNIN);
        m->signin.n_task_types = 0;
        free(m->signin.enrolment_token);
        m->signin.enrolment_token = NULL;
        body = build(m);
        assert_non_null(strstr(body, "<Capabilities/>"));
        assert_null(strstr(body, "EnrolmentToken"));
        back = parse_ok(TETHER_FRAME_SIGNIN, body);
        assert_msg_equal(m, back);
        tether_msg_free(back);
        free(body);
        tether_msg_free(m);

        /* SIGNIN_CONFIRM without SitePublicKey: NULL after parsing. */
        m = sample(TETHER_FRAME_SIGNIN_CONFIRM);
        free(m->signin_confirm.site_public_key);
        m->signin_confirm.site_public_key = NULL;
        body = build(m);
        assert_null(strstr(body, "SitePublicKey"));
        back = parse_ok(TETHER_FRAME_SIGNIN_CONFIRM, body);
        assert_null(back->signin_confirm.site_public_key);
        tether_msg_free(back);
        free(body);
        tether_msg_free(m);

        /* PUSH without ClientID. */
        m = sample(TETHER_FRAME_PUSH);
        m->push.client_id[0] = '\0';
        body = build(m);
        assert_null(strstr(body, "ClientID"));
        back = parse_ok(TETHER_FRAME_PUSH, body);
        assert_string_equal(back->push.client_id, "");
        tether_msg_free(back);
        free(body);
        tether_msg_free(m);

        /* RESPONSE in the seed's shape, without Detail: "". */
        back = parse_ok(TETHER_FRAME_RESPONSE,
                        "<BgbResponseMessage TimeStamp=\"2020-01-21T15:43:43Z\"><PushID>8</PushID><TaskID>9"
                        "</TaskID><ReturnCode>1</ReturnCode><TaskGUID>" GUID_A "</TaskGUID><ClientID>" GUID_B
                        "</ClientID></BgbResponseMessage>");
        assert_string_equal(back->response.detail, "");
        tether_msg_free(back);

        /* GOODBYE without RetryAfterSeconds: 0. */
        back = parse_ok(TETHER_FRAME_GOODBYE, "<BgbGoodbyeMessage Reason=\"shutdown\"/>");
        assert_int_equal(back->goodbye.reason, TETHER_GOODBYE_SHUTDOWN);
        assert_int_equal(back->goodbye.retry_after_seconds, 0);
        tether_msg_free(back);
}

static void test_empty_task_param(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_PUSH), *back;
        char *body = build(m), *variant;

        variant = with_value(body, "TaskParam", "");
        back = parse_ok(TETHER_FRAME_PUSH, variant);
        assert_non_null(back->push.task_param);
        assert_string_equal(back->push.task_param, "");
        tether_msg_free(back);
        free(variant);

        variant = replace(body, "<TaskParam>alice &amp; &lt;bob&gt;</TaskParam>", "<TaskParam/>");
        back = parse_ok(TETHER_FRAME_PUSH, variant);
        assert_string_equal(back->push.task_param, "");
        tether_msg_free(back);
        free(variant);

        free(m->push.task_param);
        m->push.task_param = NULL; /* built as empty */
        free(body);
        body = build(m);
        assert_non_null(strstr(body, "<TaskParam></TaskParam>"));
        free(body);
        tether_msg_free(m);
}

static void test_unknown_elements_ignored(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_RESPONSE), *back;
        char *body = build(m), *variant;

        variant = replace(body, "<PushID>",
                          "<Future a=\"1\"><PushID>99</PushID></Future><!-- c --><?pi x?>"
                          "<x:PushID xmlns:x=\"urn:x\">98</x:PushID><PushID>");
        back = parse_ok(TETHER_FRAME_RESPONSE, variant);
        assert_msg_equal(m, back);
        tether_msg_free(back);
        free(variant);

        /* Whitespace between elements and a declaration are fine too. */
        variant = replace(body, "<PushID>", "\n  <PushID>");
        free(body);
        body = variant;
        variant = replace(body, "<BgbResponseMessage",
                          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BgbResponseMessage");
        back = parse_ok(TETHER_FRAME_RESPONSE, variant);
        assert_msg_equal(m, back);
        tether_msg_free(back);
        free(variant);
        free(body);
        tether_msg_free(m);
}

struct required {
        uint8_t type;
        const char *elements[8];
};

static const struct required REQUIRED[] = {
        {TETHER_FRAME_SIGNIN, {"Hostname", "PublicKey", NULL}},
        {TETHER_FRAME_SIGNIN_CONFIRM, {"Status", "KeepAliveSeconds", NULL}},
        {TETHER_FRAME_PUSH, {"PushID", "TaskID", "TaskGUID", "TaskType", "TaskParam", "Expires", NULL}},
        {TETHER_FRAME_PUSH_ACK, {"TaskGUID", NULL}},
        {TETHER_FRAME_RESPONSE, {"PushID", "TaskID", "ReturnCode", "TaskGUID", "ClientID", NULL}},
        {TETHER_FRAME_RESPONSE_ACK, {"TaskGUID", NULL}},
};

static void test_missing_and_duplicated_elements(void **state) {
        for (size_t i = 0; i < sizeof(REQUIRED) / sizeof(REQUIRED[0]); i++) {
                struct tether_msg *m = sample(REQUIRED[i].type);
                char *body = build(m);

                for (const char *const *e = REQUIRED[i].elements; *e; e++) {
                        char *variant = without_element(body, *e);

                        parse_bad(REQUIRED[i].type, variant, TETHER_DIAG_MISSING_ELEMENT, *e);
                        free(variant);
                        variant = with_duplicate(body, *e);
                        parse_bad(REQUIRED[i].type, variant, TETHER_DIAG_DUPLICATE_ELEMENT, *e);
                        free(variant);
                }
                free(body);
                tether_msg_free(m);
        }
}

static void test_optional_elements_duplicated(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_SIGNIN);
        char *body = build(m), *variant;

        variant = with_duplicate(body, "Capabilities");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_DUPLICATE_ELEMENT, "Capabilities");
        free(variant);
        variant = with_duplicate(body, "EnrolmentToken");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_DUPLICATE_ELEMENT, "EnrolmentToken");
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_RESPONSE);
        body = build(m);
        variant = with_duplicate(body, "Detail");
        parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_DUPLICATE_ELEMENT, "Detail");
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_PUSH);
        body = build(m);
        variant = with_duplicate(body, "ClientID");
        parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_DUPLICATE_ELEMENT, "ClientID");
        free(variant);
        free(body);
        tether_msg_free(m);
}

static void test_missing_attributes(void **state) {
        struct tether_msg *m;
        char *body, *variant;

        m = sample(TETHER_FRAME_SIGNIN);
        body = build(m);
        variant = replace(body, " TimeStamp=\"2020-01-21T15:43:43Z\"", "");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_MISSING_ELEMENT, "TimeStamp");
        free(variant);
        variant = replace(body, " ClientID=\"" GUID_B "\"", "");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_MISSING_ELEMENT, "ClientID");
        free(variant);
        variant = replace(body, " Version=\"0.1.0\"", "");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_MISSING_ELEMENT, "Version");
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_SIGNIN_CONFIRM);
        body = build(m);
        variant = replace(body, " MessageVersion=\"1\"", "");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_MISSING_ELEMENT, "MessageVersion");
        free(variant);
        free(body);
        tether_msg_free(m);

        parse_bad(TETHER_FRAME_KEEPALIVE, "<BgbKeepAliveMessage/>", TETHER_DIAG_MISSING_ELEMENT,
                  "TimeStamp");
        parse_bad(TETHER_FRAME_PUSH, "<BgbRequestMessage><PushID>1</PushID></BgbRequestMessage>",
                  TETHER_DIAG_MISSING_ELEMENT, "TimeStamp");
        parse_bad(TETHER_FRAME_GOODBYE, "<BgbGoodbyeMessage RetryAfterSeconds=\"5\"/>",
                  TETHER_DIAG_MISSING_ELEMENT, "Reason");
}

static void test_bad_numbers(void **state) {
        static const char *const bad_ids[] = {
                "abc",
                "-1",
                "+1",
                " 7",
                "7 ",
                "7x",
                "",
                "0x10",
                "1e3",
                "18446744073709551616",
                "99999999999999999999999",
        };
        struct tether_msg *m = sample(TETHER_FRAME_PUSH), *back;
        char *body = build(m), *variant;

        for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
                variant = with_value(body, "PushID", bad_ids[i]);
                parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_NUMBER, "PushID");
                free(variant);
                variant = with_value(body, "TaskID", bad_ids[i]);
                parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_NUMBER, "TaskID");
                free(variant);
        }
        variant = with_value(body, "PushID", "18446744073709551615");
        back = parse_ok(TETHER_FRAME_PUSH, variant);
        assert_true(back->push.push_id == UINT64_MAX);
        tether_msg_free(back);
        free(variant);

        variant = with_value(body, "TaskType", "4294967296");
        parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_NUMBER, "TaskType");
        free(variant);
        /* An unknown but valid task type parses (answered NotSupported later). */
        variant = with_value(body, "TaskType", "4294967295");
        back = parse_ok(TETHER_FRAME_PUSH, variant);
        assert_true(back->push.task_type == UINT32_MAX);
        tether_msg_free(back);
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_RESPONSE);
        body = build(m);
        variant = with_value(body, "ReturnCode", "0");
        parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_BAD_NUMBER, "ReturnCode");
        free(variant);
        variant = with_value(body, "ReturnCode", "8");
        parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_BAD_NUMBER, "ReturnCode");
        free(variant);
        variant = with_value(body, "PushID", "18446744073709551616");
        parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_BAD_NUMBER, "PushID");
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_SIGNIN_CONFIRM);
        body = build(m);
        variant = with_value(body, "KeepAliveSeconds", "0");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_BAD_NUMBER, "KeepAliveSeconds");
        free(variant);
        variant = with_value(body, "KeepAliveSeconds", "86401");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_BAD_NUMBER, "KeepAliveSeconds");
        free(variant);
        variant = replace(body, "MessageVersion=\"1\"", "MessageVersion=\"one\"");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_BAD_NUMBER, "MessageVersion");
        free(variant);
        free(body);
        tether_msg_free(m);

        m = sample(TETHER_FRAME_SIGNIN);
        body = build(m);
        variant = replace(body, "<TaskType>2</TaskType>", "<TaskType>two</TaskType>");
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_BAD_NUMBER, "TaskType");
        free(variant);
        free(body);
        tether_msg_free(m);

        parse_bad(TETHER_FRAME_GOODBYE,
                  "<BgbGoodbyeMessage Reason=\"shutdown\" RetryAfterSeconds=\"4294967296\"/>",
                  TETHER_DIAG_BAD_NUMBER, "RetryAfterSeconds");
        parse_bad(TETHER_FRAME_GOODBYE, "<BgbGoodbyeMessage Reason=\"shutdown\" RetryAfterSeconds=\"-5\"/>",
                  TETHER_DIAG_BAD_NUMBER, "RetryAfterSeconds");
}

static void test_too_many_task_types(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_SIGNIN), *back;
        char caps[1024] = "<Capabilities>";
        char *body = build(m), *el = element_of(body, "Capabilities"), *variant;

        for (unsigned i = 0; i < TETHER_MAX_TASK_TYPES; i++)
                strncat(caps, "<TaskType>1</TaskType>", sizeof(caps) - strlen(caps) - 1);
        strncat(caps, "</Capabilities>", sizeof(caps) - strlen(caps) - 1);
        variant = replace(body, el, caps);
        back = parse_ok(TETHER_FRAME_SIGNIN, variant);
        assert_int_equal(back->signin.n_task_types, TETHER_MAX_TASK_TYPES);
        tether_msg_free(back);
        free(variant);

        caps[strlen(caps) - strlen("</Capabilities>")] = '\0';
        strncat(caps, "<TaskType>3</TaskType></Capabilities>", sizeof(caps) - strlen(caps) - 1);
        variant = replace(body, el, caps);
        parse_bad(TETHER_FRAME_SIGNIN, variant, TETHER_DIAG_TOO_LONG, "TaskType");
        free(variant);
        free(el);
        free(body);

        m->signin.n_task_types = TETHER_MAX_TASK_TYPES + 1;
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
}

static void test_bad_guids(void **state) {
        static const char *const bad[] = {
                "a43dd1b3-a006-4604-b012-5529380b3b6f", /* lowercase */
                "A43DD1B3-A006-4604-B012-5529380B3B6",  /* short */
                "A43DD1B3-A006-4604-B012-5529380B3B6F0",
                "{A43DD1B3-A006-4604-B012-5529380B3B6F}",
                "A43DD1B3A0064604B0125529380B3B6F",
                "G43DD1B3-A006-4604-B012-5529380B3B6F",
                "",
        };
        struct tether_msg *m = sample(TETHER_FRAME_RESPONSE), *p = sample(TETHER_FRAME_PUSH);
        char *body = build(m), *pbody = build(p), *variant;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                variant = with_value(body, "TaskGUID", bad[i]);
                parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_BAD_GUID, "TaskGUID");
                free(variant);
                variant = with_value(body, "ClientID", bad[i]);
                parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_BAD_GUID, "ClientID");
                free(variant);
                /* PUSH's optional ClientID: when present, even empty, a GUID. */
                variant = with_value(pbody, "ClientID", bad[i]);
                parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_GUID, "ClientID");
                free(variant);
        }
        parse_bad(TETHER_FRAME_SIGNIN,
                  "<BgbSignInMessage TimeStamp=\"2020-01-21T15:43:43Z\" ClientID=\"a43dd1b3-a006-4604-b012-"
                  "5529380b3b6f\" Version=\"1\"><Hostname>h</Hostname><PublicKey>k</PublicKey>"
                  "</BgbSignInMessage>",
                  TETHER_DIAG_BAD_GUID, "ClientID");
        parse_bad(TETHER_FRAME_PUSH_ACK, "<BgbAckMessage><TaskGUID>x</TaskGUID></BgbAckMessage>",
                  TETHER_DIAG_BAD_GUID, "TaskGUID");
        free(body);
        free(pbody);

        /* The builder refuses them too. */
        memcpy(m->response.task_guid, "a43dd1b3-a006-4604-b012-5529380b3b6f", TETHER_GUID_LEN);
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
        tether_msg_free(p);
}

static void test_bad_timestamps(void **state) {
        static const char *const bad[] = {
                "2020-13-01T00:00:00Z",      "2020-02-30T00:00:00Z",
                "2020-01-21 15:43:43Z",      "2020-01-21T15:43:43",
                "2020-01-21T15:43:43+01:00", "2020-01-21T24:00:00Z",
                "2020-1-21T15:43:43Z",       "",
                "2020-01-21T15:43:43.5Z",    "yesterday",
        };
        struct tether_msg *m = sample(TETHER_FRAME_PUSH);
        char *body = build(m), *variant;
        char attr[128];

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                variant = with_value(body, "Expires", bad[i]);
                parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_TIMESTAMP, "Expires");
                free(variant);
                snprintf(attr, sizeof(attr), "TimeStamp=\"%s\"", bad[i]);
                variant = replace(body, "TimeStamp=\"2020-01-21T15:43:43Z\"", attr);
                parse_bad(TETHER_FRAME_PUSH, variant, TETHER_DIAG_BAD_TIMESTAMP, "TimeStamp");
                free(variant);
        }
        /* Four-digit years below 1000 are valid and echo back unchanged. */
        variant = with_value(body, "Expires", "0679-01-21T15:43:43Z");
        {
                struct tether_msg *early = NULL;
                char *again = NULL;

                assert_int_equal(tether_msg_parse(TETHER_FRAME_PUSH, (const uint8_t *)variant,
                                                  strlen(variant), &early, NULL),
                                 0);
                assert_int_equal(tether_msg_build(early, &again, NULL), 0);
                assert_string_equal(again, variant);
                free(again);
                tether_msg_free(early);
        }
        free(variant);
        free(body);
        tether_msg_free(m);
        parse_bad(TETHER_FRAME_KEEPALIVE, "<BgbKeepAliveMessage TimeStamp=\"2020-01-21T15:43:43z\"/>",
                  TETHER_DIAG_BAD_TIMESTAMP, "TimeStamp");
}

static void test_bad_enums_and_detail(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_SIGNIN_CONFIRM), *back;
        char *body = build(m), *variant, *detail;

        variant = with_value(body, "Status", "approved");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_BAD_VALUE, "Status");
        free(variant);
        variant = with_value(body, "Status", "");
        parse_bad(TETHER_FRAME_SIGNIN_CONFIRM, variant, TETHER_DIAG_BAD_VALUE, "Status");
        free(variant);
        free(body);
        tether_msg_free(m);

        parse_bad(TETHER_FRAME_GOODBYE, "<BgbGoodbyeMessage Reason=\"bye\" RetryAfterSeconds=\"1\"/>",
                  TETHER_DIAG_BAD_VALUE, "Reason");
        parse_bad(TETHER_FRAME_GOODBYE, "<BgbGoodbyeMessage Reason=\"Shutdown\" RetryAfterSeconds=\"1\"/>",
                  TETHER_DIAG_BAD_VALUE, "Reason");

        /* Detail: 4096 bytes pass, 4097 do not (counted after unescaping). */
        m = sample(TETHER_FRAME_RESPONSE);
        detail = malloc(TETHER_DETAIL_MAX + 2);
        assert_non_null(detail);
        memset(detail, 'x', TETHER_DETAIL_MAX);
        detail[TETHER_DETAIL_MAX] = '\0';
        free(m->response.detail);
        m->response.detail = detail;
        body = build(m);
        back = parse_ok(TETHER_FRAME_RESPONSE, body);
        assert_int_equal(strlen(back->response.detail), TETHER_DETAIL_MAX);
        tether_msg_free(back);
        variant = replace(body, "<Detail>x", "<Detail>&amp;x");
        parse_bad(TETHER_FRAME_RESPONSE, variant, TETHER_DIAG_TOO_LONG, "Detail");
        free(variant);
        free(body);
        detail[TETHER_DETAIL_MAX] = 'x';
        detail[TETHER_DETAIL_MAX + 1] = '\0';
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);

        /* Unknown enum values and out-of-range fields are refused by the builder. */
        detail[0] = '\0';
        m->response.return_code = 9;
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
        m = sample(TETHER_FRAME_GOODBYE);
        m->goodbye.reason = 77;
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
        m = sample(TETHER_FRAME_SIGNIN_CONFIRM);
        m->signin_confirm.keepalive_seconds = 0;
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
}

static void test_builder_escaping(void **state) {
        struct tether_msg *m = sample(TETHER_FRAME_SIGNIN), *back;
        char *body;

        free(m->signin.version);
        m->signin.version = xstrdup("1.0 \"beta\" <&> 'q'\t\n\r");
        free(m->signin.hostname);
        m->signin.hostname = xstrdup("h\xc3\xa9te \xf0\x9f\x98\x80");
        body = build(m);
        back = parse_ok(TETHER_FRAME_SIGNIN, body);
        assert_msg_equal(m, back);
        tether_msg_free(back);
        free(body);

        /* What XML 1.0 cannot carry is refused, not mangled. */
        free(m->signin.hostname);
        m->signin.hostname = xstrdup("bell\x07");
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        free(m->signin.hostname);
        m->signin.hostname = xstrdup("bad\xc3\x28");
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        free(m->signin.hostname);
        m->signin.hostname = xstrdup("nonchar\xef\xbf\xbf");
        assert_int_equal(tether_msg_build(m, &body, NULL), -EINVAL);
        tether_msg_free(m);
}

static void test_hostile_bodies(void **state) {
        parse_bad(TETHER_FRAME_RESPONSE,
                  "<!DOCTYPE BgbResponseMessage><BgbResponseMessage TimeStamp=\"2020-01-21T15:43:43Z\"/>",
                  TETHER_DIAG_DOCTYPE, NULL);
        parse_bad(TETHER_FRAME_PUSH,
                  "<!DOCTYPE BgbRequestMessage [<!ENTITY p \"1\">]><BgbRequestMessage><PushID>&p;</PushID>"
                  "</BgbRequestMessage>",
                  TETHER_DIAG_DOCTYPE, NULL);
        parse_bad(TETHER_FRAME_PUSH,
                  "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
                  "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\"><!ENTITY d "
                  "\"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">]>"
                  "<BgbRequestMessage><TaskParam>&d;&d;&d;&d;&d;&d;&d;&d;</TaskParam></BgbRequestMessage>",
                  TETHER_DIAG_DOCTYPE, NULL);
        parse_bad(TETHER_FRAME_PUSH, "<BgbRequestMessage><PushID>1</PushID>", TETHER_DIAG_NOT_WELL_FORMED,
                  NULL);
        parse_bad(TETHER_FRAME_PUSH, "<BgbRequestMessage><TaskParam>&nope;</TaskParam></BgbRequestMessage>",
                  TETHER_DIAG_NOT_WELL_FORMED, NULL);
        parse_bad(TETHER_FRAME_RESPONSE, "<BgbAckMessage><TaskGUID>" GUID_A "</TaskGUID></BgbAckMessage>",
                  TETHER_DIAG_WRONG_ROOT, "BgbAckMessage");
        parse_bad(TETHER_FRAME_PUSH_ACK, "<BgbAckMessage><TaskGUID>\xc3\x28</TaskGUID></BgbAckMessage>",
                  TETHER_DIAG_NOT_UTF8, NULL);
        parse_bad(TETHER_FRAME_PUSH_ACK, "<BgbAckMessage><TaskGUID>\xc0\xaf</TaskGUID></BgbAckMessage>",
                  TETHER_DIAG_NOT_UTF8, NULL);
        parse_bad(9, "<BgbAckMessage/>", TETHER_DIAG_BAD_TYPE, NULL);
        parse_bad(0, "<BgbAckMessage/>", TETHER_DIAG_BAD_TYPE, NULL);
}

/* ---- seal and open ---------------------------------------------------- */

static struct tether_frame *decode_one(const uint8_t *buf, size_t len) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *frame = NULL;
        struct tether_diag diag = {};
        size_t consumed = 0;

        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &consumed, &frame, &diag), 1);
        assert_int_equal(consumed, len);
        tether_frame_decoder_free(dec);
        return frame;
}

static void open_bad(const struct tether_frame *frame, const struct tether_key *key,
                     enum tether_diag_kind kind) {
        struct tether_diag diag = {};
        struct tether_msg *m = NULL;
        int r;

        r = tether_msg_open(frame, key, &m, &diag);
        if (r != -EBADMSG || diag.kind != kind)
                fail_msg("expected %s, got %d %s (%s)", tether_diag_kind_name(kind), r,
                         tether_diag_kind_name(diag.kind), diag.text);
        assert_null(m);

        /* The verify half alone says the same for signature failures. */
        if (kind == TETHER_DIAG_BAD_SIGNATURE || kind == TETHER_DIAG_MISSING_SIGNATURE) {
                struct tether_diag alone = {};

                assert_int_equal(tether_msg_verify(frame, key, &alone), -EBADMSG);
                assert_int_equal(alone.kind, kind);
                assert_string_equal(alone.text, diag.text);
        }
}

static void seal_open_all(enum tether_key_kind kind) {
        struct tether_key *key = NULL, *pub = NULL;
        char *pem = NULL;

        assert_int_equal(tether_key_generate(kind, &key), 0);
        assert_int_equal(tether_key_public_pem(key, &pem), 0);
        assert_int_equal(tether_key_from_public_pem(pem, strlen(pem), &pub), 0);
        free(pem);

        for (uint8_t type = 1; type <= ALL_TYPES; type++) {
                struct tether_msg *m = sample(type), *back = NULL;
                struct tether_diag diag = {};
                struct tether_frame *frame;
                uint8_t *buf = NULL;
                size_t len = 0;
                bool is_signed = tether_frame_type_signed(type);

                assert_int_equal(tether_msg_seal(m, is_signed ? key : NULL, TETHER_FRAME_DEFAULT_MAX_BODY,
                                                 &buf, &len),
                                 0);
                frame = decode_one(buf, len);
                assert_int_equal(frame->type, type);
                assert_int_equal(frame->sig_len > 0, is_signed);
                assert_int_equal(tether_msg_verify(frame, is_signed ? pub : NULL, &diag), 0);
                assert_int_equal(tether_msg_open(frame, is_signed ? pub : NULL, &back, &diag), 0);
                assert_msg_equal(m, back);
                tether_msg_free(back);
                tether_frame_free(frame);
                free(buf);
                tether_msg_free(m);
        }
        tether_key_free(pub);
        tether_key_free(key);
}

static void test_seal_open_every_type_ec(void **state) {
        seal_open_all(TETHER_KEY_EC_P256);
}

static void test_seal_open_every_type_ed25519(void **state) {
        seal_open_all(TETHER_KEY_ED25519);
}

static void test_signature_failures(void **state) {
        struct tether_key *key = NULL, *other = NULL;
        struct tether_msg *m = sample(TETHER_FRAME_PUSH), *resp = sample(TETHER_FRAME_RESPONSE);
        struct tether_frame *frame;
        uint8_t *buf = NULL, *sig = NULL;
        char *body = NULL;
        size_t len = 0, body_len = 0, sig_len = 0;

        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &key), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &other), 0);

        /* Signed by another key. */
        assert_int_equal(tether_msg_seal(m, other, TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len), 0);
        frame = decode_one(buf, len);
        open_bad(frame, key, TETHER_DIAG_BAD_SIGNATURE);
        /* An altered body byte. */
        frame->body[frame->body_len - 2] ^= 1;
        open_bad(frame, other, TETHER_DIAG_BAD_SIGNATURE);
        tether_frame_free(frame);
        free(buf);

        /* Signed as type 5 (RESPONSE), sent in a type 3 (PUSH) frame. */
        assert_int_equal(tether_msg_build(m, &body, &body_len), 0);
        assert_int_equal(
                tether_sign(key, TETHER_FRAME_RESPONSE, (const uint8_t *)body, body_len, &sig, &sig_len), 0);
        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, (const uint8_t *)body, body_len, sig,
                                             sig_len, TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len),
                         0);
        frame = decode_one(buf, len);
        open_bad(frame, key, TETHER_DIAG_BAD_SIGNATURE);
        tether_frame_free(frame);
        free(buf);
        free(sig);

        /* No signature at all. */
        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, (const uint8_t *)body, body_len, NULL, 0,
                                             TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len),
                         0);
        frame = decode_one(buf, len);
        open_bad(frame, key, TETHER_DIAG_MISSING_SIGNATURE);
        tether_frame_free(frame);
        free(buf);
        free(body);

        /* A garbage signature. */
        {
                static const uint8_t junk[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01};
                char *rbody = NULL;

                assert_int_equal(tether_msg_build(resp, &rbody, &body_len), 0);
                assert_int_equal(tether_frame_encode(TETHER_FRAME_RESPONSE, (const uint8_t *)rbody, body_len,
                                                     junk, sizeof(junk), TETHER_FRAME_DEFAULT_MAX_BODY, &buf,
                                                     &len),
                                 0);
                frame = decode_one(buf, len);
                open_bad(frame, key, TETHER_DIAG_BAD_SIGNATURE);
                tether_frame_free(frame);
                free(buf);
                free(rbody);
        }

        /* The body is not looked at before the signature passes: a hostile
         * body with a bad or missing signature is reported as a signature
         * failure, never as an XML problem. */
        {
                static const char hostile[] = "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>";
                static const uint8_t junk[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01};

                assert_int_equal(tether_frame_encode(TETHER_FRAME_SIGNIN, (const uint8_t *)hostile,
                                                     strlen(hostile), junk, sizeof(junk),
                                                     TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len),
                                 0);
                frame = decode_one(buf, len);
                open_bad(frame, key, TETHER_DIAG_BAD_SIGNATURE);
                tether_frame_free(frame);
                free(buf);
                assert_int_equal(tether_frame_encode(TETHER_FRAME_SIGNIN_CONFIRM, (const uint8_t *)hostile,
                                                     strlen(hostile), NULL, 0, TETHER_FRAME_DEFAULT_MAX_BODY,
                                                     &buf, &len),
                                 0);
                frame = decode_one(buf, len);
                open_bad(frame, key, TETHER_DIAG_MISSING_SIGNATURE);
                tether_frame_free(frame);
                free(buf);

                /* A correctly signed hostile body is then refused by the parser. */
                assert_int_equal(tether_sign(key, TETHER_FRAME_PUSH, (const uint8_t *)hostile,
                                             strlen(hostile), &sig, &sig_len),
                                 0);
                assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, (const uint8_t *)hostile,
                                                     strlen(hostile), sig, sig_len,
                                                     TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len),
                                 0);
                frame = decode_one(buf, len);
                open_bad(frame, key, TETHER_DIAG_DOCTYPE);
                tether_frame_free(frame);
                free(buf);
                free(sig);
        }

        /* Sealing a signed type needs a signer; opening one needs a key. */
        assert_int_equal(tether_msg_seal(m, NULL, TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len), -EINVAL);
        assert_int_equal(tether_msg_seal(m, key, 10, &buf, &len), -EMSGSIZE);

        tether_msg_free(resp);
        tether_msg_free(m);
        tether_key_free(other);
        tether_key_free(key);
}

static void test_unsigned_types_open_without_key(void **state) {
        static const uint8_t types[] = {TETHER_FRAME_PUSH_ACK, TETHER_FRAME_RESPONSE_ACK,
                                        TETHER_FRAME_KEEPALIVE, TETHER_FRAME_GOODBYE};

        for (size_t i = 0; i < sizeof(types); i++) {
                struct tether_msg *m = sample(types[i]), *back = NULL;
                struct tether_diag diag = {};
                struct tether_frame *frame;
                uint8_t *buf = NULL;
                size_t len = 0;

                assert_int_equal(tether_msg_seal(m, NULL, TETHER_FRAME_DEFAULT_MAX_BODY, &buf, &len), 0);
                frame = decode_one(buf, len);
                assert_int_equal(frame->sig_len, 0);
                assert_int_equal(tether_msg_open(frame, NULL, &back, &diag), 0);
                assert_msg_equal(m, back);
                tether_msg_free(back);
                /* Unsigned types still get the strict parser. */
                frame->body[0] = 'X';
                open_bad(frame, NULL, TETHER_DIAG_NOT_WELL_FORMED);
                tether_frame_free(frame);
                free(buf);
                tether_msg_free(m);
        }
}

static void test_names(void **state) {
        assert_string_equal(tether_task_type_name(1), "RequestMachinePolicy");
        assert_string_equal(tether_task_type_name(2), "RequestUserPolicy");
        assert_string_equal(tether_task_type_name(3), "AppEvaluation");
        assert_string_equal(tether_task_type_name(4), "unknown");
        assert_string_equal(tether_task_type_schedule_id(1), "{00000000-0000-0000-0000-000000000021}");
        assert_string_equal(tether_task_type_schedule_id(2), "{00000000-0000-0000-0000-000000000026}");
        assert_string_equal(tether_task_type_schedule_id(3), "{00000000-0000-0000-0000-000000000121}");
        assert_null(tether_task_type_schedule_id(0));
        assert_string_equal(tether_return_code_name(1), "Success");
        assert_string_equal(tether_return_code_name(2), "Failed");
        assert_string_equal(tether_return_code_name(3), "NotSupported");
        assert_string_equal(tether_return_code_name(4), "InvalidTask");
        assert_string_equal(tether_return_code_name(5), "Unauthorized");
        assert_string_equal(tether_return_code_name(6), "TimedOut");
        assert_string_equal(tether_return_code_name(7), "Cancelled");
        assert_string_equal(tether_return_code_name(0), "unknown");
        assert_string_equal(tether_goodbye_reason_name(TETHER_GOODBYE_SHUTDOWN), "shutdown");
        assert_string_equal(tether_goodbye_reason_name(TETHER_GOODBYE_CONFLICT), "conflict");
        assert_string_equal(tether_goodbye_reason_name(TETHER_GOODBYE_UNAUTHORIZED), "unauthorized");
        assert_string_equal(tether_goodbye_reason_name(TETHER_GOODBYE_PROTOCOL_ERROR), "protocol-error");
        assert_string_equal(tether_goodbye_reason_name(TETHER_GOODBYE_OVERLOADED), "overloaded");
        assert_string_equal(tether_goodbye_reason_name(0), "unknown");
        assert_string_equal(tether_signin_status_name(TETHER_SIGNIN_APPROVED), "Approved");
        assert_string_equal(tether_signin_status_name(TETHER_SIGNIN_PENDING), "Pending");
        assert_string_equal(tether_signin_status_name(TETHER_SIGNIN_REJECTED), "Rejected");
        assert_string_equal(tether_signin_status_name(0), "unknown");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip_every_type),
                cmocka_unit_test(test_response_exact_shape),
                cmocka_unit_test(test_other_exact_shapes),
                cmocka_unit_test(test_optional_fields_absent),
                cmocka_unit_test(test_empty_task_param),
                cmocka_unit_test(test_unknown_elements_ignored),
                cmocka_unit_test(test_missing_and_duplicated_elements),
                cmocka_unit_test(test_optional_elements_duplicated),
                cmocka_unit_test(test_missing_attributes),
                cmocka_unit_test(test_bad_numbers),
                cmocka_unit_test(test_too_many_task_types),
                cmocka_unit_test(test_bad_guids),
                cmocka_unit_test(test_bad_timestamps),
                cmocka_unit_test(test_bad_enums_and_detail),
                cmocka_unit_test(test_builder_escaping),
                cmocka_unit_test(test_hostile_bodies),
                cmocka_unit_test(test_seal_open_every_type_ec),
                cmocka_unit_test(test_seal_open_every_type_ed25519),
                cmocka_unit_test(test_signature_failures),
                cmocka_unit_test(test_unsigned_types_open_without_key),
                cmocka_unit_test(test_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
