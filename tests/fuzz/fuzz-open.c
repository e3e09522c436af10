/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verify-then-parse. Input byte 0 picks the mode:
 *   even: the rest is a byte stream of frames, each opened with the fixed
 *         device key of tests/vectors (seeds: the vector frame);
 *   odd:  byte 1 picks a type and the rest is a body, which is signed with
 *         a fixed in-process key, framed, decoded and opened, so that the
 *         parsers run behind a signature that verifies.
 * Invariants: a correctly signed frame never fails verification, and
 * nothing of a signed frame is parsed when its signature fails.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/frame.h"
#include "transport/message.h"
#include "transport/sign.h"

static struct tether_key *device_key, *fuzz_key;

static void setup(void) {
        if (device_key)
                return;
        if (tether_key_load_public(TETHER_SOURCE_DIR "/tests/vectors/device-pub.pem", &device_key) < 0 ||
            tether_key_generate(TETHER_KEY_EC_P256, &fuzz_key) < 0) {
                fprintf(stderr, "fuzz-open: cannot set up keys\n");
                abort();
        }
}

static void open_stream(const uint8_t *data, size_t size) {
        struct tether_frame_decoder *dec = NULL;
        size_t off = 0;

        if (tether_frame_decoder_new(65536, &dec) < 0)
                abort();
        while (off < size) {
                struct tether_frame *frame = NULL;
                struct tether_msg *m = NULL;
                struct tether_diag diag = {};
                size_t consumed = 0;
                int r;

                r = tether_frame_decoder_feed(dec, data + off, size - off, &consumed, &frame, &diag);
                if (r <= 0)
                        break;
                off += consumed;
                r = tether_msg_open(frame, device_key, &m, &diag);
                if (r == 0 && tether_frame_type_signed(frame->type) &&
                    tether_verify(device_key, frame->type, frame->body, frame->body_len, frame->sig,
                                  frame->sig_len) != 0)
                        abort(); /* opened without a valid signature */
                tether_msg_free(m);
                tether_frame_free(frame);
        }
        tether_frame_decoder_free(dec);
}

static void open_signed(uint8_t type, const uint8_t *body, size_t len) {
        struct tether_frame_decoder *dec = NULL;
        struct tether_frame *frame = NULL;
        struct tether_msg *m = NULL;
        struct tether_diag diag = {};
        uint8_t *sig = NULL, *buf = NULL;
        size_t sig_len = 0, buf_len = 0, consumed = 0;
        int r;

        if (tether_sign(fuzz_key, type, body, len, &sig, &sig_len) < 0)
                abort();
        if (tether_frame_encode(type, body, len, sig, sig_len, 65536, &buf, &buf_len) < 0)
                abort();
        if (tether_frame_decoder_new(65536, &dec) < 0 ||
            tether_frame_decoder_feed(dec, buf, buf_len, &consumed, &frame, &diag) != 1)
                abort();
        r = tether_msg_open(frame, fuzz_key, &m, &diag);
        if (r < 0 && (diag.kind == TETHER_DIAG_BAD_SIGNATURE || diag.kind == TETHER_DIAG_MISSING_SIGNATURE))
                abort();
        tether_msg_free(m);
        tether_frame_free(frame);
        tether_frame_decoder_free(dec);
        free(buf);
        free(sig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        setup();
        if (size < 2 || size > 60000)
                return 0;
        if (data[0] % 2 == 0)
                open_stream(data + 1, size - 1);
        else
                open_signed((uint8_t)(data[1] % 8 + 1), data + 2, size - 2);
        return 0;
}
