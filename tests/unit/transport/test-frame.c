/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/frame.h"

static const char BODY[] = "<BgbKeepAliveMessage TimeStamp=\"2020-01-21T15:43:43Z\"/>";
static const uint8_t SIG[] = {0x30, 0x45, 0x02, 0x21, 0x00, 0xde, 0xad, 0xbe, 0xef};

static void encode(uint8_t type, const char *body, size_t body_len, const uint8_t *sig, size_t sig_len,
                   uint8_t **buf, size_t *len) {
        assert_int_equal(tether_frame_encode(type, (const uint8_t *)body, body_len, sig, sig_len,
                                             TETHER_FRAME_DEFAULT_MAX_BODY, buf, len),
                         0);
}

static void assert_frame(const struct tether_frame *f, uint8_t type, const char *body, size_t body_len,
                         const uint8_t *sig, size_t sig_len) {
        assert_non_null(f);
        assert_int_equal(f->type, type);
        assert_int_equal(f->body_len, body_len);
        assert_memory_equal(f->body, body, body_len);
        assert_int_equal(f->body[body_len], 0);
        assert_int_equal(f->sig_len, sig_len);
        if (sig_len > 0)
                assert_memory_equal(f->sig, sig, sig_len);
        else
                assert_null(f->sig);
}

/* Feeds all of data, collecting up to max frames; returns their count. */
static int feed_all(struct tether_frame_decoder *dec, const uint8_t *data, size_t len,
                    struct tether_frame **frames, int max) {
        int n = 0;

        while (len > 0) {
                struct tether_frame *f = NULL;
                size_t used = 0;
                int r = tether_frame_decoder_feed(dec, data, len, &used, &f, NULL);

                assert_true(r == 0 || r == 1);
                assert_true(used <= len);
                if (r == 1) {
                        assert_true(n < max);
                        frames[n++] = f;
                } else {
                        assert_int_equal(used, len);
                }
                data += used;
                len -= used;
        }
        return n;
}

static void test_round_trip_every_type(void **state) {
        for (uint8_t type = TETHER_FRAME_SIGNIN; type <= TETHER_FRAME_GOODBYE; type++) {
                struct tether_frame_decoder *dec = NULL;
                struct tether_frame *frames[2];
                const uint8_t *sig = tether_frame_type_signed(type) ? SIG : NULL;
                size_t sig_len = sig ? sizeof(SIG) : 0;
                uint8_t *buf = NULL;
                size_t len = 0;

                encode(type, BODY, strlen(BODY), sig, sig_len, &buf, &len);
                assert_int_equal(len, TETHER_FRAME_HEADER_SIZE + strlen(BODY) + sig_len);
                assert_int_equal(buf[0], 'T');
                assert_int_equal(buf[1], 'H');
                assert_int_equal(buf[2], 1);
                assert_int_equal(buf[3], type);

                assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
                assert_int_equal(feed_all(dec, buf, len, frames, 2), 1);
                assert_frame(frames[0], type, BODY, strlen(BODY), sig, sig_len);
                assert_false(tether_frame_decoder_partial(dec));
                assert_string_not_equal(tether_frame_type_name(type), "unknown");

                tether_frame_free(frames[0]);
                tether_frame_decoder_free(dec);
                free(buf);
        }
        assert_string_equal(tether_frame_type_name(9), "unknown");
}

static void test_signed_types(void **state) {
        assert_true(tether_frame_type_signed(TETHER_FRAME_SIGNIN));
        assert_true(tether_frame_type_signed(TETHER_FRAME_SIGNIN_CONFIRM));
        assert_true(tether_frame_type_signed(TETHER_FRAME_PUSH));
        assert_true(tether_frame_type_signed(TETHER_FRAME_RESPONSE));
        assert_false(tether_frame_type_signed(TETHER_FRAME_PUSH_ACK));
        assert_false(tether_frame_type_signed(TETHER_FRAME_RESPONSE_ACK));
        assert_false(tether_frame_type_signed(TETHER_FRAME_KEEPALIVE));
        assert_false(tether_frame_type_signed(TETHER_FRAME_GOODBYE));
        assert_false(tether_frame_type_valid(0));
        assert_false(tether_frame_type_valid(9));
}

