/* SPDX-License-Identifier: Apache-2.0 */
/*
 * transport/rotation: the two signature inputs of version 1.1 (byte for
 * byte), the site key chain walk and each refusal (broken link, serial gap,
 * endorsement by an unknown key, NotBefore far in the future), the overlap
 * on a fake clock, the text form, and the 1.1 elements of the codec.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/message.h"
#include "transport/rotation.h"
#include "transport/sign.h"

#define T0 ((time_t)1800000000) /* 2027-01-15 */
#define DAY 86400
#define CID "A43DD1B3-A006-4604-B012-5529380B3B6F"

struct fixture {
        struct tether_key *k[5]; /* k[0] is serial 1 */
        struct tether_key *stranger;
        struct tether_site_chain *mp; /* the MP's chain, k[0..3] */
        struct tether_endorsement *e;
        size_t n;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        for (int i = 0; i < 5; i++)
                assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->k[i]), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->stranger), 0);
        assert_int_equal(tether_site_chain_new(f->k[0], &f->mp), 0);
        for (int i = 1; i <= 3; i++)
                assert_int_equal(tether_site_chain_append(f->mp, f->k[i - 1], f->k[i], T0 + i * DAY), 0);
        assert_int_equal(tether_site_chain_endorsements(f->mp, &f->e, &f->n), 0);
        assert_int_equal(f->n, 3);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        free(f->e);
        tether_site_chain_free(f->mp);
        for (int i = 0; i < 5; i++)
                tether_key_free(f->k[i]);
        tether_key_free(f->stranger);
        free(f);
        return 0;
}

static struct tether_site_chain *agent_chain(struct fixture *f) {
        struct tether_site_chain *c = NULL;

        assert_int_equal(tether_site_chain_new(f->k[0], &c), 0);
        return c;
}

/* The endorsement input is exactly TETHER1, 0x4B, serial BE, NotBefore, DER:
 * checked against a signature made over those bytes by hand. */
static void test_endorsement_input(void **state) {
        struct fixture *f = *state;
        uint8_t *der = NULL, *sig = NULL, *body;
        size_t der_len = 0, sig_len = 0, len;
        const char *nb = "2027-01-01T00:00:00Z";
        char *b64 = NULL;

        assert_int_equal(tether_key_spki_der(f->k[1], &der, &der_len), 0);
        len = 4 + 20 + der_len;
        body = malloc(len);
        memcpy(body, "\x00\x00\x01\x02", 4); /* serial 258 */
        memcpy(body + 4, nb, 20);
        memcpy(body + 24, der, der_len);
        assert_int_equal(tether_sign(f->k[0], 0x4B, body, len, &sig, &sig_len), 0);
        assert_int_equal(tether_base64_encode(sig, sig_len, &b64), 0);
        assert_int_equal(tether_endorsement_verify(f->k[0], 258, nb, der, der_len, b64), 0);
        assert_int_equal(tether_endorsement_verify(f->k[0], 259, nb, der, der_len, b64), -EBADMSG);
        assert_int_equal(tether_endorsement_verify(f->k[0], 258, "2027-01-01T00:00:01Z", der, der_len, b64),
                         -EBADMSG);
        assert_int_equal(tether_endorsement_verify(f->k[1], 258, nb, der, der_len, b64), -EBADMSG);
        free(b64);
        free(sig);
        free(body);
        free(der);
}

/* The rollover input is TETHER1, 0x44, the 36 ASCII bytes of the ClientID,
 * the new key's DER. */
