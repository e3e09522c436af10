/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The checked-in vectors of tests/vectors/ (made by make-vectors.c): the
 * codec must produce and accept exactly these bytes.
 */
#include <ctype.h>
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

#define VECTORS TETHER_SOURCE_DIR "/tests/vectors/"

struct blob {
        uint8_t *data;
        size_t len;
};

static struct blob load(const char *name) {
        char path[4096];
        struct blob b = {};
        FILE *f;
        long n;

        snprintf(path, sizeof(path), VECTORS "%s", name);
        f = fopen(path, "re");
        if (!f)
                fail_msg("cannot open %s", path);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        n = ftell(f);
        assert_true(n > 0);
        assert_int_equal(fseek(f, 0, SEEK_SET), 0);
        b.data = malloc((size_t)n + 1);
        assert_non_null(b.data);
        assert_int_equal(fread(b.data, 1, (size_t)n, f), (size_t)n);
        b.data[n] = 0;
        b.len = (size_t)n;
        fclose(f);
        return b;
}

static struct tether_key *load_device_key(void) {
        struct tether_key *key = NULL;

        assert_int_equal(tether_key_load_public(VECTORS "device-pub.pem", &key), 0);
        assert_int_equal(tether_key_get_kind(key), TETHER_KEY_EC_P256);
        return key;
}

static void test_body_rebuilds_identically(void **state) {
        struct blob xml = load("response.xml");
        struct tether_diag diag = {};
        struct tether_msg *m = NULL;
        char *again = NULL;
        size_t len = 0;

        assert_int_equal(tether_msg_parse(TETHER_FRAME_RESPONSE, xml.data, xml.len, &m, &diag), 0);
        assert_true(m->response.push_id == 8);
        assert_true(m->response.task_id == 9);
        assert_int_equal(m->response.return_code, TETHER_RC_SUCCESS);
        assert_string_equal(m->response.task_guid, "A43DD1B3-A006-4604-B012-5529380B3B6F");
        assert_int_equal(m->response.timestamp, 1579621423);
        assert_int_equal(tether_msg_build(m, &again, &len), 0);
        assert_int_equal(len, xml.len);
        assert_memory_equal(again, xml.data, len);
        /* The seed's shape: the first three children in this order. */
        assert_true(strstr((char *)xml.data,
                           "\"><PushID>8</PushID><TaskID>9</TaskID><ReturnCode>1</ReturnCode>"
                           "<TaskGUID>") != NULL);
        free(again);
        tether_msg_free(m);
        free(xml.data);
}

static void test_signature_input(void **state) {
        struct blob xml = load("response.xml"), input = load("response.input");
        uint8_t *mine = NULL;
        size_t len = 0;

        assert_int_equal(tether_signature_input(TETHER_FRAME_RESPONSE, xml.data, xml.len, &mine, &len), 0);
        assert_int_equal(len, input.len);
        assert_memory_equal(mine, input.data, len);
        /* By the contract's definition: "TETHER1", 0x05, the body. */
        assert_int_equal(input.len, 8 + xml.len);
        assert_memory_equal(input.data, "TETHER1\x05", 8);
        assert_memory_equal(input.data + 8, xml.data, xml.len);
        free(mine);
        free(input.data);
        free(xml.data);
}

static void test_signature_verifies(void **state) {
        struct blob xml = load("response.xml"), sig = load("response.sig");
        struct tether_key *key = load_device_key(), *other = NULL;

        assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, xml.data, xml.len, sig.data, sig.len), 0);
        /* ...and only for this type byte, body and key. */
        assert_int_equal(tether_verify(key, TETHER_FRAME_PUSH, xml.data, xml.len, sig.data, sig.len),
                         -EBADMSG);
        xml.data[20] ^= 1;
        assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, xml.data, xml.len, sig.data, sig.len),
                         -EBADMSG);
        xml.data[20] ^= 1;
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &other), 0);
        assert_int_equal(tether_verify(other, TETHER_FRAME_RESPONSE, xml.data, xml.len, sig.data, sig.len),
                         -EBADMSG);
        tether_key_free(other);
        tether_key_free(key);
        free(sig.data);
        free(xml.data);
}

