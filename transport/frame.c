/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/cleanup.h"
#include "transport/frame.h"

#define FRAME_MAGIC_0 0x54u /* 'T' */
#define FRAME_MAGIC_1 0x48u /* 'H' */

void tether_frame_free(struct tether_frame *frame) {
        if (!frame)
                return;
        free(frame->body);
        free(frame->sig);
        free(frame);
}

const char *tether_frame_type_name(uint8_t type) {
        switch (type) {
        case TETHER_FRAME_SIGNIN:
                return "SIGNIN";
        case TETHER_FRAME_SIGNIN_CONFIRM:
                return "SIGNIN_CONFIRM";
        case TETHER_FRAME_PUSH:
                return "PUSH";
        case TETHER_FRAME_PUSH_ACK:
                return "PUSH_ACK";
        case TETHER_FRAME_RESPONSE:
                return "RESPONSE";
        case TETHER_FRAME_RESPONSE_ACK:
                return "RESPONSE_ACK";
        case TETHER_FRAME_KEEPALIVE:
                return "KEEPALIVE";
        case TETHER_FRAME_GOODBYE:
                return "GOODBYE";
        }
        return "unknown";
}

bool tether_frame_type_valid(uint8_t type) {
        return type >= TETHER_FRAME_SIGNIN && type <= TETHER_FRAME_GOODBYE;
}

bool tether_frame_type_signed(uint8_t type) {
        return type == TETHER_FRAME_SIGNIN || type == TETHER_FRAME_SIGNIN_CONFIRM ||
               type == TETHER_FRAME_PUSH || type == TETHER_FRAME_RESPONSE;
}

void tether_frame_header_lengths(const uint8_t *header, size_t *ret_body, size_t *ret_sig) {
        *ret_body = get_be32(header + 4);
        *ret_sig = get_be16(header + 8);
}

int tether_frame_encode(uint8_t type, const uint8_t *body, size_t body_len, const uint8_t *sig,
                        size_t sig_len, uint32_t max_body, uint8_t **ret_buf, size_t *ret_len) {
        uint8_t *buf;
        size_t total;

        if (!ret_buf || !ret_len || !tether_frame_type_valid(type))
                return -EINVAL;
        if ((body_len > 0 && !body) || (sig_len > 0 && !sig))
                return -EINVAL;
        if (body_len > max_body || body_len > UINT32_MAX || sig_len > TETHER_FRAME_MAX_SIG)
                return -EMSGSIZE;

        total = TETHER_FRAME_HEADER_SIZE + body_len + sig_len;
        buf = malloc(total);
        if (!buf)
                return -ENOMEM;

        buf[0] = FRAME_MAGIC_0;
        buf[1] = FRAME_MAGIC_1;
        buf[2] = TETHER_FRAME_VERSION;
        buf[3] = type;
        put_be32(buf + 4, (uint32_t)body_len);
        put_be16(buf + 8, (uint16_t)sig_len);
        if (body_len > 0)
                memcpy(buf + TETHER_FRAME_HEADER_SIZE, body, body_len);
        if (sig_len > 0)
                memcpy(buf + TETHER_FRAME_HEADER_SIZE + body_len, sig, sig_len);

        *ret_buf = buf;
        *ret_len = total;
        return 0;
}

struct tether_frame_decoder {
        uint32_t max_body;
        uint8_t header[TETHER_FRAME_HEADER_SIZE];
        size_t header_have;
        /* Set once the header has been validated; the frame being filled. */
        struct tether_frame *frame;
        size_t body_have;
        size_t sig_have;
        /* After a protocol error every call repeats it: the stream has lost
         * its framing and nothing after the error can be trusted. */
        bool poisoned;
        struct tether_diag poison;
};

int tether_frame_decoder_new(uint32_t max_body, struct tether_frame_decoder **ret) {
        struct tether_frame_decoder *dec;

        if (!ret)
                return -EINVAL;
        dec = calloc(1, sizeof(*dec));
        if (!dec)
                return -ENOMEM;
        dec->max_body = max_body;
        *ret = dec;
        return 0;
}

struct tether_frame_decoder *tether_frame_decoder_free(struct tether_frame_decoder *dec) {
        if (!dec)
                return NULL;
        tether_frame_free(dec->frame);
        free(dec);
        return NULL;
}

bool tether_frame_decoder_partial(const struct tether_frame_decoder *dec) {
        return dec && !dec->poisoned && (dec->header_have > 0 || dec->frame);
}

