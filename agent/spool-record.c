/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The spool's record codec (agent/spool-record.h): the framing of every
 * spool file, and the task payload inside a task record. Pure functions,
 * no file access, so that the fuzz target links them alone.
 */
#include "agent/spool-record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/bytes.h"
#include "common/cleanup.h"
#include "common/strutil.h"

#define RECORD_MAGIC "TSP1"

static int record_check(const uint8_t *kind_len_payload, size_t n, uint8_t out[RECORD_CHECK]) {
        /* Fetched once: an implicit fetch on every record costs more than
         * hashing a small one. Kept for the life of the process. */
        static EVP_MD *sha256 = NULL;
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;

        if (!sha256)
                sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (!sha256 || !EVP_Digest(kind_len_payload, n, md, &mdlen, sha256, NULL))
                return -EIO;
        memcpy(out, md, RECORD_CHECK);
        return 0;
}

int spool_record_encode(uint8_t kind, const uint8_t *payload, size_t len, uint8_t **ret, size_t *ret_len) {
        size_t total = RECORD_HEADER + len + RECORD_CHECK;
        uint8_t *buf;
        int r;

        if (len > RECORD_MAX)
                return -EMSGSIZE;
        buf = malloc(total);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, RECORD_MAGIC, 4);
        buf[4] = kind;
        put_be32(buf + 5, (uint32_t)len);
        if (len > 0)
                memcpy(buf + RECORD_HEADER, payload, len);
        r = record_check(buf + 4, 5 + len, buf + RECORD_HEADER + len);
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        *ret_len = total;
        return 0;
}

int spool_record_decode(const uint8_t *data, size_t len, uint8_t *ret_kind, const uint8_t **ret_payload,
                        size_t *ret_len) {
        uint8_t check[RECORD_CHECK];
        uint32_t plen;

        if (len < RECORD_HEADER + RECORD_CHECK || memcmp(data, RECORD_MAGIC, 4) != 0)
                return -EBADMSG;
        plen = get_be32(data + 5);
        if ((size_t)plen != len - RECORD_HEADER - RECORD_CHECK)
                return -EBADMSG;
        if (record_check(data + 4, 5 + (size_t)plen, check) < 0)
                return -EIO;
        if (memcmp(check, data + RECORD_HEADER + plen, RECORD_CHECK) != 0)
                return -EBADMSG;
        *ret_kind = data[4];
        *ret_payload = data + RECORD_HEADER;
        *ret_len = plen;
        return 0;
}

/* Task payload: key=value lines; the parameter hex-encoded so that any bytes survive. */
int spool_task_encode(const struct spool_task *t, char **ret) {
        _cleanup_(freep) char *hex = NULL;
        const char *param = t->param ? t->param : "";
        size_t plen = strlen(param);
        char *out = NULL;

        hex = malloc(plen * 2 + 1);
        if (!hex)
                return -ENOMEM;
        hex_encode((const uint8_t *)param, plen, hex);
        if (asprintf(&out,
                     "guid=%s\npush_id=%llu\ntask_id=%llu\ntask_type=%u\ntimestamp=%lld\nexpires=%lld\n"
                     "received=%lld\nparam=%s\n",
                     t->task_guid, (unsigned long long)t->push_id, (unsigned long long)t->task_id,
                     t->task_type, (long long)t->timestamp, (long long)t->expires, (long long)t->received,
                     hex) < 0)
                return -ENOMEM;
        *ret = out;
        return 0;
}

static int parse_time_field(const char *v, size_t n, time_t *ret) {
        uint64_t u;
        int r = parse_u64_n(v, n, 0, INT64_MAX, &u);
        if (r < 0)
                return r;
        *ret = (time_t)u;
        return 0;
}

int spool_task_decode(const uint8_t *p, size_t len, struct spool_task *ret) {
        struct spool_task t = {0};
        unsigned seen = 0;
        const char *s = (const char *)p, *end = s + len;
        uint64_t u;
        int r = 0;

        while (s < end) {
                const char *nl = memchr(s, '\n', (size_t)(end - s)), *eq;
                size_t klen, vlen;
                if (!nl)
                        goto bad;
                eq = memchr(s, '=', (size_t)(nl - s));
                if (!eq)
                        goto bad;
                klen = (size_t)(eq - s);
                vlen = (size_t)(nl - eq - 1);
                const char *v = eq + 1;
#define KEY(k) (klen == strlen(k) && memcmp(s, k, klen) == 0)
                if (KEY("guid")) {
                        if (vlen != TETHER_GUID_LEN - 1)
                                goto bad;
                        memcpy(t.task_guid, v, vlen);
                        t.task_guid[vlen] = 0;
                        if (!tether_guid_valid(t.task_guid))
                                goto bad;
                        seen |= 1;
                } else if (KEY("push_id")) {
                        if (parse_u64_n(v, vlen, 0, UINT64_MAX, &t.push_id) < 0)
                                goto bad;
                        seen |= 2;
                } else if (KEY("task_id")) {
                        if (parse_u64_n(v, vlen, 0, UINT64_MAX, &t.task_id) < 0)
                                goto bad;
                        seen |= 4;
                } else if (KEY("task_type")) {
                        if (parse_u64_n(v, vlen, 0, UINT32_MAX, &u) < 0)
                                goto bad;
                        t.task_type = (uint32_t)u;
                        seen |= 8;
                } else if (KEY("timestamp")) {
                        if (parse_time_field(v, vlen, &t.timestamp) < 0)
                                goto bad;
                } else if (KEY("expires")) {
                        if (parse_time_field(v, vlen, &t.expires) < 0)
                                goto bad;
                        seen |= 16;
                } else if (KEY("received")) {
                        if (parse_time_field(v, vlen, &t.received) < 0)
                                goto bad;
                } else if (KEY("param")) {
                        if (vlen % 2 || t.param)
                                goto bad;
                        t.param = malloc(vlen / 2 + 1);
                        if (!t.param) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        for (size_t i = 0; i < vlen / 2; i++) {
                                int hi = hex_digit_value(v[2 * i]), lo = hex_digit_value(v[2 * i + 1]);
                                if (hi < 0 || lo < 0)
                                        goto bad;
                                t.param[i] = (char)(hi << 4 | lo);
                        }
                        t.param[vlen / 2] = 0;
                        seen |= 32;
                }
#undef KEY
                s = nl + 1;
        }
        if (seen != 63)
                goto bad;
        *ret = t;
        return 0;
bad:
        r = -EBADMSG;
fail:
        free(t.param);
        return r;
}