static void test_rollover_input(void **state) {
        struct fixture *f = *state;
        uint8_t *der = NULL, *sig = NULL, *body;
        size_t der_len = 0, sig_len = 0;
        char *b64 = NULL, *mine = NULL;

        assert_int_equal(tether_key_spki_der(f->k[1], &der, &der_len), 0);
        body = malloc(36 + der_len);
        memcpy(body, CID, 36);
        memcpy(body + 36, der, der_len);
        assert_int_equal(tether_sign(f->k[0], 0x44, body, 36 + der_len, &sig, &sig_len), 0);
        assert_int_equal(tether_base64_encode(sig, sig_len, &b64), 0);
        assert_int_equal(tether_rollover_verify(f->k[0], CID, f->k[1], b64), 0);
        assert_int_equal(tether_rollover_verify(f->stranger, CID, f->k[1], b64), -EBADMSG);
        assert_int_equal(
                tether_rollover_verify(f->k[0], "B43DD1B3-A006-4604-B012-5529380B3B6F", f->k[1], b64),
                -EBADMSG);
        assert_int_equal(tether_rollover_verify(f->k[0], CID, f->k[2], b64), -EBADMSG);
        assert_int_equal(tether_rollover_sign(f->k[0], CID, f->k[1], &mine), 0);
        assert_int_equal(tether_rollover_verify(f->k[0], CID, f->k[1], mine), 0);
        free(mine);
        free(b64);
        free(sig);
        free(body);
        free(der);
}

static void test_walk_whole_chain(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *c = agent_chain(f);
        char why[256];

        assert_int_equal(tether_site_chain_extend(c, f->e, f->n, T0, why), 3);
        assert_string_equal(why, "");
        assert_int_equal(tether_site_chain_len(c), 4);
        for (size_t i = 0; i < 4; i++)
                assert_true(tether_key_equal(tether_site_chain_key(c, i), f->k[i]));
        /* Again: nothing new, nothing refused. */
        assert_int_equal(tether_site_chain_extend(c, f->e, f->n, T0, why), 0);
        assert_string_equal(why, "");
        /* From a middle key on: an agent that already has serial 2. */
        tether_site_chain_free(c);
        c = agent_chain(f);
        assert_int_equal(tether_site_chain_extend(c, f->e, 1, T0, why), 1);
        assert_int_equal(tether_site_chain_extend(c, f->e, f->n, T0, why), 2);
        tether_site_chain_free(c);
}

static void test_broken_link(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *c = agent_chain(f);
        struct tether_endorsement e[3];
        char why[256];

        memcpy(e, f->e, sizeof(e));
        e[1].signature = e[2].signature; /* serial 3's link, signed over other bytes */
        assert_int_equal(tether_site_chain_extend(c, e, 3, T0, why), 1);
        assert_non_null(strstr(why, "broken link"));
        assert_non_null(strstr(why, "serial 3"));
        assert_int_equal(tether_site_chain_len(c), 2); /* serial 2 stays, nothing after */
        tether_site_chain_free(c);
}

static void test_serial_gap(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *c = agent_chain(f);
        struct tether_endorsement e[2] = {f->e[0], f->e[2]};
        char why[256];

        assert_int_equal(tether_site_chain_extend(c, e, 2, T0, why), 1);
        assert_non_null(strstr(why, "serial gap"));
        assert_int_equal(tether_site_chain_len(c), 2);
        tether_site_chain_free(c);
}

static void test_unknown_key(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *other = NULL, *c = agent_chain(f);
        struct tether_endorsement *e = NULL;
        size_t n = 0;
        char why[256];

        /* A chain rooted at a key this agent never trusted. */
        assert_int_equal(tether_site_chain_new(f->stranger, &other), 0);
        assert_int_equal(tether_site_chain_append(other, f->stranger, f->k[4], T0), 0);
        assert_int_equal(tether_site_chain_endorsements(other, &e, &n), 0);
        assert_int_equal(tether_site_chain_extend(c, e, n, T0, why), 0);
        assert_non_null(strstr(why, "unknown key"));
        assert_int_equal(tether_site_chain_len(c), 1);
        free(e);
        tether_site_chain_free(other);
        tether_site_chain_free(c);
}

static void test_far_future(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *mp = NULL, *c = agent_chain(f);
        struct tether_endorsement *e = NULL;
        size_t n = 0;
        char why[256];

        assert_int_equal(tether_site_chain_new(f->k[0], &mp), 0);
        assert_int_equal(tether_site_chain_append(mp, f->k[0], f->k[1], T0 + 91 * DAY), 0);
        assert_int_equal(tether_site_chain_endorsements(mp, &e, &n), 0);
        assert_int_equal(tether_site_chain_extend(c, e, n, T0, why), 0);
        assert_non_null(strstr(why, "in the future"));
        assert_int_equal(tether_site_chain_len(c), 1);
        /* Closer to it, the same link is taken. */
        assert_int_equal(tether_site_chain_extend(c, e, n, T0 + 2 * DAY, why), 1);
        free(e);
        tether_site_chain_free(mp);
        tether_site_chain_free(c);
}