static int decoder_poison(struct tether_frame_decoder *dec, struct tether_diag *diag,
                          enum tether_diag_kind kind, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int decoder_poison(struct tether_frame_decoder *dec, struct tether_diag *diag,
                          enum tether_diag_kind kind, const char *fmt, ...) {
        va_list ap;

        dec->poisoned = true;
        dec->poison.kind = kind;
        va_start(ap, fmt);
        (void)vsnprintf(dec->poison.text, sizeof(dec->poison.text), fmt, ap);
        va_end(ap);
        tether_frame_free(dec->frame);
        dec->frame = NULL;
        if (diag)
                *diag = dec->poison;
        return -EBADMSG;
}

/* Validates the complete header and allocates the frame it announces. */
static int decoder_start_frame(struct tether_frame_decoder *dec, struct tether_diag *diag) {
        const uint8_t *h = dec->header;
        uint32_t body_len;
        uint16_t sig_len;
        _cleanup_(freep) struct tether_frame *frame = NULL;

        if (h[0] != FRAME_MAGIC_0 || h[1] != FRAME_MAGIC_1)
                return decoder_poison(dec, diag, TETHER_DIAG_BAD_MAGIC, "bad frame magic 0x%02x%02x", h[0],
                                      h[1]);
        if (h[2] != TETHER_FRAME_VERSION)
                return decoder_poison(dec, diag, TETHER_DIAG_BAD_VERSION, "unsupported frame version %u",
                                      h[2]);
        if (!tether_frame_type_valid(h[3]))
                return decoder_poison(dec, diag, TETHER_DIAG_BAD_TYPE, "unknown frame type %u", h[3]);
        body_len = get_be32(h + 4);
        sig_len = get_be16(h + 8);
        if (body_len > dec->max_body)
                return decoder_poison(dec, diag, TETHER_DIAG_BODY_TOO_LARGE,
                                      "frame body of %u bytes exceeds the limit of %u", body_len,
                                      dec->max_body);
        if (sig_len > TETHER_FRAME_MAX_SIG)
                return decoder_poison(dec, diag, TETHER_DIAG_SIG_TOO_LARGE,
                                      "frame signature of %u bytes exceeds the limit of %u",
                                      (unsigned)sig_len, TETHER_FRAME_MAX_SIG);

        frame = calloc(1, sizeof(*frame));
        if (!frame)
                return -ENOMEM;
        frame->type = h[3];
        frame->body_len = body_len;
        frame->sig_len = sig_len;
        /* One extra byte so the body is a C string for the XML layer. */
        frame->body = malloc((size_t)body_len + 1);
        if (!frame->body)
                return -ENOMEM;
        frame->body[body_len] = 0;
        if (sig_len > 0) {
                frame->sig = malloc(sig_len);
                if (!frame->sig) {
                        free(frame->body);
                        return -ENOMEM;
                }
        }
        dec->frame = TAKE_PTR(frame);
        dec->body_have = 0;
        dec->sig_have = 0;
        return 0;
}

int tether_frame_decoder_feed(struct tether_frame_decoder *dec, const uint8_t *data, size_t len,
                              size_t *ret_consumed, struct tether_frame **ret_frame,
                              struct tether_diag *diag) {
        size_t used = 0;
        int r;

        if (!dec || !ret_consumed || !ret_frame || (len > 0 && !data))
                return -EINVAL;

        *ret_consumed = 0;
        *ret_frame = NULL;

        if (dec->poisoned) {
                if (diag)
                        *diag = dec->poison;
                return -EBADMSG;
        }

        if (!dec->frame) {
                size_t n = TETHER_FRAME_HEADER_SIZE - dec->header_have;

                if (n > len)
                        n = len;
                memcpy(dec->header + dec->header_have, data, n);
                dec->header_have += n;
                used += n;
                if (dec->header_have < TETHER_FRAME_HEADER_SIZE) {
                        *ret_consumed = used;
                        return 0;
                }
                r = decoder_start_frame(dec, diag);
                if (r < 0) {
                        *ret_consumed = used;
                        return r;
                }
        }

        if (dec->body_have < dec->frame->body_len) {
                size_t n = dec->frame->body_len - dec->body_have;

                if (n > len - used)
                        n = len - used;
                memcpy(dec->frame->body + dec->body_have, data + used, n);
                dec->body_have += n;
                used += n;
        }
        if (dec->body_have == dec->frame->body_len && dec->sig_have < dec->frame->sig_len) {
                size_t n = dec->frame->sig_len - dec->sig_have;

                if (n > len - used)
                        n = len - used;
                memcpy(dec->frame->sig + dec->sig_have, data + used, n);
                dec->sig_have += n;
                used += n;
        }

        *ret_consumed = used;
        if (dec->body_have < dec->frame->body_len || dec->sig_have < dec->frame->sig_len)
                return 0;

        *ret_frame = TAKE_PTR(dec->frame);
        dec->header_have = 0;
        dec->body_have = 0;
        dec->sig_have = 0;
        return 1;
}
