/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Generates the checked-in protocol vectors of tests/vectors/ (run once by
 * hand; ctest never runs it, it only checks its output):
 *
 *   make-vectors <dir>
 *
 * writes device-pub.pem, response.xml, response.input, response.sig,
 * response.frame and response.frame.hex. Each run makes a new device key
 * (the private half is not kept) and so new signature bytes; the body is
 * always the same. Everything goes through the project's own codecs, and
 * the signature is verified again before anything is written.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "transport/frame.h"
#include "transport/message.h"
#include "transport/sign.h"

static int write_file(const char *dir, const char *name, const void *data, size_t len) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        if (!f)
                return -errno;
        if (fwrite(data, 1, len, f) != len) {
                fclose(f);
                return -EIO;
        }
        if (fclose(f) != 0)
                return -errno;
        return 0;
}

/* The layout of `xxd`: offset, 16 bytes in groups of two, then ASCII. */
static int write_hex(const char *dir, const char *name, const uint8_t *data, size_t len) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        if (!f)
                return -errno;
        for (size_t off = 0; off < len; off += 16) {
                size_t n = len - off < 16 ? len - off : 16;

                fprintf(f, "%08zx: ", off);
                for (size_t i = 0; i < 16; i++) {
                        if (i < n)
                                fprintf(f, "%02x", data[off + i]);
                        else
                                fprintf(f, "  ");
                        if (i % 2 == 1)
                                fputc(' ', f);
                }
                fputc(' ', f);
                for (size_t i = 0; i < n; i++) {
                        uint8_t c = data[off + i];

                        fputc(c >= 0x20 && c < 0x7f ? c : '.', f);
                }
                fputc('\n', f);
        }
        if (fclose(f) != 0)
                return -errno;
        return 0;
}

int main(int argc, char **argv) {
        struct tether_key *key = NULL;
        struct tether_msg *msg = NULL;
        char *body = NULL, *pem = NULL;
        uint8_t *sig = NULL, *input = NULL, *frame = NULL;
        size_t body_len = 0, sig_len = 0, input_len = 0, frame_len = 0;
        const char *dir;
        int r;

        if (argc != 2) {
                fprintf(stderr, "usage: %s <output directory>\n", argv[0]);
                return 2;
        }
        dir = argv[1];

        r = tether_key_generate(TETHER_KEY_EC_P256, &key);
        if (r < 0)
                goto fail;
        r = tether_msg_new(TETHER_FRAME_RESPONSE, &msg);
        if (r < 0)
                goto fail;
        r = tether_timestamp_parse("2020-01-21T15:43:43Z", &msg->response.timestamp);
        if (r < 0)
                goto fail;
        msg->response.push_id = 8;
        msg->response.task_id = 9;
        msg->response.return_code = TETHER_RC_SUCCESS;
        memcpy(msg->response.task_guid, "A43DD1B3-A006-4604-B012-5529380B3B6F", TETHER_GUID_LEN);
        memcpy(msg->response.client_id, "5E0C2B7A-91D4-4F0E-8C3B-6A2D1F9E7B40", TETHER_GUID_LEN);
        msg->response.detail = strdup("machine policy: 3 settings, 1 application evaluated");
        if (!msg->response.detail) {
                r = -ENOMEM;
                goto fail;
        }

        r = tether_msg_build(msg, &body, &body_len);
        if (r < 0)
                goto fail;
        r = tether_sign(key, TETHER_FRAME_RESPONSE, (const uint8_t *)body, body_len, &sig, &sig_len);
        if (r < 0)
                goto fail;
        r = tether_verify(key, TETHER_FRAME_RESPONSE, (const uint8_t *)body, body_len, sig, sig_len);
        if (r < 0)
                goto fail;
        r = tether_signature_input(TETHER_FRAME_RESPONSE, (const uint8_t *)body, body_len, &input,
                                   &input_len);
        if (r < 0)
                goto fail;
        r = tether_frame_encode(TETHER_FRAME_RESPONSE, (const uint8_t *)body, body_len, sig, sig_len,
                                TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &frame_len);
        if (r < 0)
                goto fail;
        r = tether_key_public_pem(key, &pem);
        if (r < 0)
                goto fail;

        r = write_file(dir, "device-pub.pem", pem, strlen(pem));
        if (r >= 0)
                r = write_file(dir, "response.xml", body, body_len);
        if (r >= 0)
                r = write_file(dir, "response.input", input, input_len);
        if (r >= 0)
                r = write_file(dir, "response.sig", sig, sig_len);
        if (r >= 0)
                r = write_file(dir, "response.frame", frame, frame_len);
        if (r >= 0)
                r = write_hex(dir, "response.frame.hex", frame, frame_len);
        if (r < 0)
                goto fail;
        printf("wrote vectors to %s (body %zu bytes, signature %zu bytes, frame %zu bytes)\n", dir, body_len,
               sig_len, frame_len);
        r = 0;
fail:
        if (r < 0)
                fprintf(stderr, "make-vectors: %s\n", strerror(-r));
        free(pem);
        free(frame);
        free(input);
        free(sig);
        free(body);
        tether_msg_free(msg);
        tether_key_free(key);
        return r < 0 ? 1 : 0;
}