static void test_empty_body(void **state) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *f = NULL;
        uint8_t *buf = NULL;
        size_t len = 0, used = 0;

        encode(TETHER_FRAME_KEEPALIVE, NULL, 0, NULL, 0, &buf, &len);
        assert_int_equal(len, TETHER_FRAME_HEADER_SIZE);
        assert_int_equal(tether_frame_decoder_new(100, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &f, NULL), 1);
        assert_int_equal(used, len);
        assert_frame(f, TETHER_FRAME_KEEPALIVE, "", 0, NULL, 0);
        tether_frame_free(f);
        tether_frame_decoder_free(dec);
        free(buf);
}

/* Splits the stream at every point (two feeds), and also byte by byte. */
static void check_every_split(const uint8_t *stream, size_t len, int expect_frames,
                              struct tether_frame **reference) {
        for (size_t cut = 0; cut <= len; cut++) {
                struct tether_frame_decoder *dec = NULL;
                struct tether_frame *frames[4] = {0};
                int n;

                assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
                n = feed_all(dec, stream, cut, frames, 4);
                assert_true(n < 4);
                if (cut > 0 && cut < len && n < expect_frames)
                        assert_true(tether_frame_decoder_partial(dec) || n > 0);
                n += feed_all(dec, stream + cut, len - cut, frames + n, 4 - n);
                assert_int_equal(n, expect_frames);
                assert_false(tether_frame_decoder_partial(dec));
                for (int i = 0; i < n; i++) {
                        assert_frame(frames[i], reference[i]->type, (const char *)reference[i]->body,
                                     reference[i]->body_len, reference[i]->sig, reference[i]->sig_len);
                        tether_frame_free(frames[i]);
                }
                tether_frame_decoder_free(dec);
        }

        /* Byte by byte. */
        {
                struct tether_frame_decoder *dec = NULL;
                struct tether_frame *frames[4] = {0};
                int n = 0;

                assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
                for (size_t i = 0; i < len; i++)
                        n += feed_all(dec, stream + i, 1, frames + n, 4 - n);
                assert_int_equal(n, expect_frames);
                for (int i = 0; i < n; i++) {
                        assert_frame(frames[i], reference[i]->type, (const char *)reference[i]->body,
                                     reference[i]->body_len, reference[i]->sig, reference[i]->sig_len);
                        tether_frame_free(frames[i]);
                }
                tether_frame_decoder_free(dec);
        }
}

static void test_every_split_point(void **state) {
        const char *body2 = "<BgbAckMessage><TaskGUID>A43DD1B3-A006-4604-B012-5529380B3B6F</TaskGUID>"
                            "</BgbAckMessage>";
        struct tether_frame ref[2] = {
                {.type = TETHER_FRAME_PUSH,
                 .body = (uint8_t *)BODY,
                 .body_len = (uint32_t)strlen(BODY),
                 .sig = (uint8_t *)SIG,
                 .sig_len = sizeof(SIG)},
                {.type = TETHER_FRAME_PUSH_ACK,
                 .body = (uint8_t *)body2,
                 .body_len = (uint32_t)strlen(body2)},
        };
        struct tether_frame *refs[2] = {&ref[0], &ref[1]};
        uint8_t *a = NULL, *b = NULL, *both;
        size_t alen = 0, blen = 0;

        encode(ref[0].type, BODY, ref[0].body_len, SIG, sizeof(SIG), &a, &alen);
        encode(ref[1].type, body2, ref[1].body_len, NULL, 0, &b, &blen);

        check_every_split(a, alen, 1, refs);

        both = malloc(alen + blen);
        assert_non_null(both);
        memcpy(both, a, alen);
        memcpy(both + alen, b, blen);
        check_every_split(both, alen + blen, 2, refs);

        /* One feed with both frames: the decoder stops at the end of the first. */
        {
                struct tether_frame_decoder *dec = NULL;
                struct tether_frame *f = NULL;
                size_t used = 0;

                assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
                assert_int_equal(tether_frame_decoder_feed(dec, both, alen + blen, &used, &f, NULL), 1);
                assert_int_equal(used, alen);
                tether_frame_free(f);
                assert_int_equal(tether_frame_decoder_feed(dec, both + alen, blen, &used, &f, NULL), 1);
                assert_int_equal(used, blen);
                assert_int_equal(f->type, TETHER_FRAME_PUSH_ACK);
                tether_frame_free(f);
                tether_frame_decoder_free(dec);
        }

        free(both);
        free(a);
        free(b);
}