static void test_frame_opens(void **state) {
        struct blob xml = load("response.xml"), sig = load("response.sig"), raw = load("response.frame");
        struct tether_key *key = load_device_key();
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *frame = NULL;
        struct tether_diag diag = {};
        struct tether_msg *m = NULL;
        uint8_t *again = NULL;
        size_t consumed = 0, len = 0;

        /* The header, byte for byte. */
        assert_true(raw.len == 10 + xml.len + sig.len);
        assert_memory_equal(raw.data, "TH\x01\x05", 4);
        assert_int_equal(((size_t)raw.data[4] << 24) | ((size_t)raw.data[5] << 16) |
                                 ((size_t)raw.data[6] << 8) | raw.data[7],
                         xml.len);
        assert_int_equal(((size_t)raw.data[8] << 8) | raw.data[9], sig.len);

        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, raw.data, raw.len, &consumed, &frame, &diag), 1);
        assert_int_equal(consumed, raw.len);
        assert_int_equal(frame->type, TETHER_FRAME_RESPONSE);
        assert_int_equal(frame->body_len, xml.len);
        assert_memory_equal(frame->body, xml.data, xml.len);
        assert_int_equal(frame->sig_len, sig.len);
        assert_memory_equal(frame->sig, sig.data, sig.len);

        assert_int_equal(tether_msg_open(frame, key, &m, &diag), 0);
        assert_int_equal(m->type, TETHER_FRAME_RESPONSE);
        assert_string_equal(m->response.client_id, "5E0C2B7A-91D4-4F0E-8C3B-6A2D1F9E7B40");

        /* The encoder makes the same frame from the same parts. */
        assert_int_equal(tether_frame_encode(TETHER_FRAME_RESPONSE, xml.data, xml.len, sig.data, sig.len,
                                             TETHER_FRAME_DEFAULT_MAX_BODY, &again, &len),
                         0);
        assert_int_equal(len, raw.len);
        assert_memory_equal(again, raw.data, len);

        free(again);
        tether_msg_free(m);
        tether_frame_free(frame);
        tether_frame_decoder_free(dec);
        tether_key_free(key);
        free(raw.data);
        free(sig.data);
        free(xml.data);
}

static int hexval(int c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* response.frame.hex is an xxd-style dump of response.frame. */
static void test_hex_dump_matches(void **state) {
        struct blob hex = load("response.frame.hex"), raw = load("response.frame");
        uint8_t *bytes = malloc(hex.len);
        size_t n = 0, expect_off = 0;
        char *next;

        assert_non_null(bytes);
        for (char *line = (char *)hex.data; *line; line = next) {
                char *p = strchr(line, ':');
                size_t off = 0;

                next = strchr(line, '\n');
                assert_non_null(next); /* every line ends with a newline */
                *next++ = '\0';

                assert_non_null(p);
                for (char *q = line; q < p; q++) {
                        assert_true(hexval(*q) >= 0);
                        off = off * 16 + (size_t)hexval(*q);
                }
                assert_int_equal(off, expect_off);
                p += 2;
                /* Hex groups end at the double space before the ASCII column. */
                while (*p && !(p[0] == ' ' && p[1] == ' ')) {
                        if (*p == ' ') {
                                p++;
                                continue;
                        }
                        assert_true(hexval(p[0]) >= 0 && hexval(p[1]) >= 0);
                        bytes[n++] = (uint8_t)(hexval(p[0]) * 16 + hexval(p[1]));
                        p += 2;
                }
                expect_off += 16;
        }
        assert_int_equal(n, raw.len);
        assert_memory_equal(bytes, raw.data, n);
        free(bytes);
        free(raw.data);
        free(hex.data);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_body_rebuilds_identically), cmocka_unit_test(test_signature_input),
                cmocka_unit_test(test_signature_verifies),        cmocka_unit_test(test_frame_opens),
                cmocka_unit_test(test_hex_dump_matches),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