static bool verifies_with(struct tether_site_chain *c, time_t now, const struct tether_key *signer) {
        struct tether_key *v = NULL;
        uint8_t *sig = NULL;
        size_t sig_len = 0;
        bool ok;

        assert_int_equal(tether_sign(signer, 3, (const uint8_t *)"body", 4, &sig, &sig_len), 0);
        assert_int_equal(tether_site_chain_verifier(c, now, TETHER_SITE_KEY_OVERLAP_SECONDS, &v), 0);
        ok = tether_verify(v, 3, (const uint8_t *)"body", 4, sig, sig_len) == 0;
        tether_key_free(v);
        free(sig);
        return ok;
}

/* NotBefore and the 7-day overlap, on a fake clock. */
static void test_overlap(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *c = agent_chain(f);
        char why[256];
        time_t nb = T0 + DAY, confirm = nb + 3600;

        assert_int_equal(tether_site_chain_extend(c, f->e, 1, T0, why), 1);
        /* Before NotBefore: serial 1 signs, serial 2 is not accepted yet. */
        assert_int_equal(tether_site_chain_current(c, nb - 1), 0);
        assert_true(verifies_with(c, nb - 1, f->k[0]));
        assert_false(verifies_with(c, nb - 1, f->k[1]));
        /* From NotBefore: both, until 7 days after the first confirm by 2. */
        assert_int_equal(tether_site_chain_current(c, nb), 1);
        assert_true(verifies_with(c, nb, f->k[1]));
        assert_true(verifies_with(c, nb, f->k[0]));
        assert_true(tether_site_chain_mark_confirm(c, 1, confirm));
        assert_false(tether_site_chain_mark_confirm(c, 1, confirm + 10));
        assert_true(verifies_with(c, confirm + 7 * DAY - 1, f->k[0]));
        assert_false(verifies_with(c, confirm + 7 * DAY, f->k[0]));
        assert_true(verifies_with(c, confirm + 7 * DAY, f->k[1]));
        assert_false(verifies_with(c, confirm, f->stranger));
        tether_site_chain_free(c);
}

static void test_text_form(void **state) {
        struct fixture *f = *state;
        struct tether_site_chain *c = agent_chain(f), *d = agent_chain(f);
        char *text = NULL, why[256];
        size_t len = 0;

        assert_int_equal(tether_site_chain_extend(c, f->e, f->n, T0, why), 3);
        tether_site_chain_mark_confirm(c, 2, T0 + 5);
        assert_int_equal(tether_site_chain_format(c, &text, &len), 0);
        assert_int_equal(tether_site_chain_parse(d, text, len, true, T0, why), 0);
        assert_int_equal(tether_site_chain_len(d), 4);
        assert_int_equal(tether_site_chain_first_confirm(d, 2), T0 + 5);
        tether_site_chain_free(d);

        /* Without times (the root half takes its own). */
        d = agent_chain(f);
        assert_int_equal(tether_site_chain_parse(d, text, len, false, T0, why), 0);
        assert_int_equal(tether_site_chain_first_confirm(d, 2), 0);
        tether_site_chain_free(d);

        /* A tampered key in line 2: lines before it stay, the rest is refused. */
        char *second = strchr(text, '\n') + 1;
        char *key = strchr(strchr(second, ' ') + 1, ' ') + 1;
        key[10] = key[10] == 'A' ? 'B' : 'A';
        d = agent_chain(f);
        assert_int_equal(tether_site_chain_parse(d, text, len, true, T0, why), -EBADMSG);
        assert_int_equal(tether_site_chain_len(d), 2);
        tether_site_chain_free(d);

        /* Malformed lines. */
        d = agent_chain(f);
        assert_int_equal(tether_site_chain_parse(d, "2 x y z 0\n", 10, true, T0, why), -EBADMSG);
        assert_non_null(strstr(why, "malformed"));
        tether_site_chain_free(d);
        free(text);
        tether_site_chain_free(c);
}