/* Feeds one header and expects the given error right after its 10th byte. */
static void expect_header_error(const uint8_t header[TETHER_FRAME_HEADER_SIZE], uint32_t max_body,
                                enum tether_diag_kind kind) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *f = NULL;
        struct tether_diag diag = {0};
        size_t used = 0;

        assert_int_equal(tether_frame_decoder_new(max_body, &dec), 0);
        /* Nine bytes are accepted: nothing can be judged before the header is whole. */
        assert_int_equal(tether_frame_decoder_feed(dec, header, 9, &used, &f, &diag), 0);
        assert_int_equal(used, 9);
        assert_int_equal(diag.kind, TETHER_DIAG_NONE);
        assert_int_equal(tether_frame_decoder_feed(dec, header + 9, 1, &used, &f, &diag), -EBADMSG);
        assert_null(f);
        assert_int_equal(diag.kind, kind);
        assert_true(strlen(diag.text) > 0);

        /* Poisoned: a valid frame afterwards fails the same way. */
        {
                uint8_t *buf = NULL;
                size_t len = 0;
                struct tether_diag again = {0};

                encode(TETHER_FRAME_KEEPALIVE, BODY, strlen(BODY), NULL, 0, &buf, &len);
                assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &f, &again), -EBADMSG);
                assert_null(f);
                assert_int_equal(again.kind, kind);
                assert_string_equal(again.text, diag.text);
                assert_false(tether_frame_decoder_partial(dec));
                free(buf);
        }
        tether_frame_decoder_free(dec);
}

static void test_bad_headers(void **state) {
        const uint8_t good[TETHER_FRAME_HEADER_SIZE] = {'T', 'H', 1, 3, 0, 0, 0, 4, 0, 0};
        uint8_t h[TETHER_FRAME_HEADER_SIZE];

        memcpy(h, good, sizeof(h));
        h[0] = 'X';
        expect_header_error(h, 100, TETHER_DIAG_BAD_MAGIC);

        memcpy(h, good, sizeof(h));
        h[1] = 'h';
        expect_header_error(h, 100, TETHER_DIAG_BAD_MAGIC);

        memcpy(h, good, sizeof(h));
        h[2] = 2;
        expect_header_error(h, 100, TETHER_DIAG_BAD_VERSION);

        memcpy(h, good, sizeof(h));
        h[2] = 0;
        expect_header_error(h, 100, TETHER_DIAG_BAD_VERSION);

        memcpy(h, good, sizeof(h));
        h[3] = 0;
        expect_header_error(h, 100, TETHER_DIAG_BAD_TYPE);

        memcpy(h, good, sizeof(h));
        h[3] = 9;
        expect_header_error(h, 100, TETHER_DIAG_BAD_TYPE);

        /* Body of 101 bytes with a limit of 100. */
        memcpy(h, good, sizeof(h));
        h[7] = 101;
        expect_header_error(h, 100, TETHER_DIAG_BODY_TOO_LARGE);

        /* A 4 GiB - 1 body claim must fail before any allocation. */
        memcpy(h, good, sizeof(h));
        h[4] = h[5] = h[6] = h[7] = 0xff;
        expect_header_error(h, TETHER_FRAME_DEFAULT_MAX_BODY, TETHER_DIAG_BODY_TOO_LARGE);

        /* Signature of 1025 bytes. */
        memcpy(h, good, sizeof(h));
        h[8] = 0x04;
        h[9] = 0x01;
        expect_header_error(h, 100, TETHER_DIAG_SIG_TOO_LARGE);

        memcpy(h, good, sizeof(h));
        h[8] = 0xff;
        h[9] = 0xff;
        expect_header_error(h, 100, TETHER_DIAG_SIG_TOO_LARGE);
}

