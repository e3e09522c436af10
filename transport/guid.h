/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <time.h>

/* Uppercase 8-4-4-4-12 hex, 36 chars + NUL. */
#define TETHER_GUID_LEN 37

/* A random (version 4) GUID from the kernel's CSPRNG (getrandom). */
int tether_guid_new(char ret[TETHER_GUID_LEN]);

/* True for exactly 36 chars of uppercase hex with dashes at 8, 13, 18, 23. */
bool tether_guid_valid(const char *s);

/* "YYYY-MM-DDTHH:MM:SSZ", UTC, 20 chars + NUL. */
#define TETHER_TIMESTAMP_LEN 21

int tether_timestamp_format(time_t t, char ret[TETHER_TIMESTAMP_LEN]);

/* Strictly that form, with a real calendar date. Returns 0 or -EINVAL. */
int tether_timestamp_parse(const char *s, time_t *ret);
