/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Big-endian integers in byte buffers: the frame header (PROTOCOL-v1
 * section 2), the spool's records. The only copy of these in the tree. */

#include <stdint.h>

static inline void put_be16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static inline uint16_t get_be16(const uint8_t *p) {
        return (uint16_t)((unsigned)p[0] << 8 | (unsigned)p[1]);
}

static inline uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
