/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "transport/guid.h"

static int random_bytes(uint8_t *buf, size_t len) {
        size_t have = 0;

        while (have < len) {
                ssize_t n = getrandom(buf + have, len - have, 0);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                have += (size_t)n;
        }
        return 0;
}

int tether_guid_new(char ret[TETHER_GUID_LEN]) {
        static const char hex[] = "0123456789ABCDEF";
        uint8_t b[16];
        size_t o = 0;
        int r;

        if (!ret)
                return -EINVAL;
        r = random_bytes(b, sizeof(b));
        if (r < 0)
                return r;

        /* RFC 4122 version 4, variant 10xx. */
        b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
        b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);

        for (size_t i = 0; i < sizeof(b); i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        ret[o++] = '-';
                ret[o++] = hex[b[i] >> 4];
                ret[o++] = hex[b[i] & 0x0f];
        }
        ret[o] = '\0';
        return 0;
}

bool tether_guid_valid(const char *s) {
        if (!s)
                return false;
        for (size_t i = 0; i < TETHER_GUID_LEN - 1; i++) {
                char c = s[i];

                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (c != '-')
                                return false;
                } else if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) {
                        /* Also stops at an early NUL. */
                        return false;
                }
        }
        return s[TETHER_GUID_LEN - 1] == '\0';
}

int tether_timestamp_format(time_t t, char ret[TETHER_TIMESTAMP_LEN]) {
        struct tm tm;

        if (!ret)
                return -EINVAL;
        if (!gmtime_r(&t, &tm))
                return -EOVERFLOW;
        if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
                return -ERANGE;
        /* Not strftime's %Y: it does not zero-pad years below 1000, and the
         * parser accepts those, so format must be its exact inverse. */
        if (snprintf(ret, TETHER_TIMESTAMP_LEN, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec) != TETHER_TIMESTAMP_LEN - 1)
                return -ERANGE;
        return 0;
}

/* Reads exactly n decimal digits. */
static int read_digits(const char *s, size_t n, int *ret) {
        int v = 0;

        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return 0;
}

static bool is_leap_year(int y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m) {
        static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

        if (m == 2 && is_leap_year(y))
                return 29;
        return days[m - 1];
}

int tether_timestamp_parse(const char *s, time_t *ret) {
        int year, month, day, hour, minute, second;
        struct tm tm = {0};
        time_t t;

        if (!s || !ret)
                return -EINVAL;
        /* The fixed separators also guarantee nothing reads past an early NUL:
         * each check fails at the first byte that does not match. */
        if (read_digits(s, 4, &year) < 0 || s[4] != '-' || read_digits(s + 5, 2, &month) < 0 ||
            s[7] != '-' || read_digits(s + 8, 2, &day) < 0 || s[10] != 'T' ||
            read_digits(s + 11, 2, &hour) < 0 || s[13] != ':' || read_digits(s + 14, 2, &minute) < 0 ||
            s[16] != ':' || read_digits(s + 17, 2, &second) < 0 || s[19] != 'Z' || s[20] != '\0')
                return -EINVAL;

        if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month))
                return -EINVAL;
        /* No leap seconds: a UTC clock never shows them in this format. */
        if (hour > 23 || minute > 59 || second > 59)
                return -EINVAL;

        tm.tm_year = year - 1900;
        tm.tm_mon = month - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = minute;
        tm.tm_sec = second;
        errno = 0;
        t = timegm(&tm);
        if (t == (time_t)-1 && errno != 0)
                return -EINVAL;
        *ret = t;
        return 0;
}