static void test_codec_1_1(void **state) {
        struct fixture *f = *state;
        struct tether_msg in = {.type = TETHER_FRAME_SIGNIN_CONFIRM}, *out = NULL;
        struct tether_diag diag = {0};
        char *body = NULL;
        size_t len = 0;

        in.signin_confirm.timestamp = T0;
        in.signin_confirm.message_version = 1;
        in.signin_confirm.status = TETHER_SIGNIN_APPROVED;
        in.signin_confirm.keepalive_seconds = 180;
        in.signin_confirm.endorsements = f->e;
        in.signin_confirm.n_endorsements = (unsigned)f->n;
        assert_int_equal(tether_msg_build(&in, &body, &len), 0);
        assert_non_null(strstr(body, "<SiteKeyEndorsement Serial=\"2\" NotBefore=\""));
        assert_int_equal(tether_msg_parse(TETHER_FRAME_SIGNIN_CONFIRM, (uint8_t *)body, len, &out, &diag),
                         0);
        assert_int_equal(out->signin_confirm.n_endorsements, 3);
        for (unsigned i = 0; i < 3; i++) {
                assert_int_equal(out->signin_confirm.endorsements[i].serial, i + 2);
                assert_string_equal(out->signin_confirm.endorsements[i].not_before, f->e[i].not_before);
                assert_string_equal(out->signin_confirm.endorsements[i].public_key, f->e[i].public_key);
                assert_string_equal(out->signin_confirm.endorsements[i].signature, f->e[i].signature);
        }
        tether_msg_free(out);
        free(body);

        struct tether_msg s = {.type = TETHER_FRAME_SIGNIN};
        memcpy(s.signin.client_id, CID, sizeof(CID));
        s.signin.timestamp = T0;
        s.signin.version = "1";
        s.signin.hostname = "h";
        s.signin.public_key = "AAAA";
        s.signin.n_task_types = 1;
        s.signin.task_types[0] = 1;
        s.signin.feature_1_1 = true;
        s.signin.rollover.previous_public_key = "BBBB";
        s.signin.rollover.signature = "CCCC";
        assert_int_equal(tether_msg_build(&s, &body, &len), 0);
        assert_non_null(strstr(body, "<Feature>1.1</Feature></Capabilities>"));
        assert_non_null(strstr(body,
                               "<KeyRollover><PreviousPublicKey>BBBB</PreviousPublicKey><Signature>CCCC"
                               "</Signature></KeyRollover>"));
        assert_int_equal(tether_msg_parse(TETHER_FRAME_SIGNIN, (uint8_t *)body, len, &out, &diag), 0);
        assert_true(out->signin.feature_1_1);
        assert_int_equal(out->signin.n_task_types, 1);
        assert_string_equal(out->signin.rollover.previous_public_key, "BBBB");
        assert_string_equal(out->signin.rollover.signature, "CCCC");
        tether_msg_free(out);
        free(body);

        /* A 1.0 SIGNIN: no feature, no rollover. */
        const char *old = "<BgbSignInMessage TimeStamp=\"2027-01-15T08:00:00Z\" ClientID=\"" CID
                          "\" Version=\"1\"><Hostname>h</Hostname><PublicKey>A</PublicKey><Capabilities>"
                          "<TaskType>1</TaskType><Feature>2.0</Feature></Capabilities></BgbSignInMessage>";
        assert_int_equal(
                tether_msg_parse(TETHER_FRAME_SIGNIN, (const uint8_t *)old, strlen(old), &out, &diag), 0);
        assert_false(out->signin.feature_1_1);
        assert_null(out->signin.rollover.previous_public_key);
        tether_msg_free(out);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_endorsement_input), cmocka_unit_test(test_rollover_input),
                cmocka_unit_test(test_walk_whole_chain),  cmocka_unit_test(test_broken_link),
                cmocka_unit_test(test_serial_gap),        cmocka_unit_test(test_unknown_key),
                cmocka_unit_test(test_far_future),        cmocka_unit_test(test_overlap),
                cmocka_unit_test(test_text_form),         cmocka_unit_test(test_codec_1_1),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
