/* SPDX-License-Identifier: Apache-2.0 */
#include "common/strutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int parse_u64_n(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || len == 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                unsigned d = (unsigned)(s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        if (!s)
                return -EINVAL;
        return parse_u64_n(s, strlen(s), min, max, ret);
}

int strscpy(char *dst, size_t size, const char *src) {
        size_t n;

        if (size == 0)
                return -ENAMETOOLONG;
        n = strnlen(src, size);
        if (n == size) {
                memcpy(dst, src, size - 1);
                dst[size - 1] = '\0';
                return -ENAMETOOLONG;
        }
        memcpy(dst, src, n + 1);
        return 0;
}

void hex_encode(const uint8_t *data, size_t len, char *out) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < len; i++) {
                out[2 * i] = digits[data[i] >> 4];
                out[2 * i + 1] = digits[data[i] & 0xf];
        }
        out[2 * len] = '\0';
}

bool utf8_is_valid(const uint8_t *s, size_t len) {
        size_t i = 0;

        while (i < len) {
                uint8_t c = s[i];
                size_t n;
                uint32_t cp;

                if (c < 0x80) {
                        i++;
                        continue;
                } else if ((c & 0xe0) == 0xc0) {
                        n = 1;
                        cp = c & 0x1f;
                } else if ((c & 0xf0) == 0xe0) {
                        n = 2;
                        cp = c & 0x0f;
                } else if ((c & 0xf8) == 0xf0) {
                        n = 3;
                        cp = c & 0x07;
                } else
                        return false;
                if (len - i <= n)
                        return false;
                for (size_t k = 1; k <= n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + k] & 0x3f);
                }
                if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000))
                        return false; /* overlong */
                if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n + 1;
        }
        return true;
}

bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

char *strdup_or_null(const char *s) {
        return s ? strdup(s) : NULL;
}

char *str_escape_log(const char *s, size_t len) {
        static const char hex[] = "0123456789abcdef";
        bool raw_high = s && utf8_is_valid((const uint8_t *)s, len);
        char *out, *o;

        if (!s)
                len = 0;
        /* at most 4 output bytes per input byte */
        if (len > (SIZE_MAX - 1) / 4)
                return NULL;
        out = malloc(len * 4 + 1);
        if (!out)
                return NULL;
        o = out;
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char)s[i];

                if (ch == '\\') {
                        *o++ = '\\';
                        *o++ = '\\';
                } else if (ch == '\n' || ch == '\r' || ch == '\t') {
                        *o++ = '\\';
                        *o++ = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
                } else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !raw_high)) {
                        *o++ = '\\';
                        *o++ = 'x';
                        *o++ = hex[ch >> 4];
                        *o++ = hex[ch & 0xf];
                } else {
                        *o++ = (char)ch;
                }
        }
        *o = 0;
        return out;
}

int hex_digit_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}
