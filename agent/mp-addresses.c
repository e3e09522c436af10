/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "agent/mp-addresses.h"
#include "common/cleanup.h"
#include "common/strutil.h"

void mp_addresses_done(struct mp_addresses *a) {
        for (size_t i = 0; i < a->n; i++)
                free(a->v[i].host);
        free(a->v);
        *a = (struct mp_addresses){0};
}

static bool host_char_ok(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_' || c == ':' || c == '%';
}

/* One entry, trimmed, of len bytes at s: "host", "host:port", "[v6]",
 * "[v6]:port", or a bare IPv6 literal (two colons or more, no port). */
static int parse_entry(const char *s, size_t len, struct mp_address *ret, const char **reason) {
        const char *host = s, *port = NULL;
        size_t host_len = len, colons = 0;
        uint64_t p = 0;

        for (size_t i = 0; i < len; i++)
                colons += s[i] == ':';
        if (len > 0 && s[0] == '[') {
                const char *end = memchr(s, ']', len);
                if (!end || end == s + 1) {
                        *reason = "an IPv6 address in brackets lacks its ']'";
                        return -EINVAL;
                }
                host = s + 1;
                host_len = (size_t)(end - host);
                if (end + 1 < s + len) {
                        if (end[1] != ':') {
                                *reason = "text after ']' is not ':port'";
                                return -EINVAL;
                        }
                        port = end + 2;
                }
        } else if (colons == 1) {
                const char *c = memchr(s, ':', len);
                host_len = (size_t)(c - s);
                port = c + 1;
        }
        if (host_len == 0 || host_len > 253) {
                *reason = "an empty or over-long host";
                return -EINVAL;
        }
        for (size_t i = 0; i < host_len; i++)
                if (!host_char_ok(host[i])) {
                        *reason = "a host holds a character that is not allowed";
                        return -EINVAL;
                }
        if (port && parse_u64_n(port, (size_t)(s + len - port), 1, 65535, &p) < 0) {
                *reason = "a port is not a number from 1 to 65535";
                return -EINVAL;
        }
        ret->host = strndup(host, host_len);
        if (!ret->host)
                return -ENOMEM;
        if (colons >= 2 && s[0] != '[') {
                /* Unbracketed, only a whole IPv6 literal is unambiguous. */
                struct in6_addr in6;
                if (inet_pton(AF_INET6, ret->host, &in6) != 1) {
                        free(ret->host);
                        ret->host = NULL;
                        *reason = "not an IPv6 address (write [address]:port for a port)";
                        return -EINVAL;
                }
        }
        ret->tcp_port = (uint16_t)p;
        return 0;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t';
}

static bool same_address(const struct mp_address *x, const struct mp_address *y) {
        return x->tcp_port == y->tcp_port && strcasecmp(x->host, y->host) == 0;
}

int mp_addresses_parse(const char *list, struct mp_addresses *ret, const char **reason) {
        _cleanup_(mp_addresses_done) struct mp_addresses a = {0};
        const char *p = list;

        a.v = calloc(MP_ADDRESSES_MAX, sizeof(*a.v));
        if (!a.v)
                return -ENOMEM;
        for (;;) {
                const char *end = p + strcspn(p, ",");
                const char *b = p, *e = end;
                int r;

                while (b < e && is_space(*b))
                        b++;
                while (e > b && is_space(e[-1]))
                        e--;
                if (a.n == MP_ADDRESSES_MAX) {
                        *reason = "more than 32 addresses";
                        return -EINVAL;
                }
                r = parse_entry(b, (size_t)(e - b), &a.v[a.n], reason);
                if (r < 0)
                        return r;
                a.n++;
                for (size_t i = 0; i + 1 < a.n; i++)
                        if (same_address(&a.v[i], &a.v[a.n - 1])) {
                                *reason = "an address is listed twice";
                                return -EINVAL;
                        }
                if (!*end)
                        break;
                p = end + 1;
        }
        *ret = a;
        a = (struct mp_addresses){0};
        return 0;
}

/* splitmix64: small, and good enough to shuffle a handful of entries. */
static uint64_t next_random(uint64_t *state) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
}

void mp_addresses_order(struct mp_addresses *a, const char *seed) {
        uint64_t state = 0xCBF29CE484222325ULL; /* FNV-1a offset basis */

        a->current = 0;
        a->failures = 0;
        if (!seed || !*seed)
                return;
        for (const char *s = seed; *s; s++)
                state = (state ^ (uint8_t)*s) * 0x100000001B3ULL;
        /* Fisher-Yates; the modulo bias over at most 32 entries is nil in
         * practice. */
        for (size_t i = a->n; i > 1; i--) {
                size_t j = (size_t)(next_random(&state) % i);
                struct mp_address t = a->v[i - 1];
                a->v[i - 1] = a->v[j];
                a->v[j] = t;
        }
}

const struct mp_address *mp_addresses_current(const struct mp_addresses *a) {
        return a->n ? &a->v[a->current] : NULL;
}

bool mp_addresses_failed(struct mp_addresses *a) {
        if (a->n == 0)
                return true;
        a->current = (a->current + 1) % a->n;
        a->failures++;
        if (a->failures < a->n)
                return false;
        a->failures = 0;
        return true;
}

void mp_addresses_succeeded(struct mp_addresses *a) {
        a->failures = 0;
}