static void test_limits_accepted(void **state) {
        /* Exactly at both limits is fine. */
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *f = NULL;
        uint8_t *body = calloc(1, 100), *sig = calloc(1, TETHER_FRAME_MAX_SIG), *buf = NULL;
        size_t len = 0, used = 0;

        assert_non_null(body);
        assert_non_null(sig);
        memset(body, 'a', 100);
        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, body, 100, sig, TETHER_FRAME_MAX_SIG, 100,
                                             &buf, &len),
                         0);
        assert_int_equal(tether_frame_decoder_new(100, &dec), 0);
        assert_int_equal(tether_frame_decoder_feed(dec, buf, len, &used, &f, NULL), 1);
        assert_int_equal(f->body_len, 100);
        assert_int_equal(f->sig_len, TETHER_FRAME_MAX_SIG);
        tether_frame_free(f);
        tether_frame_decoder_free(dec);
        free(buf);
        free(body);
        free(sig);
}

static void test_truncated_is_partial(void **state) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *f = NULL;
        uint8_t *buf = NULL;
        size_t len = 0, used = 0;

        encode(TETHER_FRAME_PUSH, BODY, strlen(BODY), SIG, sizeof(SIG), &buf, &len);
        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &dec), 0);
        assert_false(tether_frame_decoder_partial(dec));

        /* Header only, then most of the body, then all but the last sig byte. */
        assert_int_equal(tether_frame_decoder_feed(dec, buf, 3, &used, &f, NULL), 0);
        assert_true(tether_frame_decoder_partial(dec));
        assert_int_equal(tether_frame_decoder_feed(dec, buf + 3, len - 4, &used, &f, NULL), 0);
        assert_int_equal(used, len - 4);
        assert_null(f);
        assert_true(tether_frame_decoder_partial(dec));
        /* An empty feed changes nothing. */
        assert_int_equal(tether_frame_decoder_feed(dec, buf + len - 1, 0, &used, &f, NULL), 0);
        assert_int_equal(used, 0);
        assert_true(tether_frame_decoder_partial(dec));

        assert_int_equal(tether_frame_decoder_feed(dec, buf + len - 1, 1, &used, &f, NULL), 1);
        assert_false(tether_frame_decoder_partial(dec));
        assert_frame(f, TETHER_FRAME_PUSH, BODY, strlen(BODY), SIG, sizeof(SIG));
        tether_frame_free(f);
        tether_frame_decoder_free(dec);
        free(buf);
}

static void test_encoder_refuses(void **state) {
        uint8_t body[200] = {0}, sig[TETHER_FRAME_MAX_SIG + 1] = {0};
        uint8_t *buf = NULL;
        size_t len = 0;

        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, body, 101, NULL, 0, 100, &buf, &len),
                         -EMSGSIZE);
        assert_int_equal(tether_frame_encode(TETHER_FRAME_PUSH, body, 10, sig, TETHER_FRAME_MAX_SIG + 1, 100,
                                             &buf, &len),
                         -EMSGSIZE);
        assert_int_equal(tether_frame_encode(0, body, 10, NULL, 0, 100, &buf, &len), -EINVAL);
        assert_int_equal(tether_frame_encode(9, body, 10, NULL, 0, 100, &buf, &len), -EINVAL);
        assert_null(buf);
}

static void test_diag(void **state) {
        struct tether_diag diag = {0};

        assert_int_equal(tether_diag_set(NULL, TETHER_DIAG_BAD_GUID, "x %d", 1), -EBADMSG);
        assert_int_equal(tether_diag_set(&diag, TETHER_DIAG_BAD_GUID, "bad GUID in '%s'", "TaskGUID"),
                         -EBADMSG);
        assert_int_equal(diag.kind, TETHER_DIAG_BAD_GUID);
        assert_string_equal(diag.text, "bad GUID in 'TaskGUID'");
        assert_string_equal(tether_diag_kind_name(TETHER_DIAG_BAD_MAGIC), "bad-magic");
        assert_string_equal(tether_diag_kind_name(TETHER_DIAG_TOO_LONG), "too-long");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip_every_type),
                cmocka_unit_test(test_signed_types),
                cmocka_unit_test(test_empty_body),
                cmocka_unit_test(test_every_split_point),
                cmocka_unit_test(test_bad_headers),
                cmocka_unit_test(test_limits_accepted),
                cmocka_unit_test(test_truncated_is_partial),
                cmocka_unit_test(test_encoder_refuses),
                cmocka_unit_test(test_diag),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
