/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"
#include "mp/tickets.h"

#define KEY_HEX (2u * TETHER_TLS_TICKET_KEY_SIZE)
/* "<time> <hex>\n": a generous bound for one line, and for the file */
#define LINE_MAX_LEN (24u + KEY_HEX)
#define FILE_MAX (8u * (LINE_MAX_LEN + 2u))

struct ticket_line {
        uint64_t created;
        struct tether_tls_ticket_key key;
};

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static int parse_line(const char *line, size_t len, struct ticket_line *ret) {
        const char *sp = memchr(line, ' ', len);
        const char *hex;

        if (!sp || parse_u64_n(line, (size_t)(sp - line), 0, UINT64_MAX, &ret->created) < 0)
                return -EBADMSG;
        hex = sp + 1;
        if ((size_t)(line + len - hex) != KEY_HEX)
                return -EBADMSG;
        for (size_t i = 0; i < TETHER_TLS_TICKET_KEY_SIZE; i++) {
                int hi = unhex(hex[2 * i]), lo = unhex(hex[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return -EBADMSG;
                ret->key.bytes[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}

/* Reads up to MP_TICKET_KEEP keys; lines after those are dropped at the
 * next write. */
static int read_keys(const char *path, struct ticket_line lines[MP_TICKET_KEEP], size_t *ret_n) {
        _cleanup_(freep) uint8_t *data = NULL;
        size_t len = 0, n = 0, lineno = 0;
        const char *p, *end;
        int r;

        *ret_n = 0;
        r = read_file_at(AT_FDCWD, path, FILE_MAX, &data, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", path);
        p = (const char *)data;
        end = p + len;
        while (p < end && n < MP_TICKET_KEEP) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);

                lineno++;
                if (l > 0 && parse_line(p, l, &lines[n]) < 0)
                        return log_error_errno(-EBADMSG,
                                               "%s:%zu: not \"<created> <%u hex digits>\"; TLS session "
                                               "tickets stay off until it is fixed or removed",
                                               path, lineno, KEY_HEX);
                if (l > 0)
                        n++;
                p += l + 1;
        }
        *ret_n = n;
        return 0;
}

static int write_keys(const char *path, const struct ticket_line *lines, size_t n) {
        char buf[MP_TICKET_KEEP * (LINE_MAX_LEN + 2u)];
        size_t off = 0;
        int r;

        for (size_t i = 0; i < n; i++) {
                int w = snprintf(buf + off, sizeof(buf) - off, "%" PRIu64 " ", lines[i].created);

                if (w < 0 || (size_t)w >= sizeof(buf) - off - KEY_HEX - 1)
                        return -ENOBUFS;
                off += (size_t)w;
                hex_encode(lines[i].key.bytes, TETHER_TLS_TICKET_KEY_SIZE, buf + off);
                off += KEY_HEX;
                buf[off++] = '\n';
        }
        r = write_file_atomic(path, buf, off, 0600, FSUTIL_DURABLE);
        OPENSSL_cleanse(buf, sizeof(buf));
        return r;
}

int mp_tickets_refresh(const char *path, time_t now, uint32_t rotate_sec,
                       struct tether_tls_ticket_key keys[MP_TICKET_KEEP], size_t *ret_n) {
        struct ticket_line lines[MP_TICKET_KEEP + 1];
        size_t n = 0;
        int r;

        r = read_keys(path, lines + 1, &n);
        if (r < 0)
                goto done;
        if (n == 0 || lines[1].created + rotate_sec <= (uint64_t)now) {
                lines[0].created = (uint64_t)now;
                if (RAND_bytes(lines[0].key.bytes, TETHER_TLS_TICKET_KEY_SIZE) != 1) {
                        r = log_error_errno(-EIO, "Failed to make a TLS ticket key: no randomness");
                        goto done;
                }
                n = n + 1 > MP_TICKET_KEEP ? MP_TICKET_KEEP : n + 1;
                r = write_keys(path, lines, n);
                if (r < 0) {
                        log_error_errno(r, "Failed to write %s: %m", path);
                        goto done;
                }
                log_info("TLS ticket key rotated in %s (%zu kept)", path, n);
        } else {
                memmove(lines, lines + 1, n * sizeof(lines[0]));
        }
        for (size_t i = 0; i < n; i++)
                keys[i] = lines[i].key;
        *ret_n = n;
        r = 0;
done:
        OPENSSL_cleanse(lines, sizeof(lines));
        return r;
}

static void tickets_install(struct mp_server *srv) {
        struct tether_tls_ticket_key keys[MP_TICKET_KEEP];
        char path[4096];
        size_t n = 0;
        int r;

        snprintf(path, sizeof(path), "%s/ticket.keys", srv->cfg->state_dir);
        r = mp_tickets_refresh(path, time(NULL), MP_TICKET_ROTATE_SEC, keys, &n);
        if (r < 0)
                n = 0; /* logged: full handshakes until the file is fixed */
        r = tether_tls_server_set_ticket_keys(srv->tls, keys, n, MP_TICKET_ROTATE_SEC);
        if (r < 0)
                log_error_errno(r, "Failed to install the TLS ticket keys: %m");
        OPENSSL_cleanse(keys, sizeof(keys));
}

static int tickets_due(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mp_server *srv = userdata;

        tickets_install(srv);
        (void)sd_event_source_set_time(s, usec + MP_TICKET_CHECK_SEC * 1000000ULL);
        (void)sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

int mp_tickets_start(struct mp_server *srv) {
        int r;

        tickets_install(srv);
        r = sd_event_add_time_relative(srv->event, &srv->ticket_timer, CLOCK_MONOTONIC,
                                       MP_TICKET_CHECK_SEC * 1000000ULL, 1000000ULL, tickets_due, srv);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the TLS ticket key timer: %m");
        return 0;
}

void mp_tickets_stop(struct mp_server *srv) {
        srv->ticket_timer = sd_event_source_disable_unref(srv->ticket_timer);
}
