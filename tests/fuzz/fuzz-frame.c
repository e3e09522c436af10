/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The incremental frame decoder, fed the input in splits chosen by the
 * input's first byte. Whatever the split, it must yield frames within the
 * limits or one precise error, and stay poisoned after an error.
 */
#include <stdint.h>
#include <stdlib.h>

#include "transport/frame.h"

#define FUZZ_MAX_BODY 65536u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct tether_frame_decoder *dec = NULL;
        uint32_t rng;
        size_t off = 1;

        if (size < 1)
                return 0;
        rng = data[0] * 2654435761u + 1u;
        if (tether_frame_decoder_new(FUZZ_MAX_BODY, &dec) < 0)
                abort();
        while (off < size) {
                struct tether_diag diag = {};
                struct tether_frame *frame = NULL;
                size_t chunk, consumed = 0;
                int r;

                rng = rng * 1103515245u + 12345u;
                chunk = 1 + (rng >> 16) % 64;
                if (chunk > size - off)
                        chunk = size - off;
                r = tether_frame_decoder_feed(dec, data + off, chunk, &consumed, &frame, &diag);
                if (consumed > chunk)
                        abort();
                if (r == 1) {
                        if (!frame || frame->body_len > FUZZ_MAX_BODY ||
                            frame->sig_len > TETHER_FRAME_MAX_SIG || !tether_frame_type_valid(frame->type) ||
                            frame->body[frame->body_len] != 0)
                                abort();
                        tether_frame_free(frame);
                } else if (r < 0) {
                        /* Poisoned: the same error again, nothing consumed. */
                        struct tether_diag again = {};

                        if (diag.kind == TETHER_DIAG_NONE)
                                abort();
                        consumed = 0;
                        if (tether_frame_decoder_feed(dec, data + off, size - off, &consumed, &frame,
                                                      &again) != r ||
                            again.kind != diag.kind)
                                abort();
                        break;
                } else if (consumed != chunk) {
                        abort(); /* 0 means all given bytes were taken */
                }
                off += consumed;
        }
        tether_frame_decoder_free(dec);
        return 0;
}
