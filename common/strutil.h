/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a whole decimal string into [min, max]. No sign, no spaces, no
 * trailing bytes. Returns 0, -EINVAL (not a number) or -ERANGE. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* Like parse_u64 for a length-delimited, not NUL-terminated, string. */
int parse_u64_n(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *ret);

/* Copies at most size-1 bytes and always terminates. Returns -ENAMETOOLONG
 * when src was cut, 0 otherwise. */
int strscpy(char *dst, size_t size, const char *src);

/* Lowercase hex of len bytes into out, which must hold 2*len+1 bytes. */
void hex_encode(const uint8_t *data, size_t len, char *out);

/* The value of one hex digit (either case), or -1. */
int hex_digit_value(char c);

/* True when the len bytes are well-formed UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
bool utf8_is_valid(const uint8_t *s, size_t len);

/* Returns true if s starts with prefix. */
bool startswith(const char *s, const char *prefix);

/* Duplicates a string, or returns NULL for NULL or on allocation failure. */
char *strdup_or_null(const char *s);

/* A copy of len bytes that is safe to put in one log line: control bytes
 * (below 0x20, and 0x7f) become \n, \r, \t or \xHH, a backslash becomes
 * "\\", and when the bytes are not valid UTF-8 every byte above 0x7f becomes
 * \xHH too. A peer's string can then never forge a log line of its own.
 * NULL s gives "". Returns a new string owned by the caller, or NULL when
 * out of memory. */
char *str_escape_log(const char *s, size_t len);
