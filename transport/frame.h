/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The frame codec of PROTOCOL-v1 section 2. Pure: no sockets, no event loop.
 *
 *   0  2  magic "TH"      2 1 version (1)     3 1 type
 *   4  4  body length B   8 2 signature length S
 *   10 B  body            10+B S signature
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/diag.h"

enum tether_frame_type {
        TETHER_FRAME_SIGNIN = 1,
        TETHER_FRAME_SIGNIN_CONFIRM = 2,
        TETHER_FRAME_PUSH = 3,
        TETHER_FRAME_PUSH_ACK = 4,
        TETHER_FRAME_RESPONSE = 5,
        TETHER_FRAME_RESPONSE_ACK = 6,
        TETHER_FRAME_KEEPALIVE = 7,
        TETHER_FRAME_GOODBYE = 8,
};

#define TETHER_FRAME_HEADER_SIZE 10u
#define TETHER_FRAME_VERSION 1u
#define TETHER_FRAME_MAX_SIG 1024u
#define TETHER_FRAME_DEFAULT_MAX_BODY (1024u * 1024u)
/* A frame must arrive whole within this long of its first byte. */
#define TETHER_FRAME_DEADLINE_USEC (30ULL * 1000000ULL)

/* A decoded frame. Owned by whoever received it from the decoder; release
 * with tether_frame_free(). body is NUL-terminated one byte past body_len
 * for convenience; the terminator is not part of the body. */
struct tether_frame {
        uint8_t type;
        uint8_t *body;
        uint32_t body_len;
        uint8_t *sig; /* NULL when sig_len is 0 */
        uint16_t sig_len;
};

void tether_frame_free(struct tether_frame *frame); /* accepts NULL */

/* The lengths a header (TETHER_FRAME_HEADER_SIZE bytes of an encoded frame
 * of ours) announces: the whole frame is HEADER + body + sig bytes. */
void tether_frame_header_lengths(const uint8_t *header, size_t *ret_body, size_t *ret_sig);

/* "SIGNIN", "PUSH", ...; "unknown" for anything else. */
const char *tether_frame_type_name(uint8_t type);

/* True for the types 1..8 of the contract. */
bool tether_frame_type_valid(uint8_t type);

/* True when the contract requires this type to be signed (SIGNIN,
 * SIGNIN_CONFIRM, PUSH, RESPONSE). */
bool tether_frame_type_signed(uint8_t type);

/* Encodes one frame into a newly allocated buffer owned by the caller.
 * Returns 0, -EINVAL (bad type), -EMSGSIZE (over max_body or the signature
 * limit) or -ENOMEM. */
int tether_frame_encode(uint8_t type, const uint8_t *body, size_t body_len, const uint8_t *sig,
                        size_t sig_len, uint32_t max_body, uint8_t **ret_buf, size_t *ret_len);

/* The incremental decoder. It checks magic, version, type and both lengths
 * as soon as the 10 header bytes are in, before it allocates the body. */
struct tether_frame_decoder;

int tether_frame_decoder_new(uint32_t max_body, struct tether_frame_decoder **ret);
struct tether_frame_decoder *tether_frame_decoder_free(struct tether_frame_decoder *dec);

/*
 * Feeds bytes. Consumes at most up to the end of one frame and reports how
 * many bytes it took in *ret_consumed; call again with the rest.
 * Returns:
 *   1  a whole frame is in *ret_frame (owned by the caller);
 *   0  all given bytes consumed, more are needed;
 *  -EBADMSG  protocol error, diag says which; the decoder is then poisoned
 *            and every later call fails the same way.
 *  -ENOMEM
 */
int tether_frame_decoder_feed(struct tether_frame_decoder *dec, const uint8_t *data, size_t len,
                              size_t *ret_consumed, struct tether_frame **ret_frame,
                              struct tether_diag *diag);

/* True while part of a frame has been fed and the frame is not complete:
 * the owner then enforces TETHER_FRAME_DEADLINE_USEC. */
bool tether_frame_decoder_partial(const struct tether_frame_decoder *dec);
